"""Errors a user can cause. The CLI turns each into a one-line message and an exit code, never a traceback."""


class StudyError(Exception):
    """Base class: a problem with the user's input or environment, reported in one line."""

    exit_code = 1


class ConfigError(StudyError):
    """A config or grid file is wrong: unknown key, wrong type, unknown name, bad value.

    The message names the file (when known), the key and, for names, the valid choices.
    """

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        self.message, self.key, self.source = message, key, source
        where = ", ".join(p for p in (source, f"key '{key}'" if key else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


def unknown_name(kind: str, value, choices, *, key: str | None = None, source: str | None = None) -> ConfigError:
    """The error for a name (norm, init, schedule, scale, ...) that is not one of the valid choices."""
    listed = ", ".join(sorted(str(c) for c in choices))
    return ConfigError(f"unknown {kind} {value!r}; valid choices: {listed}", key=key, source=source)


class CheckpointError(StudyError):
    """A checkpoint on disk cannot be read (truncated, corrupt, or from another run)."""


class DataError(StudyError):
    """A data source or tokenizer cannot be loaded (missing file, no network for a hub dataset, ...)."""


class SubmitError(StudyError):
    """A submission failed (sbatch refused, no scheduler here): nothing or only part was submitted."""


class StorageError(StudyError):
    """The filesystem refused a write (full, read-only, quota, permissions): which path, and what to do."""


class ExportError(StudyError):
    """`study export` cannot do what was asked: not a run directory, no such checkpoint, an occupied output
    folder, or a format the model cannot take."""

    exit_code = 2
