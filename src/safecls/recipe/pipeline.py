"""The whole recipe of the shipped model, step by step, each step resumable: the base model's own answers, the
data, the pretrain stage, the sft stage from it, the head re-fit on the sft stage's [CLS] states, and calibration on
the dev split. `safecls recipe all` (and `safecls demo --retrain`) run it; on 2 CPU cores it takes hours
(docs/MODEL_CARD.md gives the measured times)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "recipe"


def run_recipe(data_dir: str | Path, out: str | Path = "runs/recipe", configs: str | Path = CONFIGS) -> Path:
    """Build everything under `out` and return the calibrated checkpoint folder (out/head/final)."""
    from safecls.config import load_config
    from safecls.data.sft_records import read_sft_jsonl
    from safecls.inference.calibration import CalibrationConfig, calibrate
    from safecls.io import atomic_write
    from safecls.model import SafeClsModel
    from safecls.model.checkpoint import CALIBRATION_NAME
    from safecls.recipe.datasets import write_datasets
    from safecls.recipe.examples import build_examples
    from safecls.recipe.reworded import write_reworded_splits
    from safecls.recipe.self_answers import self_answers
    from safecls.train.config import TrainConfig
    from safecls.train.head_fit import HeadFitConfig, fit_head
    from safecls.train.trainer import train

    out = Path(out)
    logger.info("recipe 1/6: the base model's own answers (cached in %s)", out / "self_answers.jsonl")
    answers = self_answers(data_dir, out / "self_answers.jsonl")
    logger.info("recipe 2/6: examples, splits and training files")
    examples, stats = build_examples(data_dir, answers, cache=out / "cache")
    write_datasets(examples, out / "data", stats)
    data = out / "data"
    write_reworded_splits(data, data_dir, out / "cache")
    stages = {"pretrain": {"train_file": data / "pretrain_train.jsonl", "eval_file": data / "pretrain_test.jsonl"},
              "sft": {"train_file": data / "sft_train.jsonl", "eval_file": data / "sft_dev.jsonl",
                      "model": out / "pretrain" / "final"}}
    for step, (name, paths) in enumerate(stages.items(), 3):
        overrides = [f"{k}={v}" for k, v in {**paths, "output_dir": out / name, "resume": "true"}.items()]
        cfg = load_config(Path(configs) / f"{name}.yaml", TrainConfig, overrides)
        if (out / name / "final" / "safecls_config.json").is_file():
            logger.info("recipe %d/6: the %s stage is already trained (%s)", step, name, out / name)
            continue
        logger.info("recipe %d/6: the %s stage, %d steps", step, name, cfg.max_steps)
        train(cfg)
    final = out / "head" / "final"
    if (final / "safecls_config.json").is_file():
        logger.info("recipe 5/6: the head is already re-fit (%s)", final)
    else:
        logger.info("recipe 5/6: the head re-fit on the sft stage's [CLS] states")
        fit_head(load_config(Path(configs) / "head.yaml", HeadFitConfig, [
            f"{k}={v}" for k, v in {"model": out / "sft" / "final",
                                    "requests_file": f"[{data / 'sft_train.jsonl'}, {data / 'sft_train_reworded.jsonl'}]",
                                    "replies_file": data / "pretrain_train.jsonl",
                                    "eval_requests_file": f"[{data / 'sft_test.jsonl'}, {data / 'sft_test_reworded.jsonl'}]",
                                    "eval_replies_file": data / "pretrain_test.jsonl",
                                    "output_dir": out / "head"}.items()]))
    logger.info("recipe 6/6: calibration of threshold and tau on the dev split")
    model = SafeClsModel.from_pretrained(final)
    dev = read_sft_jsonl(out / "data" / "sft_dev.jsonl")
    cal = calibrate(model, [[m.model_dump() for m in r.prompt_messages] for r in dev], [r.label for r in dev],
                    load_config(Path(configs) / "calibrate.yaml", CalibrationConfig))
    atomic_write(final / CALIBRATION_NAME, json.dumps(cal.for_checkpoint(), indent=2) + "\n")
    return final
