"""Load a base causal LM and its tokenizer: the embedded SmolLM2 ('base'), a local folder, or a hub id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from safecls.errors import ModelError, SafeclsError
from safecls.model.resolve import BASE as EMBEDDED
from safecls.model.resolve import is_embedded


def load_base(name_or_path: str | Path = EMBEDDED, dtype: torch.dtype | str | None = None) -> tuple[Any, Any]:
    """Returns (model, tokenizer), model in eval mode. `"base"` is the embedded SmolLM2-135M-Instruct.

    dtype defaults to float32 (on 2 CPU cores fp32 is faster than bf16)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = str(name_or_path)
    if is_embedded(ref):
        from safecls.model.default import default_model_dir

        name_or_path, ref = default_model_dir(), EMBEDDED
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype or torch.float32)
    except (OSError, ValueError) as e:
        if Path(str(name_or_path)).is_dir() and (Path(str(name_or_path)) / "safecls_config.json").is_file():
            raise SafeclsError(f"{name_or_path} is a safecls checkpoint: load it with SafeClsModel.from_pretrained") from e
        raise ModelError(f"could not load a causal LM from {name_or_path!r}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    model.safecls_base_ref = ref  # what a LoRA checkpoint records to find its base again ("base" stays portable)
    return model, tok


def load_tokenizer(name_or_path: str | Path = EMBEDDED) -> Any:
    """The tokenizer of a base model alone ('base': the embedded one), pad = eos where it has no pad."""
    from transformers import AutoTokenizer

    ref = str(name_or_path)
    if is_embedded(ref):
        from safecls.model.default import default_model_dir

        ref = str(default_model_dir())
    try:
        tok = AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load a tokenizer from {name_or_path!r}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def check_causal_lm(model: Any) -> None:
    from transformers import PreTrainedModel

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(base, PreTrainedModel) or base.get_output_embeddings() is None:
        raise ModelError(
            f"{type(base).__name__} is not a causal language model with an LM head. "
            "Fix: load it with transformers.AutoModelForCausalLM (e.g. safecls.load_base(...))"
        )
    name = type(base).__name__
    if not (name.endswith("ForCausalLM") or name.endswith("LMHeadModel")):
        raise ModelError(
            f"{name} is not a causal LM (expected *ForCausalLM / *LMHeadModel). "
            "Fix: load it with transformers.AutoModelForCausalLM"
        )
