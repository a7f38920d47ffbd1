"""Resumable checkpoints: `output_dir/checkpoint-<step>/`, written whole or not at all.

    checkpoint-<step>/  safecls_config.json, head.safetensors, adapters or model  (SafeClsModel.save_pretrained)
                        trainable.safetensors   every trainable tensor, by parameter name (what resume loads)
                        trainer_state.pt        optimizer, scheduler, RNG states (python, numpy, torch, cuda), data order
                        trainer_state.json      step, data sha256, the run's config (read before any model loads)

Everything is written into `.checkpoint-<step>.partial/` and renamed at the end, so a kill mid-save leaves the
previous checkpoint as the newest complete one. Resume rebuilds the model exactly as a fresh run does (same base,
same seed) and loads `trainable.safetensors` over it: frozen weights never change, so this restores the model bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from safecls.errors import CheckpointError, ConfigError
from safecls.train.config import TRAJECTORY_FIELDS, TrainConfig

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_JSON, STATE_PT, TRAINABLE = "trainer_state.json", "trainer_state.pt", "trainable.safetensors"


@dataclass(slots=True)
class ResumePoint:
    directory: Path
    step: int


def checkpoints(output_dir: Path) -> list[ResumePoint]:
    """Complete checkpoints, oldest first."""
    found = []
    if output_dir.is_dir():
        for d in output_dir.iterdir():
            m = _NAME.match(d.name)
            if m and (d / STATE_JSON).is_file():
                found.append(ResumePoint(d, int(m.group(1))))
    return sorted(found, key=lambda p: p.step)


def find_resume_point(cfg: TrainConfig, data_sha256: str) -> ResumePoint | None:
    """The checkpoint to continue from, checked against the config and data (before any model loads).

    Raises:
        ConfigError: checkpoints exist but `resume` is off, or the checkpoint was made with other settings or data.
    """
    out = Path(cfg.output_dir)
    found = checkpoints(out)
    if not found:
        if cfg.resume:
            logger.info("resume: no checkpoint in %s yet; starting from step 0", out)
        return None
    latest = found[-1]
    if not cfg.resume:
        raise ConfigError(f"output_dir: {out} already holds checkpoints (newest: {latest.directory.name}). "
                          "Fix: pass --resume (resume: true) to continue, or choose a new output_dir")
    saved = json.loads((latest.directory / STATE_JSON).read_text(encoding="utf-8"))
    old, new = saved["config"], cfg.model_dump(mode="json")
    changed = [k for k in TRAJECTORY_FIELDS if old.get(k) != new.get(k)]
    if changed:
        diffs = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ConfigError(f"resume from {latest.directory}: the config changed ({diffs}). A resumed run must match "
                          "the run it continues. Fix: restore those values, or start a new output_dir")
    if saved["data_sha256"] != data_sha256:
        raise ConfigError(f"resume from {latest.directory}: train_file {cfg.train_file} changed since the checkpoint "
                          "(sha256 differs). Fix: restore the file, or start a new output_dir")
    return latest


def trainable_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: Path, step: int, model: Any, trainer_state: dict[str, Any], cfg: TrainConfig,
                    data_sha256: str, keep: int | None) -> Path:
    """Write checkpoint-<step> atomically (main process only) and drop the oldest beyond `keep`."""
    final = output_dir / f"checkpoint-{step}"
    stage = output_dir / f".checkpoint-{step}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    model.save_pretrained(stage)
    save_file(trainable_tensors(model), str(stage / TRAINABLE))
    torch.save(trainer_state, stage / STATE_PT)
    # the JSON goes last: `checkpoints()` only counts a folder that has it
    (stage / STATE_JSON).write_text(json.dumps({"step": step, "data_sha256": data_sha256,
                                                "config": cfg.model_dump(mode="json")}, indent=2) + "\n",
                                    encoding="utf-8")
    _fsync_dir(stage)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(stage, final)
    if keep is not None:
        for old in checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old.directory, ignore_errors=True)
    logger.info("saved %s", final)
    return final


def _fsync_dir(directory: Path) -> None:
    for f in directory.rglob("*"):
        if f.is_file():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())


def load_checkpoint(point: ResumePoint, model: torch.nn.Module) -> dict[str, Any]:
    """Load the trainable tensors into `model` (in place) and return the trainer state."""
    tensors = load_file(str(point.directory / TRAINABLE))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise CheckpointError(f"{point.directory}/{TRAINABLE} does not match the model's trainable parameters "
                              f"(missing {missing[:3]}, unexpected {extra[:3]}). Fix: resume with the config the "
                              "checkpoint was made with")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    # our own file, written by save_checkpoint: it holds numpy RNG state and python tuples
    return torch.load(point.directory / STATE_PT, weights_only=False)
