"""`safecls train --config configs/train_sft.yaml [--set key=value ...] [--resume]`.

Under `accelerate launch` the same command runs on every process (see configs/accelerate_*.yaml):
    accelerate launch --config_file configs/accelerate_ddp.yaml -m safecls.cli train --config configs/train_sft.yaml
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a safety [CLS] model (pretrain or sft stage)",
                       description="Train the [CLS] token, head and model (LoRA or full) from a YAML TrainConfig.")
    p.add_argument("--config", required=True, metavar="YAML", help="TrainConfig file, e.g. configs/train_sft.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set max_steps=100 --set lora.r=8")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.set_defaults(func=_train)
    h = sub.add_parser("fit-head", help="re-fit a trained model's safety head alone on its [CLS] states",
                       description="Freeze a trained safecls model and fit its head by logistic regression on the "
                                   "[CLS] states of request reads and of reads over replies (train/head_fit.py).")
    h.add_argument("--config", required=True, metavar="YAML", help="HeadFitConfig file, e.g. configs/recipe/head.yaml")
    h.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set l2=0.1")
    h.set_defaults(func=_fit_head)


def _fit_head(args: argparse.Namespace) -> int:
    from safecls.config import load_config
    from safecls.train.head_fit import HeadFitConfig, fit_head

    cfg = load_config(args.config, HeadFitConfig, args.overrides)
    fit_head(cfg)
    logger.info("head re-fit: %s (fit.json beside it); calibrate it before use: safecls calibrate --model %s ...",
                f"{cfg.output_dir}/final", f"{cfg.output_dir}/final")
    return 0


def _train(args: argparse.Namespace) -> int:
    from safecls.config import load_config
    from safecls.train.config import TrainConfig
    from safecls.train.trainer import train

    overrides = list(args.overrides) + (["resume=true"] if args.resume else [])
    cfg = load_config(args.config, TrainConfig, overrides)
    result = train(cfg)
    logger.info("trained %d steps in %.1f s; final model: %s", result.steps, result.wall_s, result.final_dir)
    if result.eval:
        logger.info("eval: %s", result.eval)
    return 0
