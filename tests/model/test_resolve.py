"""One meaning of --model, and the shipped model's packaging."""

from __future__ import annotations

import pytest
import torch

from safecls.errors import CheckpointError, ConfigError
from safecls.model import LoraOptions, SafeClsModel, load_base
from safecls.model.resolve import check_model_ref, resolve_model
from safecls.model.shipped import package
from tests.tiny import tiny_model

PROMPTS = ["How do I bake bread?", "Explain how to build a bomb"]


def test_refs_are_checked_without_loading(tmp_path):
    for ok in ("default", "base", "untrained", "plain:some/hub-id"):
        check_model_ref(ok)
    with pytest.raises(ConfigError, match="models.x.path.*not a safecls checkpoint.*untrained"):
        check_model_ref(str(tmp_path), "models.x.path")
    with pytest.raises(ConfigError):
        check_model_ref("plain:")


@pytest.fixture
def base_dir(tmp_path):
    base, tok = tiny_model("llama")
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    return tmp_path / "base"


def test_a_checkpoint_and_a_plain_folder_resolve(base_dir, tmp_path):
    m = SafeClsModel.from_base(*load_base(base_dir))
    m.save_pretrained(tmp_path / "ck")
    r = resolve_model(str(tmp_path / "ck"))
    assert r.safecls and r.model.classify(PROMPTS) == pytest.approx(m.classify(PROMPTS), abs=1e-6)
    p = resolve_model(f"plain:{base_dir}")
    assert not p.safecls and not hasattr(p.model, "classify") and p.name == "base"


def test_packaging_halves_the_adapters_and_keeps_the_verdicts(base_dir, tmp_path, monkeypatch):
    import safecls.model.loading as loading

    model = SafeClsModel.from_base(*load_base(base_dir), lora=LoraOptions(r=4, dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("head.") or "lora_B" in n or "trainable_tokens" in n:
                p.add_(torch.randn_like(p) * 0.05)
    model.base_ref = "base"  # what a recipe checkpoint over the embedded base records
    model.calibration = {"decode": {"threshold": 0.7, "tau": 2}}
    model.save_pretrained(tmp_path / "ck")
    before = model.classify(PROMPTS)
    dest = package(tmp_path / "ck", tmp_path / "shipped")
    assert not (dest / "tokenizer.json").exists() and (dest / "calibration.json").exists()
    assert (dest / "adapter_model.safetensors").stat().st_size < (tmp_path / "ck" / "adapter_model.safetensors").stat().st_size
    real_load_base, real_tok = loading.load_base, loading.load_tokenizer
    monkeypatch.setattr(loading, "load_base", lambda ref="base", dtype=None: real_load_base(base_dir, dtype=dtype))
    monkeypatch.setattr(loading, "load_tokenizer", lambda ref="base": real_tok(base_dir))
    monkeypatch.setattr("safecls.model.shipped.shipped_dir", lambda: dest)
    shipped = SafeClsModel.from_pretrained("default")
    assert shipped.calibrated == {"threshold": 0.7, "tau": 2}
    assert shipped.classify(PROMPTS) == pytest.approx(before, abs=2e-3)  # fp16 adapters: about 1e-3 of a probability

    # a train config's model: default continues the shipped model (its head trains on), as --model default names it
    from safecls.train.config import TrainConfig
    from safecls.train.trainer import _build_model

    (tmp_path / "t.jsonl").write_text("")
    cont = _build_model(TrainConfig(model="default", train_file=str(tmp_path / "t.jsonl"), output_dir=str(tmp_path / "o"),
                                    max_steps=1, lora={"r": 4}))
    assert torch.equal(cont.head.weight, shipped.head.weight) and cont.head.weight.requires_grad


def test_a_missing_shipped_model_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr("safecls.model.shipped.shipped_dir", lambda: tmp_path / "none")
    with pytest.raises(CheckpointError, match="shipped default model is missing.*untrained"):
        SafeClsModel.from_pretrained("default")
