"""Checkpoints like PEFT: a versioned `safecls_config.json` beside the weights.

    DIR/ safecls_config.json   safecls_version, base {name_or_path}, cls_token, cls_token_id, head {in_features,
                               out_features, layers: the states at [CLS] it reads, -1 the final one}, stage, format,
                               with_cls (false: trained without [CLS], the plain-SFT baseline; decodes as a plain model)
         head.safetensors      the classification head
         model.safetensors...  full fine-tune: the whole HF model        (format "full")
         adapter_*             LoRA: peft adapters incl. the [CLS] row    (format "lora"; base loaded from base.name_or_path)
         tokenizer files + chat template

Decode settings (DecodeConfig) are never stored here, except the two that `safecls calibrate` chooses for this very
checkpoint (threshold, tau in calibration.json), which every DecodeConfig that leaves them unset takes. Files safecls wrote are read tolerantly: unknown keys
get one warning. Writes go to DIR.tmp, then a rename.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from safecls.errors import CheckpointError, ModelError
from safecls.model.routing import DEFAULT_STAGE
from safecls.version import __version__

logger = logging.getLogger(__name__)

CONFIG_NAME = "safecls_config.json"
HEAD_NAME = "head.safetensors"
CALIBRATED_DECODE = ("threshold", "tau", "request_threshold")  # the DecodeConfig fields calibration.json sets
CALIBRATION_NAME = "calibration.json"  # `safecls calibrate`: the decode threshold and tau chosen for this checkpoint
KNOWN_KEYS = {"safecls_version", "base", "cls_token", "cls_token_id", "head", "stage", "format", "with_cls"}


def save(model: Any, directory: str | Path) -> None:
    from safecls.model.safecls_model import CLS_TOKEN

    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fmt = "lora" if model.is_lora else "full"
    if fmt == "lora":
        # the resized base is rebuilt deterministically on load (mean-initialised row); the trained [CLS] row
        # is in the adapter (trainable_token_indices), so the full embedding matrix need not be saved
        model.base.save_pretrained(tmp, save_embedding_layers=False)
    else:
        model.base.save_pretrained(tmp)
    model.tokenizer.save_pretrained(tmp)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.head.state_dict().items()}, str(tmp / HEAD_NAME))
    cfg = {
        "safecls_version": __version__,
        "base": {"name_or_path": model.base_ref if fmt == "lora" else None},
        "cls_token": CLS_TOKEN,
        "cls_token_id": model.cls_token_id,
        "head": {"in_features": model.head.in_features, "out_features": model.head.out_features,
                 "layers": list(model.head_layers)},
        "stage": model.stage,
        "format": fmt,
        "with_cls": model.with_cls,
    }
    (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    if model.calibration is not None:
        (tmp / CALIBRATION_NAME).write_text(json.dumps(model.calibration, indent=2) + "\n", encoding="utf-8")
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)


def read_config(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{directory} is not a safecls checkpoint (no {CONFIG_NAME}). For a plain HF model: "
            f"SafeClsModel.from_base(*safecls.load_base({str(directory)!r}))"
        )
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}). Fix: re-save the checkpoint") from None
    unknown = set(cfg) - KNOWN_KEYS
    if unknown:
        logger.warning("%s: ignoring keys this safecls version does not know: %s", path, ", ".join(sorted(unknown)))
    for key in ("cls_token_id", "head", "format"):
        if key not in cfg:
            raise CheckpointError(f"{path}: missing {key!r}. Fix: re-save the checkpoint with SafeClsModel.save_pretrained")
    return cfg


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


def load(directory: str | Path, dtype: torch.dtype | None = None, device: str | None = None, *,
         trainable: bool = False) -> Any:
    """`trainable`: LoRA adapters (and the [CLS] row) load ready to train further (a later training stage)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safecls.model.loading import EMBEDDED, load_base, load_tokenizer
    from safecls.model.safecls_model import FINAL, SafeClsModel, add_cls_token
    from safecls.model.shipped import is_shipped, require_shipped

    directory = require_shipped() if is_shipped(directory) else Path(directory)
    cfg = read_config(directory)
    dtype = dtype or torch.float32
    if (directory / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(directory)
    else:  # a shipped checkpoint keeps no tokenizer: the base's, plus the [CLS] token at the recorded id
        tok = load_tokenizer(cfg.get("base", {}).get("name_or_path") or EMBEDDED)
        add_cls_token_to_tokenizer(tok, int(cfg["cls_token_id"]), directory)
    if cfg["format"] == "lora":
        from peft import PeftModel

        ref = cfg.get("base", {}).get("name_or_path")
        if not ref:
            raise CheckpointError(f"{directory}/{CONFIG_NAME}: a LoRA checkpoint needs base.name_or_path")
        base, _ = load_base(ref, dtype=dtype)
        add_cls_token(base, tok)
        model = PeftModel.from_pretrained(base, directory, is_trainable=trainable)
    elif cfg["format"] == "full":
        ref = None
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    else:
        raise CheckpointError(f"{directory}/{CONFIG_NAME}: unknown format {cfg['format']!r} (expected 'full' or 'lora')")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    head = nn.Linear(cfg["head"]["in_features"], cfg["head"]["out_features"])
    head.load_state_dict(load_file(str(directory / HEAD_NAME)))
    head.to(dtype=dtype)
    try:
        m = SafeClsModel(model, tok, head, int(cfg["cls_token_id"]), stage=cfg.get("stage", DEFAULT_STAGE),
                         base_ref=ref, with_cls=bool(cfg.get("with_cls", True)),
                         head_layers=tuple(cfg["head"].get("layers", [FINAL])))
    except ModelError as e:
        raise CheckpointError(f"{directory}/{CONFIG_NAME}: {e}") from None
    if (directory / CALIBRATION_NAME).is_file():
        m.calibration = read_calibration(directory)
    if device:
        m.to(device)
    m.eval()
    return m


def read_calibration(directory: str | Path) -> dict:
    path = Path(directory) / CALIBRATION_NAME
    try:
        cal = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}). Fix: run safecls calibrate again") from None
    decode = cal.get("decode", {})
    unknown = set(decode) - set(CALIBRATED_DECODE)
    if unknown:
        logger.warning("%s: ignoring decode settings this safecls version does not calibrate: %s", path,
                       ", ".join(sorted(unknown)))
    cal["decode"] = {k: v for k, v in decode.items() if k in CALIBRATED_DECODE}
    return cal


def add_cls_token_to_tokenizer(tok: Any, cls_id: int, directory: Path) -> None:
    from safecls.model.safecls_model import CLS_TOKEN

    if CLS_TOKEN not in tok.get_vocab():
        tok.add_tokens([CLS_TOKEN], special_tokens=True)
    if tok.convert_tokens_to_ids(CLS_TOKEN) != cls_id:
        raise CheckpointError(f"{directory}: the base tokenizer gives {CLS_TOKEN} the id "
                              f"{tok.convert_tokens_to_ids(CLS_TOKEN)}, the checkpoint was trained with {cls_id}. Fix: "
                              "save the checkpoint with its tokenizer (SafeClsModel.save_pretrained)")
