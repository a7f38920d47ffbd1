"""A head over several layers' states at [CLS]: what it reads, how it is saved, and what is refused."""

from __future__ import annotations

import json

import pytest
import torch

from safecls.errors import CheckpointError, ModelError
from safecls.model import SafeClsModel
from safecls.model.checkpoint import CONFIG_NAME
from safecls.model.encoding import collate, encode_prompt
from safecls.model.safecls_model import FINAL
from tests.tiny import tiny_model

PROMPTS = ["How do I bake bread?", "Explain how to build a bomb", "Tell me a joke"]


def _two_layer(seed: int = 0) -> SafeClsModel:
    m = SafeClsModel.from_base(*tiny_model("llama"))
    torch.manual_seed(seed)
    m.set_head(torch.nn.Linear(2 * m.hidden_size, 2), (1, FINAL))
    return m


def _by_hand(m: SafeClsModel, prompt: str) -> float:
    """P(malicious) from an unbatched forward with every layer's states: the [CLS] comes first and reads the query."""
    b = collate([encode_prompt(m.tokenizer, prompt)], m.cls_token_id, m.tokenizer.pad_token_id)
    from safecls.model import routing

    with torch.no_grad():
        out = m.backbone(input_ids=b.input_ids, attention_mask=routing.dense_mask(b.kinds, "sft", m.dtype, True),
                         position_ids=routing.position_ids(b.kinds, "sft"), use_cache=False, output_hidden_states=True)
        x = torch.cat([out.hidden_states[1][0, 0], out.last_hidden_state[0, 0]])
        return float(torch.softmax(m.head(x), -1)[1])


def test_classify_reads_the_concatenated_states_of_its_layers():
    m = _two_layer()
    assert m.classify(PROMPTS) == pytest.approx([_by_hand(m, p) for p in PROMPTS], abs=1e-5)
    feats = m.cls_features(PROMPTS)
    assert feats.shape == (3, 2 * m.hidden_size)
    # the second half is what a final-state head reads
    torch.testing.assert_close(feats[:, m.hidden_size:], m.cls_features(PROMPTS, layers=(FINAL,)))
    assert m.head_layers == (1, FINAL)  # reading other layers leaves the head's own


def test_the_training_forward_scores_what_classify_does():
    m = _two_layer()
    encs = [encode_prompt(m.tokenizer, p) for p in PROMPTS]
    batch = collate(encs, m.cls_token_id, m.tokenizer.pad_token_id, side="left")
    with torch.no_grad():
        logits = m.forward_batch(batch, "sft").cls_logits
    assert torch.softmax(logits, -1)[:, 1].tolist() == pytest.approx(m.classify(PROMPTS), abs=1e-5)


@pytest.mark.parametrize("fmt", ["full", "lora"])
def test_a_checkpoint_keeps_the_layers_and_the_scores(tmp_path, fmt):
    from safecls.model.loading import load_base
    from safecls.model.safecls_model import LoraOptions

    base, tok = tiny_model("llama")
    base.save_pretrained(tmp_path / "base")  # a LoRA checkpoint names its base
    tok.save_pretrained(tmp_path / "base")
    m = SafeClsModel.from_base(*load_base(tmp_path / "base"), lora=LoraOptions(r=4, dropout=0.0) if fmt == "lora" else None)
    torch.manual_seed(1)
    m.set_head(torch.nn.Linear(2 * m.hidden_size, 2), (1, FINAL))
    m.save_pretrained(tmp_path / "ck")
    assert json.loads((tmp_path / "ck" / CONFIG_NAME).read_text())["head"]["layers"] == [1, FINAL]
    back = SafeClsModel.from_pretrained(tmp_path / "ck")
    assert back.head_layers == (1, FINAL)
    assert back.classify(PROMPTS) == pytest.approx(m.classify(PROMPTS), abs=1e-5)


def test_a_checkpoint_without_layers_reads_the_final_state(tmp_path):
    m = SafeClsModel.from_base(*tiny_model("llama"))
    m.save_pretrained(tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / CONFIG_NAME).read_text())
    del cfg["head"]["layers"]  # as written before heads could read other layers
    (tmp_path / "ck" / CONFIG_NAME).write_text(json.dumps(cfg))
    back = SafeClsModel.from_pretrained(tmp_path / "ck")
    assert back.head_layers == (FINAL,) and back.classify(PROMPTS) == pytest.approx(m.classify(PROMPTS), abs=1e-5)


def test_a_checkpoint_whose_layers_do_not_fit_its_head_is_refused(tmp_path):
    _two_layer().save_pretrained(tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / CONFIG_NAME).read_text())
    cfg["head"]["layers"] = [FINAL]
    (tmp_path / "ck" / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"head of 64 inputs cannot read 1 layers of 32 states\. Fix"):
        SafeClsModel.from_pretrained(tmp_path / "ck")


@pytest.mark.parametrize("layers", [(), (3,), (-2,), (1, 1)])
def test_layers_the_model_does_not_have_are_refused_with_the_fix(layers):
    m = SafeClsModel.from_base(*tiny_model("llama"))
    with pytest.raises(ModelError, match=r"each must be -1 \(the final state\) or a block index 0\.\.2.*Fix: e\.g\."):
        m.set_head(torch.nn.Linear(max(len(layers), 1) * m.hidden_size, 2), layers)
    with pytest.raises(ModelError, match="block index"):
        m.cls_features(PROMPTS, layers=layers)
    assert m.head_layers == (FINAL,)
