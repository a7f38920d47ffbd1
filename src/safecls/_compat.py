"""Every dependency-version quirk lives here. Each shim names the versions that need it and goes
when the floor moves. Nothing else reads transformers.__version__."""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

import torch


@cache
def cache_kwarg(model_cls: type) -> str:
    """'past_key_values' on transformers 5.17; newer 5.x also accept 'cache'. Probed once per class."""
    params = inspect.signature(model_cls.forward).parameters
    return "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"


def new_cache(model: Any):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older 5.x signature
        return DynamicCache()


def drop_last(cache: Any, n: int) -> None:
    """Drop the last n cached positions. crop(0) is not a no-op on sliding-window layers, and
    crop(positive) means 'keep n' (deprecated in 5.17, gone in 5.18): pass a negative count."""
    if n > 0:
        cache.crop(-n)


def cache_length(cache: Any) -> int:
    return int(cache.get_seq_length()) if cache is not None else 0


def min_value(dtype: torch.dtype) -> float:
    """The additive 'blocked' value: finfo.min, never -inf (NaN rows under left padding)."""
    return torch.finfo(dtype).min


def remove_quantization(model: Any) -> None:
    """GGUF-loaded models carry a quantizer that blocks saving and training."""
    q = getattr(model, "hf_quantizer", None)
    if q is not None:
        q.remove_quantization_config(model)
