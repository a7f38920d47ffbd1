"""Optional dependencies fail with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from safecls.errors import SafeclsError


def require(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SafeclsError(f"{module} is needed for this feature: pip install 'safecls[{extra}]'") from e
