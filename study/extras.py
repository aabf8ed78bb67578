"""Optional parts of the package: lm-eval, figures and notebooks are extras a training-only install can skip.

`require(module, extra, what)` imports `module` or fails with one line that names the pip extra to install, so a
missing extra is a user-facing error at the command's start, not an ImportError from deep inside.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from study.errors import StudyError

# extra -> the modules it provides (pyproject.toml [project.optional-dependencies] installs them).
EXTRAS = {"eval": ("lm_eval",), "figures": ("matplotlib", "seaborn"), "notebooks": ("nbclient", "nbformat")}


class MissingExtra(StudyError):
    """An optional dependency is not installed."""


def require(module: str, extra: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the module exists but something it imports is broken: a real bug, keep the traceback
        raise MissingExtra(f"{what} needs {module}, which is not installed: pip install 'prores-study[{extra}]' "
                           f"(in a checkout: pip install -e '.[{extra}]')") from None


def require_extra(extra: str, what: str) -> None:
    for module in EXTRAS[extra]:
        require(module, extra, what)
