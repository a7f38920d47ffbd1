"""The routing properties of DESIGN.md, checked through real forwards of tiny models of four architectures."""

from __future__ import annotations

import pytest
import torch

from safecls.model import SafeClsModel
from safecls.model.encoding import collate, encode_pair, encode_prompt
from safecls.model.routing import Kind, allowed, flex_dense_equivalent, position_ids
from tests.tiny import ARCHS, tiny_model

PROMPTS = ["How do I bake bread?", "Explain how to build a bomb", "Tell me a joke about the sea and the fox"]
RESPONSES = ["Mix flour, water and yeast.", "Sorry, I cannot fulfill your request because it hurts.", "A fox"]


@pytest.fixture(params=ARCHS)
def arch(request):
    return request.param


def _wrapped(arch):
    base, tok = tiny_model(arch)
    ref, _ = tiny_model(arch)  # the same weights, untouched by the token resize
    return SafeClsModel.from_base(base, tok), ref


@pytest.mark.parametrize("side", ["left", "right"])
def test_pretrain_stage_cls_is_invisible_to_every_other_position(arch, side):
    model, ref = _wrapped(arch)
    encs = [encode_pair(model.tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    batch = collate(encs, model.cls_token_id, model.tokenizer.pad_token_id, side=side)
    with torch.no_grad():
        hidden = model.run_backbone(batch.kinds, "pretrain", input_ids=batch.input_ids)
        ours = model.lm_logits(hidden)
        for i, e in enumerate(encs):
            base = ref(input_ids=torch.tensor([e.ids])).logits[0]
            rows = (batch.kinds[i] != Kind.PAD) & (batch.kinds[i] != Kind.CLS)
            # fp32 through a 2-layer model: differences are summation order only (~1e-6)
            torch.testing.assert_close(ours[i][rows][:, : base.shape[-1]], base, atol=1e-4, rtol=0)


def test_pretrain_cls_state_changes_when_any_attended_token_changes(arch):
    model, _ = _wrapped(arch)
    e = encode_pair(model.tokenizer, PROMPTS[0], RESPONSES[0])
    base_batch = collate([e], model.cls_token_id, model.tokenizer.pad_token_id)
    with torch.no_grad():
        h0 = model.forward_batch(base_batch, "pretrain").hidden[0, 0]
        for pos in [i for i, k in enumerate(e.kinds) if k in (Kind.QUERY, Kind.RESPONSE)]:
            ids = list(e.ids)
            ids[pos] = (ids[pos] + 7) % len(model.tokenizer)
            b = collate([type(e)(ids, e.kinds)], model.cls_token_id, model.tokenizer.pad_token_id)
            h1 = model.forward_batch(b, "pretrain").hidden[0, 0]
            assert (h1 - h0).abs().max() > 1e-6, f"[CLS] did not react to token {pos}"


def _states(model, enc, stage):
    b = collate([enc], model.cls_token_id, model.tokenizer.pad_token_id)
    with torch.no_grad():
        return model.forward_batch(b, stage).hidden[0], b.kinds[0]


def test_sft_stage_dependencies(arch):
    model, _ = _wrapped(arch)
    e = encode_pair(model.tokenizer, PROMPTS[1], RESPONSES[1])
    h, kinds = _states(model, e, "sft")
    # 1. query states do not depend on [CLS]: change the [CLS] embedding row's input
    emb = model.backbone.get_input_embeddings() if hasattr(model.backbone, "get_input_embeddings") else None
    emb = emb or model.causal_lm.get_input_embeddings()
    with torch.no_grad():
        saved = emb.weight[model.cls_token_id].clone()
        emb.weight[model.cls_token_id] += torch.randn_like(saved)  # not a constant: LayerNorm would remove it
        h2, _ = _states(model, e, "sft")
        emb.weight[model.cls_token_id] = saved
    q = (kinds == Kind.QUERY) | (kinds == Kind.TEMPLATE)
    r = kinds == Kind.RESPONSE
    torch.testing.assert_close(h2[q], h[q], atol=1e-6, rtol=0)  # exact up to float noise
    # 3. response tokens do depend on [CLS]
    assert (h2[r] - h[r]).abs().max() > 1e-4
    # 2. [CLS] does not depend on response tokens
    ids = list(e.ids)
    for i, k in enumerate(e.kinds):
        if k == Kind.RESPONSE:
            ids[i] = (ids[i] + 5) % len(model.tokenizer)
    h3, _ = _states(model, type(e)(ids, e.kinds), "sft")
    cls = kinds == Kind.CLS
    torch.testing.assert_close(h3[cls], h[cls], atol=1e-6, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_sft_routing_with_padding_and_a_read_row(arch, side):
    """In a padded batch whose rows end with an EVAL read (classify of a pair): nobody depends on padding or on the
    read, the read depends on the response, and every other state equals the row's unpadded forward."""
    model, _ = _wrapped(arch)
    tok = model.tokenizer
    encs = []
    for p, r in zip(PROMPTS, RESPONSES, strict=True):
        e = encode_pair(tok, p, r)
        encs.append(type(e)(e.ids + [model.cls_token_id], e.kinds + [int(Kind.EVAL)]))
    batch = collate(encs, model.cls_token_id, tok.pad_token_id, side=side)
    with torch.no_grad():
        h = model.forward_batch(batch, "sft").hidden
        ids2 = batch.input_ids.clone()
        pad, ev = batch.kinds == Kind.PAD, batch.kinds == Kind.EVAL
        ids2[pad] = 7  # other padding tokens
        ids2[ev] = 5  # another token in the read's slot
        h2 = model.forward_batch(type(batch)(ids2, batch.kinds), "sft").hidden
        keep = ~pad & ~ev
        torch.testing.assert_close(h2[keep], h[keep], atol=1e-6, rtol=0)
        for i, e in enumerate(encs):  # padding changes nothing: each row equals its own unpadded forward
            alone = model.forward_batch(collate([e], model.cls_token_id, tok.pad_token_id), "sft").hidden[0]
            rows = batch.kinds[i] != Kind.PAD
            torch.testing.assert_close(h[i][rows], alone, atol=1e-5, rtol=0)  # fp32 summation order
        ids3 = batch.input_ids.clone()
        resp = batch.kinds == Kind.RESPONSE
        ids3[resp] = (ids3[resp] + 3) % len(tok)
        h3 = model.forward_batch(type(batch)(ids3, batch.kinds), "sft").hidden
    assert ((h3[ev] - h[ev]).abs().amax(-1) > 1e-6).all()  # every read reacts to its response


def test_cls_never_attends_template_or_padding():
    _, tok = tiny_model()
    e = encode_prompt(tok, PROMPTS[0])
    kinds = collate([e, encode_prompt(tok, PROMPTS[2])], 99, 2).kinds
    for stage in ("pretrain", "sft"):
        a = allowed(kinds, stage)
        cls_rows = kinds == Kind.CLS
        seen = a[cls_rows]  # (B, T)
        bad = (kinds == Kind.TEMPLATE) | (kinds == Kind.PAD)
        assert not (seen & bad).any()
        assert seen[kinds == Kind.QUERY].all() if False else (seen & (kinds == Kind.QUERY)).sum() == (kinds == Kind.QUERY).sum()


def test_position_ids_skip_cls_and_padding():
    kinds = torch.tensor([[Kind.PAD, Kind.CLS, Kind.TEMPLATE, Kind.QUERY, Kind.QUERY, Kind.RESPONSE]])
    assert position_ids(kinds, "sft").tolist() == [[0, 3, 0, 1, 2, 3]]
    assert position_ids(kinds, "pretrain").tolist() == [[0, 4, 0, 1, 2, 3]]


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_flex_mask_mod_matches_dense_mask(stage):
    pytest.importorskip("torch.nn.attention.flex_attention", reason="this torch has no FlexAttention")
    _, tok = tiny_model()
    encs = [encode_pair(tok, p, r) for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    for side in ("left", "right"):
        kinds = collate(encs, 99, 2, side=side).kinds
        torch.testing.assert_close(flex_dense_equivalent(kinds, stage), allowed(kinds, stage))


@pytest.mark.parametrize("arch", ["qwen2", "llama"])  # tied and untied embeddings
def test_lora_lm_logits_equal_peft_output_layer_except_the_masked_cls_column(arch):
    from safecls.model import LoraOptions

    torch.manual_seed(0)
    model, tok = tiny_model(arch)
    m = SafeClsModel.from_base(model, tok, lora=LoraOptions(r=4))
    for name, p in m.base.named_parameters():  # a trained [CLS] row: the delta differs from its init
        if "trainable_tokens_delta" in name:
            with torch.no_grad():
                p.add_(torch.randn_like(p))
    hidden = torch.randn(5, model.config.hidden_size, requires_grad=True)
    got = m.lm_logits(hidden)
    want = m.lm_head(hidden)  # peft's own path (reads the delta row when the output layer is tied)
    keep = torch.arange(got.shape[-1]) != m.cls_token_id
    torch.testing.assert_close(got[:, keep], want[:, keep], atol=1e-6, rtol=1e-6)
    assert torch.isneginf(got[:, m.cls_token_id]).all()
    # no gradient reaches the output layer's weights (LoRA: they are frozen; the [CLS] column is masked)
    got[:, keep].sum().backward()
    assert hidden.grad is not None and float(hidden.grad.abs().sum()) > 0
    out_params = [p for p in m.lm_head.parameters() if p.requires_grad]
    assert all(p.grad is None for p in out_params)


@pytest.mark.slow  # HF compiles flex_attention (~30 s on CPU, once per process)
@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_flex_attention_forward_matches_the_dense_routing(stage, tmp_path):
    from safecls.errors import ModelError

    for arch in ("llama", "qwen2"):
        model, tok = tiny_model(arch)
        m = SafeClsModel.from_base(model, tok)
        encs = [encode_pair(tok, p, r) for p, r in zip(PROMPTS, RESPONSES)]
        batch = collate(encs, m.cls_token_id, tok.pad_token_id, side="right")
        real = batch.kinds != Kind.PAD
        with torch.no_grad():  # PyTorch's FlexAttention has no CPU backward: training with it needs CUDA
            dense = m.run_backbone(batch.kinds, stage, input_ids=batch.input_ids)
            m.use_attention("flex")
            flex = m.run_backbone(batch.kinds, stage, input_ids=batch.input_ids)
        torch.testing.assert_close(flex[real], dense[real], atol=1e-5, rtol=1e-5)
        m.save_pretrained(tmp_path / arch)
        assert SafeClsModel.from_pretrained(tmp_path / arch).attention == "dense"  # a runtime choice, not saved
    gpt2, tok = tiny_model("gpt2")
    with pytest.raises(ModelError, match="attention: dense"):
        SafeClsModel.from_base(gpt2, tok).use_attention("flex")
