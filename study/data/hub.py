"""Whether the Hugging Face Hub can be reached from here, asked once with a short timeout: a name that must come
from the hub fails at once offline instead of after the libraries' own retries (about 49 s for a tokenizer).
Used by the tokenizer loader (study.data.hf_tokenizer) and lm-eval's task data (study.evaluate.tasks).
"""

from __future__ import annotations

import socket
import threading

HUB_PROBE_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection within `timeout` seconds.

    False at once when huggingface_hub / datasets are in offline mode. DNS lookups cannot be timed out
    directly, so the probe runs in a daemon thread that is abandoned after `timeout`.
    """
    try:
        from huggingface_hub import constants as hub_constants

        if hub_constants.HF_HUB_OFFLINE:
            return False
        endpoint = hub_constants.ENDPOINT
    except Exception:
        endpoint = "https://huggingface.co"
    try:
        import datasets.config as ds_config

        if getattr(ds_config, "HF_HUB_OFFLINE", False) or getattr(ds_config, "HF_DATASETS_OFFLINE", False):
            return False
    except Exception:
        pass
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    result = {"ok": False}

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return result["ok"]
