from __future__ import annotations

import argparse

import pytest

import safecls.model
from safecls.errors import ConfigError
from safecls.train import commands


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="safecls")
    commands.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_train_command_reports_config_errors_with_file_and_line(tmp_path, monkeypatch):
    monkeypatch.setattr(safecls.model, "load_base", lambda *a, **k: pytest.fail("model loaded"))
    cfg = tmp_path / "t.yaml"
    cfg.write_text("train_file: t.jsonl\noutput_dir: out\nmax_steps: 5\nlambda_cls: -1\n")
    args = _parse(["train", "--config", str(cfg)])
    with pytest.raises(ConfigError, match=r"t\.yaml:4: lambda_cls: .*greater than or equal to 0"):
        args.func(args)


def test_train_command_passes_set_and_resume(tmp_path, monkeypatch):
    seen = {}

    def fake_train(cfg):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr("safecls.train.trainer.train", fake_train)
    cfg = tmp_path / "t.yaml"
    cfg.write_text("train_file: t.jsonl\noutput_dir: out\nmax_steps: 5\n")
    args = _parse(["train", "--config", str(cfg), "--set", "max_steps=7", "--set", "lora.r=4", "--resume"])
    with pytest.raises(SystemExit):
        args.func(args)
    assert (seen["cfg"].max_steps, seen["cfg"].lora.r, seen["cfg"].resume) == (7, 4, True)
