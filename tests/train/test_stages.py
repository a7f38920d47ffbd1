"""Stage hand-offs and baselines: a pretrain-stage run continued by an sft run, the per-stage L_cls weight, and a
plain-SFT checkpoint that decodes exactly as the plain model it is."""

from __future__ import annotations

import pytest
import torch

from safecls.errors import ConfigError, ModelError
from safecls.inference import DecodeConfig, Engine
from safecls.model import LoraOptions, SafeClsModel
from safecls.train import TrainConfig, train
from safecls.train.trainer import _build_model
from tests.train.conftest import toy_records, write_jsonl


def _cfg(base, data, out, **kw) -> TrainConfig:
    opts = dict(model=str(base), train_file=str(data), output_dir=str(out), max_steps=3, batch_size=4, lr=1e-3,
                head_lr=1e-2, log_every=1, seed=0, lora={"r": 4, "dropout": 0.0})
    return TrainConfig(**{**opts, **kw})


def _cls_row(model: SafeClsModel) -> torch.Tensor:
    return model.causal_lm.get_input_embeddings()(torch.tensor([model.cls_token_id]))[0].detach().clone()


def test_sft_from_a_pretrain_checkpoint_continues_its_head_cls_row_and_adapters(tiny_base_dir, toy_data, tmp_path):
    pre = train(_cfg(tiny_base_dir, toy_data, tmp_path / "pre", stage="pretrain", lambda_cls=1.0, max_steps=4))
    pretrained = SafeClsModel.from_pretrained(pre.final_dir)
    start = _build_model(_cfg(pre.final_dir, toy_data, tmp_path / "sft", stage="sft"))
    assert start.stage == "sft"
    torch.testing.assert_close(start.head.weight, pretrained.head.weight, atol=0, rtol=0)
    torch.testing.assert_close(_cls_row(start), _cls_row(pretrained), atol=0, rtol=0)
    lora = {n: p for n, p in start.named_parameters() if "lora_B" in n}
    assert lora and all(p.requires_grad for p in lora.values()) and any(p.abs().sum() > 0 for p in lora.values())
    assert start.head.weight.requires_grad and any(p.requires_grad for n, p in start.named_parameters()
                                                    if "trainable_tokens" in n)
    fresh = _build_model(_cfg(tiny_base_dir, toy_data, tmp_path / "fresh", stage="sft"))
    assert not torch.equal(fresh.head.weight, pretrained.head.weight)  # what the hand-off used to do
    sft = train(_cfg(pre.final_dir, toy_data, tmp_path / "sft", stage="sft", max_steps=2))
    done = SafeClsModel.from_pretrained(sft.final_dir)
    assert done.stage == "sft" and not torch.equal(done.head.weight, pretrained.head.weight)


def test_continuing_a_checkpoint_needs_matching_lora_options(tiny_base_dir, toy_data, tmp_path):
    pre = train(_cfg(tiny_base_dir, toy_data, tmp_path / "pre", stage="pretrain", max_steps=1))
    with pytest.raises(ConfigError, match="lora"):
        _build_model(_cfg(pre.final_dir, toy_data, tmp_path / "a", lora=None))
    with pytest.raises(ConfigError, match="r=8"):
        _build_model(_cfg(pre.final_dir, toy_data, tmp_path / "b", lora={"r": 8}))


def test_lambda_cls_defaults_per_stage():
    base = dict(train_file="x", output_dir="y", max_steps=1)
    assert TrainConfig(stage="pretrain", **base).lambda_cls == 0.01
    assert TrainConfig(stage="sft", **base).lambda_cls == 0.1
    assert TrainConfig(stage="sft", with_cls=False, **base).lambda_cls == 0.0
    assert TrainConfig(stage="pretrain", lambda_cls=0.5, **base).lambda_cls == 0.5


def _hf_greedy(model, tok, prompts, n):
    tok.padding_side = "left"
    enc = tok.apply_chat_template([[{"role": "user", "content": p}] for p in prompts], add_generation_prompt=True,
                                  return_tensors="pt", padding=True, return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False)
    rows = out[:, enc["input_ids"].shape[1]:].tolist()
    return [r[: r.index(tok.eos_token_id)] if tok.eos_token_id in r else r for r in rows]


def test_a_plain_sft_checkpoint_decodes_as_the_merged_plain_model(tiny_base_dir, tmp_path):
    from safecls.model import load_base

    model = SafeClsModel.from_base(*load_base(tiny_base_dir), lora=LoraOptions(r=4, dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n or "trainable_tokens" in n:
                p.add_(torch.randn_like(p) * 0.3)  # a trained [CLS] row would change replies if they attended it
    model.with_cls = False
    model.save_pretrained(tmp_path / "plain")
    loaded = SafeClsModel.from_pretrained(tmp_path / "plain")
    assert loaded.with_cls is False
    prompts = ["How do I bake bread?", "Tell me a joke about the sea and the fox, please, right now", "Hi"]
    got = Engine(loaded).generate(prompts, DecodeConfig(max_new_tokens=16, policy="medium", schedule="every"))
    merged = SafeClsModel.from_pretrained(tmp_path / "plain").base.merge_and_unload()
    want = _hf_greedy(merged, loaded.tokenizer, prompts, 16)
    assert [g.token_ids for g in got] == want
    assert all(g.trace.evaluations == [] for g in got)
    with pytest.raises(ModelError, match="without the \\[CLS\\]"):
        loaded.classify(prompts)


def test_training_records_with_cls_in_the_checkpoint(tiny_base_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", toy_records(8))
    res = train(_cfg(tiny_base_dir, data, tmp_path / "p", with_cls=False, max_steps=1))
    assert SafeClsModel.from_pretrained(res.final_dir).with_cls is False
