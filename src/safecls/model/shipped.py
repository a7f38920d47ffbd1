"""The defended default model that ships inside the package: SmolLM2-135M-Instruct + the recipe's LoRA adapters,
[CLS] row, head and calibration (docs/MODEL_CARD.md), about 10 MB in fp16. `SafeClsModel.from_pretrained("default")`
loads it over the embedded base model.

`package()` turns a trained LoRA checkpoint into that form: adapter tensors in fp16, no tokenizer files (the base's
tokenizer plus the [CLS] token, rebuilt on load, gives the same ids: checked), config, head and calibration kept.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

from safecls.errors import CheckpointError

SHIPPED_NAME = "default"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
KEEP = ("safecls_config.json", "head.safetensors", "calibration.json", "adapter_config.json")


def shipped_dir() -> Path:
    return Path(str(resources.files("safecls") / "resources" / "model"))


def is_shipped(ref: object) -> bool:
    return isinstance(ref, str) and ref == SHIPPED_NAME


def require_shipped() -> Path:
    d = shipped_dir()
    if not (d / "safecls_config.json").is_file():
        raise CheckpointError(f"the shipped default model is missing from {d}. Fix: reinstall safecls, or pass a "
                              "checkpoint folder; 'untrained' is the embedded base with an untrained head")
    return d


def package(checkpoint: str | Path, dest: str | Path) -> Path:
    """Write the shippable form of a LoRA checkpoint to `dest` (replaced atomically)."""
    import torch
    from safetensors.torch import load_file, save_file

    from safecls.model.loading import is_embedded

    src, dest = Path(checkpoint), Path(dest)
    cfg = json.loads((src / "safecls_config.json").read_text(encoding="utf-8"))
    if cfg.get("format") != "lora" or not is_embedded(cfg.get("base", {}).get("name_or_path", "")):
        raise CheckpointError(f"{src}: only a LoRA checkpoint over the embedded base ('base') ships in the package")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in KEEP:
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    tensors = load_file(str(src / ADAPTER_WEIGHTS))
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()},
              str(tmp / ADAPTER_WEIGHTS))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest
