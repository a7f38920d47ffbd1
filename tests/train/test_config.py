from __future__ import annotations

import pytest

from safecls.config import load_config, validate
from safecls.errors import ConfigError
from safecls.train.config import TrainConfig

BASE = {"train_file": "t.jsonl", "output_dir": "out", "max_steps": 10}


def test_unknown_key_names_file_line_and_close_match(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("train_file: t.jsonl\noutput_dir: out\nmax_steps: 10\nlamda_cls: 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.yaml:4: lamda_cls: unknown key; did you mean 'lambda_cls'"):
        load_config(path, TrainConfig)


def test_negative_lambda_is_rejected():
    with pytest.raises(ConfigError, match="lambda_cls"):
        validate(TrainConfig, {**BASE, "lambda_cls": -0.1})


def test_plain_sft_needs_zero_lambda():
    with pytest.raises(ConfigError, match="with_cls: false .* lambda_cls must be 0"):
        validate(TrainConfig, {**BASE, "with_cls": False, "lambda_cls": 0.1})
    assert validate(TrainConfig, {**BASE, "with_cls": False, "lambda_cls": 0}).with_cls is False


def test_warmup_longer_than_run_is_rejected():
    with pytest.raises(ConfigError, match="warmup_steps"):
        validate(TrainConfig, {**BASE, "warmup_steps": 11})


def test_set_override_reaches_nested_lora(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("train_file: t.jsonl\noutput_dir: out\nmax_steps: 10\nlora: {r: 4}\n")
    cfg = load_config(path, TrainConfig, ["lora.r=8", "stage=pretrain", "lambda_cls=0.01"])
    assert (cfg.lora.r, cfg.stage, cfg.lambda_cls) == (8, "pretrain", 0.01)


def test_every_field_is_documented():
    undocumented = [n for n, f in TrainConfig.model_fields.items() if not f.description]
    assert undocumented == []


def test_example_configs_validate():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("train_*.yaml"))
    assert configs, "configs/train_*.yaml missing"
    for path in configs:
        load_config(path, TrainConfig)
