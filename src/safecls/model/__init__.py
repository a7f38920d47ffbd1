"""The safecls model: a causal LM with a safety [CLS] token and head, and its attention routing."""

from safecls.model.loading import load_base
from safecls.model.safecls_model import CLS_TOKEN, LoraOptions, SafeClsModel

__all__ = ["CLS_TOKEN", "LoraOptions", "SafeClsModel", "load_base"]
