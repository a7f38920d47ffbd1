"""safecls: explicit safety signals for any Hugging Face causal LM.

    import safecls
    model = safecls.SafeClsModel.from_base(*safecls.load_base("base"))
    model.generate(["..."], policy="medium")

Everything else is reached by module path (safecls.attacks, safecls.eval, safecls.serve, ...).
"""

from safecls.errors import (
    CheckpointError,
    ConfigError,
    ContextLengthError,
    DataError,
    SafeclsError,
    TemplateError,
    UnknownNameError,
)
from safecls.inference import DecodeConfig, Engine, GenerationResult
from safecls.model import LoraOptions, SafeClsModel, load_base
from safecls.version import __version__

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ContextLengthError",
    "DataError",
    "DecodeConfig",
    "Engine",
    "GenerationResult",
    "LoraOptions",
    "SafeClsModel",
    "SafeclsError",
    "TemplateError",
    "UnknownNameError",
    "__version__",
    "load_base",
]
