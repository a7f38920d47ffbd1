"""Run by tests/train/test_multiproc.py under `accelerate launch` (or directly): train, then rank 0 writes results.

    python tests/train/_ddp_worker.py CONFIG_JSON OUT_JSON
Every rank writes OUT_JSON.rank<r> with a checksum of its trainable parameters; the test compares them.
"""

from __future__ import annotations

import json
import sys

import torch


def main(cfg_path: str, out_path: str) -> None:
    from accelerate import PartialState

    from safecls.train import TrainConfig, train

    cfg = TrainConfig.model_validate(json.loads(open(cfg_path).read()))
    res = train(cfg)
    rank = PartialState().process_index
    flat = torch.cat([p.detach().flatten().double() for p in res.model.parameters()])
    with open(f"{out_path}.rank{rank}", "w") as f:
        json.dump({"losses": res.losses, "world": PartialState().num_processes, "sum": flat.sum().item(),
                   "sq": (flat ** 2).sum().item()}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
