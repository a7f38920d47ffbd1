"""User-fixable errors. Every message says where, what, the value received, and the fix.

A broken internal invariant is a bug, not a SafeclsError: raise RuntimeError with the state that broke it.
"""

from __future__ import annotations

from pathlib import Path


class SafeclsError(Exception):
    """The user can fix it. The CLI prints it on one line, without a traceback, and exits with 2."""


class ConfigError(SafeclsError, ValueError):
    """A config file, a `--set` override or a keyword argument is wrong."""


class CheckpointError(SafeclsError, OSError):
    """A folder is not a (readable) safecls checkpoint."""


class UnknownNameError(SafeclsError, LookupError):
    """A registry lookup failed. Not a KeyError: its str() would add quotes."""


class TemplateError(SafeclsError, ValueError):
    """A chat template is missing, or lacks something the caller needs (e.g. `{optim_str}`)."""


class ContextLengthError(SafeclsError, ValueError):
    """A sequence does not fit the model's context window."""


class ModelError(SafeclsError, TypeError):
    """The model given is not something safecls can wrap (e.g. not a causal LM)."""


class JudgeError(SafeclsError, RuntimeError):
    """A judge could not decide (endpoint down, unparsable output). Never counted as a refusal."""


class DataError(SafeclsError, ValueError):
    """A data file is missing or malformed; names the file and line."""

    def __init__(self, path: str | Path, problem: str, *, line: int | None = None, fix: str = ""):
        where = f"{path}:{line}" if line is not None else str(path)
        self.path, self.line, self.problem = str(path), line, problem
        super().__init__(f"{where}: {problem}" + (f". Fix: {fix}" if fix else ""))
