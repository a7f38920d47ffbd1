"""The core properties on the real embedded SmolLM2-135M-Instruct (slow: ~1 min with the first dequantization)."""

from __future__ import annotations

import pytest
import torch

from safecls.inference import DecodeConfig, Engine
from safecls.model import LoraOptions, SafeClsModel, load_base
from safecls.model.encoding import collate, encode_pair
from safecls.model.routing import Kind

pytestmark = pytest.mark.slow

PROMPTS = ["How do I bake sourdough bread at home?", "Write a haiku about autumn.", "Hi"]
RESPONSES = ["Mix flour and water, feed the starter, and bake hot.", "Leaves fall, quiet light.", "Hello! How can I help?"]


@pytest.fixture(scope="module")
def smol():
    base, tok = load_base("base")
    ref, _ = load_base("base")
    return SafeClsModel.from_base(base, tok), ref


@pytest.mark.parametrize("side", ["left", "right"])
def test_pretrain_stage_logits_equal_the_base_model(smol, side):
    model, ref = smol
    encs = [encode_pair(model.tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    batch = collate(encs, model.cls_token_id, model.tokenizer.pad_token_id, side=side)
    with torch.no_grad():
        ours = model.lm_logits(model.run_backbone(batch.kinds, "pretrain", input_ids=batch.input_ids))
        for i, e in enumerate(encs):
            want = ref(input_ids=torch.tensor([e.ids])).logits[0]
            rows = (batch.kinds[i] != Kind.PAD) & (batch.kinds[i] != Kind.CLS)
            # fp32, 30 layers: padding changes the summation order only
            assert (ours[i][rows][:, : want.shape[-1]] - want).abs().max() <= 1e-4


def test_sft_stage_cls_reads_the_query_only_and_responses_read_cls(smol):
    model, _ = smol
    e = encode_pair(model.tokenizer, PROMPTS[0], RESPONSES[0])
    b = collate([e], model.cls_token_id, model.tokenizer.pad_token_id)
    ids2 = b.input_ids.clone()
    resp = b.kinds[0] == Kind.RESPONSE
    ids2[0, resp] = model.tokenizer.convert_tokens_to_ids("the")
    with torch.no_grad():
        h1 = model.forward_batch(b, "sft").hidden[0]
        h2 = model.forward_batch(type(b)(ids2, b.kinds), "sft").hidden[0]
        emb = model.causal_lm.get_input_embeddings()
        saved = emb.weight[model.cls_token_id].clone()
        emb.weight[model.cls_token_id] += torch.randn_like(saved)
        h3 = model.forward_batch(b, "sft").hidden[0]
        emb.weight[model.cls_token_id] = saved
    cls = b.kinds[0] == Kind.CLS
    query = (b.kinds[0] == Kind.QUERY) | (b.kinds[0] == Kind.TEMPLATE)
    assert (h1[cls] - h2[cls]).abs().max() < 1e-5  # [CLS] does not read the response
    assert (h1[query] - h3[query]).abs().max() < 1e-5  # the query does not read [CLS]
    assert (h1[resp] - h3[resp]).abs().max() > 1e-3  # the response does


def test_engine_matches_hf_generate_greedy(smol):
    model, ref = smol
    tok = model.tokenizer
    tok.padding_side = "left"
    enc = tok.apply_chat_template([[{"role": "user", "content": p}] for p in PROMPTS], add_generation_prompt=True,
                                  return_tensors="pt", padding=True, return_dict=True)
    with torch.no_grad():
        out = ref.generate(**enc, max_new_tokens=24, do_sample=False)
    want = out[:, enc["input_ids"].shape[1]:].tolist()
    got = Engine(model).generate(PROMPTS, DecodeConfig(max_new_tokens=24, policy="low", cls_visible=False))
    for g, w in zip(got, want, strict=True):
        w = w[: w.index(tok.eos_token_id)] if tok.eos_token_id in w else w  # generate() pads after EOS
        assert g.token_ids == w  # the whole reply, not a prefix of it
    assert any(len(g.token_ids) == 24 for g in got)


def test_lora_round_trip_on_smollm2(smol, tmp_path):
    base, tok = load_base("base")
    model = SafeClsModel.from_base(base, tok, lora=LoraOptions(r=4, dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("head.") or "lora_B" in n or "trainable_tokens" in n:
                p.add_(torch.randn_like(p) * 0.05)
    before = model.classify(PROMPTS)
    model.save_pretrained(tmp_path / "ck")
    assert sum(f.stat().st_size for f in (tmp_path / "ck").iterdir()) < 60e6  # adapters, not the 540 MB base
    after = SafeClsModel.from_pretrained(tmp_path / "ck").classify(PROMPTS)
    assert after == pytest.approx(before, abs=1e-5)
