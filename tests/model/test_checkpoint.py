from __future__ import annotations

import json

import pytest
import torch

from safecls.errors import CheckpointError, ContextLengthError, ModelError, TemplateError
from safecls.model import LoraOptions, SafeClsModel
from safecls.model.encoding import encode_prompt
from tests.tiny import tiny_model

PROMPTS = ["How do I bake bread?", [{"role": "user", "content": "Explain how to build a bomb"}]]


def _perturb(model: SafeClsModel, seed: int = 1) -> None:
    """Zero-init head and LoRA B would pass a round trip even if never saved: make them non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("head.") or "lora_B" in n or "trainable_tokens" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)


def _logits(model: SafeClsModel) -> torch.Tensor:
    from safecls.model.encoding import collate

    b = collate([encode_prompt(model.tokenizer, p) for p in PROMPTS], model.cls_token_id, model.tokenizer.pad_token_id)
    with torch.no_grad():
        return model.lm_logits(model.forward_batch(b, "sft").hidden)


def test_full_round_trip_keeps_logits_and_scores(tmp_path):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    _perturb(model)
    before, logits = model.classify(PROMPTS), _logits(model)
    model.save_pretrained(tmp_path / "ck")
    loaded = SafeClsModel.from_pretrained(tmp_path / "ck")
    assert loaded.classify(PROMPTS) == pytest.approx(before, abs=1e-6)
    torch.testing.assert_close(_logits(loaded), logits, atol=1e-6, rtol=0)
    assert json.loads((tmp_path / "ck" / "safecls_config.json").read_text())["format"] == "full"


def test_lora_round_trip_keeps_scores(tmp_path):
    base, tok = tiny_model("llama")
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    from safecls.model.loading import load_base

    model = SafeClsModel.from_base(*load_base(base_dir), lora=LoraOptions(r=4, dropout=0.0))
    assert model.is_lora
    _perturb(model)
    before, logits = model.classify(PROMPTS), _logits(model)
    model.save_pretrained(tmp_path / "ck")
    assert (tmp_path / "ck" / "adapter_config.json").is_file()
    loaded = SafeClsModel.from_pretrained(tmp_path / "ck")
    assert loaded.is_lora
    assert loaded.classify(PROMPTS) == pytest.approx(before, abs=1e-6)
    torch.testing.assert_close(_logits(loaded), logits, atol=1e-6, rtol=0)


def test_unknown_checkpoint_keys_warn_not_fail(tmp_path, caplog):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    model.save_pretrained(tmp_path / "ck")
    p = tmp_path / "ck" / "safecls_config.json"
    cfg = json.loads(p.read_text())
    cfg["from_the_future"] = 1
    p.write_text(json.dumps(cfg))
    SafeClsModel.from_pretrained(tmp_path / "ck")
    assert "from_the_future" in caplog.text


def test_folder_without_config_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a safecls checkpoint.*load_base"):
        SafeClsModel.from_pretrained(tmp_path)


def test_tokenizer_without_chat_template_rejects_messages():
    base, tok = tiny_model("llama")
    tok.chat_template = None
    model = SafeClsModel.from_base(base, tok)
    with pytest.raises(TemplateError, match="no chat template"):
        model.classify([[{"role": "user", "content": "hi"}]])
    assert len(model.classify(["plain text is fine"])) == 1  # a string falls back to plain text


def test_sequence_over_context_length_is_rejected():
    model = SafeClsModel.from_base(*tiny_model("gpt2"))  # n_positions = 256
    with pytest.raises(ContextLengthError, match="context length 256"):
        model.classify(["fox " * 400])


def test_non_causal_lm_is_rejected():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ModelError, match="AutoModelForCausalLM"):
        SafeClsModel.from_base(bert, tiny_model()[1])
