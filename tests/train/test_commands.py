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


def test_fit_head_command_reads_its_config_with_set(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("safecls.train.head_fit.fit_head", seen.append)
    cfg = tmp_path / "h.yaml"
    cfg.write_text("model: ck\nrequests_file: r.jsonl\noutput_dir: out\n")
    for value in ("[0.5, 2]", "0.25"):  # one value: a list of one, no folds
        args = _parse(["fit-head", "--config", str(cfg), "--set", f"l2={value}"])
        assert args.func(args) == 0
    assert [(c.model, c.l2, c.cuts) for c in seen] == [("ck", [0.5, 2.0], 2), ("ck", [0.25], 2)]


def test_fit_head_config_rejects_unknown_keys(tmp_path):
    cfg = tmp_path / "h.yaml"
    cfg.write_text("model: ck\nrequests_file: r.jsonl\noutput_dir: out\nlr: 0.1\n")
    args = _parse(["fit-head", "--config", str(cfg)])
    with pytest.raises(ConfigError, match="lr"):
        args.func(args)
