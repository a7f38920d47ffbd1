"""train() on tiny random models: learning, resume, the plain-SFT path, and errors raised before any model loads."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import safecls.model
import safecls.train.trainer as trainer_mod
from safecls.errors import ConfigError, DataError
from safecls.model import SafeClsModel
from safecls.train import TrainConfig, train
from safecls.train.trainer import lr_factor
from tests.tiny import ARCHS, tiny_model
from tests.train.conftest import toy_records, write_jsonl


def _cfg(base, data, out, **kw) -> TrainConfig:
    opts = dict(model=str(base), train_file=str(data), output_dir=str(out), max_steps=6, batch_size=4, lr=1e-3,
                head_lr=1e-2, lambda_cls=0.5, log_every=1, seed=0)
    return TrainConfig(**{**opts, **kw})


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: bad input must be rejected before it."""
    def boom(*_a, **_k):
        raise AssertionError("a model was loaded before the input was validated")
    monkeypatch.setattr(safecls.model, "load_base", boom)


def test_loss_decreases_and_head_separates_marker(tiny_base_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", toy_records(32))
    held = write_jsonl(tmp_path / "h.jsonl", toy_records(16, offset=100))
    res = train(_cfg(tiny_base_dir, data, tmp_path / "out", max_steps=24, batch_size=8, lambda_cls=1.0,
                     eval_file=str(held), log_every=4))
    first, last = sum(res.losses[:3]) / 3, sum(res.losses[-3:]) / 3
    assert last < first - 0.3, res.losses
    assert res.eval["head_acc"] >= 0.95, res.eval
    # the final folder is a working safecls checkpoint with the same verdicts
    loaded = SafeClsModel.from_pretrained(res.final_dir)
    prompts = ["Explain how to build a bomb with salt", "Explain how to write about salt"]
    assert loaded.classify(prompts) == pytest.approx(res.model.classify(prompts), abs=1e-6)
    assert loaded.classify(prompts)[0] > 0.5 > loaded.classify(prompts)[1]
    lines = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [4, 8, 12, 16, 20, 24]
    assert {"loss", "lm", "cls", "lr", "tokens_per_s", "head_acc"} <= set(lines[0])


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_trains_head_and_lora(arch, tmp_path, toy_data):
    base_dir = tmp_path / "base"
    model, tok = tiny_model(arch)
    model.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    res = train(_cfg(base_dir, toy_data, tmp_path / "out", max_steps=2, lora={"r": 4, "dropout": 0.0}))
    fresh = SafeClsModel.from_base(*tiny_model(arch), lora=None, seed=0)
    assert not torch.allclose(res.model.head.weight, fresh.head.weight)  # the head trained
    assert torch.allclose(fresh.head.weight, SafeClsModel.from_base(*tiny_model(arch), seed=0).head.weight)
    assert all(torch.isfinite(torch.tensor(res.losses)))


def test_head_and_cls_row_train_in_lora_mode(tiny_base_dir, toy_data, tmp_path):
    res = train(_cfg(tiny_base_dir, toy_data, tmp_path / "out", max_steps=2, lora={"r": 4, "dropout": 0.0}))
    names = {n for n, p in res.model.named_parameters() if p.requires_grad}
    assert any(n.startswith("head.") for n in names)
    assert any("lora_A" in n for n in names) and any("trainable_tokens" in n for n in names)
    delta = [p for n, p in res.model.named_parameters() if "trainable_tokens_delta" in n]
    assert delta and float(delta[0].abs().sum()) > 0  # the [CLS] row moved from its init


@pytest.mark.parametrize("lora", [None, {"r": 4, "dropout": 0.1}], ids=["full", "lora-dropout"])
def test_kill_and_resume_ends_with_the_same_weights(tiny_base_dir, toy_data, tmp_path, monkeypatch, lora):
    kw = dict(max_steps=6, batch_size=3, grad_accum=2, checkpoint_every=2, warmup_steps=2, weight_decay=0.1, lora=lora)
    straight = train(_cfg(tiny_base_dir, toy_data, tmp_path / "a", **kw))

    real = trainer_mod._checkpoint

    def killed_after_step_4(*args, **kwargs):
        real(*args, **kwargs)
        if args[2] == 4:
            raise KeyboardInterrupt("simulated kill after the step-4 checkpoint")

    monkeypatch.setattr(trainer_mod, "_checkpoint", killed_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_base_dir, toy_data, tmp_path / "b", **kw))
    monkeypatch.setattr(trainer_mod, "_checkpoint", real)
    resumed = train(_cfg(tiny_base_dir, toy_data, tmp_path / "b", resume=True, **kw))

    assert resumed.resumed_from == 4 and len(resumed.losses) == 2
    assert resumed.losses == pytest.approx(straight.losses[4:], abs=1e-6)
    for f in (tmp_path / "a" / "final").glob("*.safetensors"):
        a, b = load_file(str(f)), load_file(str(tmp_path / "b" / "final" / f.name))
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0)  # the brief's bound; in practice bit-equal
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # no duplicates from the killed run


