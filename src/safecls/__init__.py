"""safecls: explicit safety signals for any Hugging Face causal LM.

    import safecls
    model = safecls.SafeClsModel.from_base(*safecls.load_base("default"))
    model.generate(["..."], policy="medium")

Everything else is reached by module path (safecls.attacks, safecls.eval, safecls.serve, ...).
"""

__version__ = "0.1.0"  # before the imports: submodules read it

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
    "load_base",
]
