"""The same train() under `accelerate launch` with 2 CPU processes (gloo): identical parameters on both ranks, and the
same losses as one process that sees the same global batch (2 processes x grad_accum 1 = 1 process x grad_accum 2)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from safecls.train import TrainConfig, train

WORKER = Path(__file__).with_name("_ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.multiproc
@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tiny_base_dir, toy_data, tmp_path):
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if launcher is None:
        pytest.skip("the accelerate launcher is not installed")
    common = dict(model=str(tiny_base_dir), train_file=str(toy_data), max_steps=3, batch_size=2, lr=1e-3,
                  head_lr=1e-2, lambda_cls=0.5, log_every=1, lora={"r": 4, "dropout": 0.0})
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps({**common, "output_dir": str(tmp_path / "ddp")}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(_free_port()), str(WORKER), str(cfg_path), str(tmp_path / "res")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"res.rank{r}").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2
    assert ranks[0]["sum"] == ranks[1]["sum"] and ranks[0]["sq"] == ranks[1]["sq"]  # DDP kept the replicas equal

    single = train(TrainConfig(**common, grad_accum=2, output_dir=str(tmp_path / "single")))
    # same chunks, same per-chunk means averaged: only the all-reduce order differs (fp32 rounding)
    assert ranks[0]["losses"] == pytest.approx(single.losses, abs=1e-5)
    assert (tmp_path / "ddp" / "final" / "safecls_config.json").is_file()
