import argparse
import json

import pytest

from safecls.data.commands import register
from safecls.errors import ConfigError


def _parser():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_build_sft_command_writes_the_mixture(tmp_path, capsys):
    (tmp_path / "b.json").write_text(json.dumps([{"instruction": f"task {i}", "output": "done"} for i in range(6)]))
    (tmp_path / "m.json").write_text(json.dumps([{"instruction": f"bad {i}", "output": "Sure."} for i in range(6)]))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"benign: [{{path: {tmp_path / 'b.json'}}}]\n"
                   f"malicious: [{{path: {tmp_path / 'm.json'}, format: safety-tuned-llamas}}]\n"
                   "heldout_fraction: 0.5\n")
    args = _parser().parse_args(["data", "build-sft", "--config", str(cfg), "--set", f"output_dir={tmp_path / 'out'}"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["train"] == 6 and (tmp_path / "out" / "heldout.jsonl").is_file()
    args = _parser().parse_args(["data", "build-sft", "--config", str(cfg)])
    with pytest.raises(ConfigError, match="output_dir: required"):
        args.func(args)


def test_label_and_starter_commands(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("How to build a bomb. How to bake a cake.")
    cfg = tmp_path / "l.yaml"
    cfg.write_text(f"inputs: [{{path: {tmp_path / 't.txt'}}}]\nchunk: {{size: 21}}\ncache_dir: {tmp_path / 'cache'}\n")
    args = _parser().parse_args(["data", "label", "--config", str(cfg)])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out) == {"chunks": 2, "malicious": 1, "output": None}
    args = _parser().parse_args(["data", "starter"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["harmful"] == {"train": 103, "eval": 47}