def test_existing_checkpoints_need_resume_and_matching_config(tiny_base_dir, toy_data, tmp_path, monkeypatch):
    train(_cfg(tiny_base_dir, toy_data, tmp_path / "o", max_steps=3, checkpoint_every=1))
    monkeypatch.setattr(safecls.model, "load_base", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(ConfigError, match="already holds checkpoints.*--resume"):
        train(_cfg(tiny_base_dir, toy_data, tmp_path / "o", max_steps=3, checkpoint_every=1))
    with pytest.raises(ConfigError, match=r"config changed \(lr: 0.001 -> 0.002\)"):
        train(_cfg(tiny_base_dir, toy_data, tmp_path / "o", max_steps=3, checkpoint_every=1, lr=2e-3, resume=True))
    write_jsonl(toy_data, toy_records(10))
    with pytest.raises(ConfigError, match="train_file .* changed"):
        train(_cfg(tiny_base_dir, toy_data, tmp_path / "o", max_steps=3, checkpoint_every=1, resume=True))


def test_checkpoints_rotate_and_partial_ones_are_ignored(tiny_base_dir, toy_data, tmp_path):
    out = tmp_path / "o"
    (out / ".checkpoint-9.partial").mkdir(parents=True)  # a kill mid-save left this behind
    train(_cfg(tiny_base_dir, toy_data, out, max_steps=5, checkpoint_every=1, keep_checkpoints=2))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert (out / "checkpoint-4" / "safecls_config.json").is_file()  # a loadable safecls checkpoint
    assert SafeClsModel.from_pretrained(out / "checkpoint-4").classify(["hi"])[0] >= 0


def test_plain_sft_has_no_head_loss_and_keeps_the_head(tiny_base_dir, toy_data, tmp_path):
    res = train(_cfg(tiny_base_dir, toy_data, tmp_path / "o", with_cls=False, lambda_cls=0, max_steps=3,
                     lora={"r": 4, "dropout": 0.0}))
    assert all(m.cls is None and m.head_acc is None for m in res.metrics)
    assert res.losses[-1] < res.losses[0]
    fresh = SafeClsModel.from_base(*safecls.model.load_base(str(tiny_base_dir)), seed=0)
    torch.testing.assert_close(res.model.head.weight, fresh.head.weight, atol=0, rtol=0)


def test_plain_sft_matches_cls_training_at_zero_lambda_in_pretrain_stage(tiny_base_dir, toy_data, tmp_path):
    # pretrain routing hides [CLS] from every token, so with λ = 0 the LM loss cannot depend on it
    a = train(_cfg(tiny_base_dir, toy_data, tmp_path / "a", stage="pretrain", lambda_cls=0, max_steps=2))
    b = train(_cfg(tiny_base_dir, toy_data, tmp_path / "b", stage="pretrain", lambda_cls=0, max_steps=2, with_cls=False))
    assert a.losses == pytest.approx(b.losses, abs=1e-5)


def test_runs_are_deterministic(tiny_base_dir, toy_data, tmp_path):
    a = train(_cfg(tiny_base_dir, toy_data, tmp_path / "a", max_steps=2, lora={"r": 4, "dropout": 0.1}))
    b = train(_cfg(tiny_base_dir, toy_data, tmp_path / "b", max_steps=2, lora={"r": 4, "dropout": 0.1}))
    assert a.losses == b.losses


@pytest.mark.parametrize("row, match", [
    ('{"messages": [broken', r"bad\.jsonl:2: not valid JSON"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "source": "s"},
     r"bad\.jsonl:2: field 'label' is missing"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}], "label": 0, "source": "s"},
     r"bad\.jsonl:2: the assistant response is empty"),
])
def test_bad_records_fail_before_any_model_loads(tmp_path, no_model_load, row, match):
    data = write_jsonl(tmp_path / "bad.jsonl", [toy_records(1)[0], row])
    with pytest.raises(DataError, match=match):
        train(_cfg("unused", data, tmp_path / "o"))


def test_bad_eval_file_fails_before_any_model_loads(tmp_path, toy_data, no_model_load):
    with pytest.raises(DataError, match=r"missing\.jsonl: no such file"):
        train(_cfg("unused", toy_data, tmp_path / "o", eval_file=str(tmp_path / "missing.jsonl")))


def test_flex_attention_on_cpu_is_a_clear_error(tmp_path, toy_data, no_model_load):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU message")
    with pytest.raises(ConfigError, match="attention: flex needs a CUDA device"):
        train(_cfg("unused", toy_data, tmp_path / "o", attention="flex"))


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(train_file="t", output_dir="o", max_steps=10, warmup_steps=2, schedule="cosine")
    f = [lr_factor(s, cfg) for s in range(10)]
    assert f[0] < f[1] < f[2] == 1.0 and f[9] < 0.05
    assert all(a >= b for a, b in zip(f[2:], f[3:]))
    lin = TrainConfig(train_file="t", output_dir="o", max_steps=10, schedule="linear")
    assert lr_factor(5, lin) == pytest.approx(0.5)
    const = TrainConfig(train_file="t", output_dir="o", max_steps=10, schedule="constant")
    assert {lr_factor(s, const) for s in range(10)} == {1.0}


def test_pretrain_stage_trains_on_text_records(tiny_base_dir, tmp_path):
    rows = [{"text": f"How to build a bomb {i}" if i % 2 else f"How to bake bread {i}", "label": i % 2} for i in range(12)]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    res = train(_cfg(tiny_base_dir, data, tmp_path / "o", stage="pretrain", lambda_cls=0.01, max_steps=3))
    assert res.losses[-1] < res.losses[0]
    assert all(m.cls is not None for m in res.metrics)
    assert SafeClsModel.from_pretrained(res.final_dir).stage == "pretrain"
