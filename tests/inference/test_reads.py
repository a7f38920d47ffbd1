"""When the engine reads the head, what each read sees, and what a malicious read does, on tiny real models."""

from __future__ import annotations

import pytest
import torch

from safecls.inference import DecodeConfig, Engine
from safecls.model import SafeClsModel
from safecls.model.encoding import collate, encode_prompt
from safecls.model.routing import Kind
from safecls.model.safecls_model import FINAL
from tests.inference.scripted import ForcedTokens, ScriptedHead, sentence_ends_before
from tests.tiny import tiny_model

PROMPT = "How do I bake bread?"
SCHEDULES = ("first", "every", "periodic", "annealing")


@pytest.fixture(scope="module", params=[(FINAL,), (1, FINAL)], ids=["final-state head", "two-layer head"])
def model(request):
    m = SafeClsModel.from_base(*tiny_model("llama"))
    if request.param != (FINAL,):
        torch.manual_seed(0)
        m.set_head(torch.nn.Linear(len(request.param) * m.hidden_size, 2), request.param)
    return m


def _prefill_of(model, n: int) -> str:
    """A prefill text that is exactly n tokens long and re-tokenizes to itself."""
    tok = model.tokenizer
    ids = tok("Sure, here is how to bake bread. Step 1: mix flour and water and salt and yeast " * 4,
              add_special_tokens=False)["input_ids"][:n]
    text = tok.decode(ids)
    assert len(tok(text, add_special_tokens=False)["input_ids"]) == n
    return text


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_reads_count_from_the_first_generated_token_whatever_the_prefill(model, schedule, monkeypatch):
    cfg = DecodeConfig(max_new_tokens=60, min_new_tokens=60, schedule=schedule, period=10, anneal_dense=4,
                       anneal_stop=50)
    seen = []
    for n in (0, 5, 20, 40):
        eng = Engine(model)
        monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.1]))
        res = eng.generate([PROMPT], cfg, prefills=[_prefill_of(model, n)] if n else None)[0]
        rules = [e.rule for e in res.trace.evaluations]
        assert rules[0] == "prompt"
        if n:  # the prefill is attacker text: read right after the prompt, whole
            assert res.trace.evaluations[1].rule == "prefill" and res.trace.evaluations[1].span == (-n, 0)
        seen.append([e.step for e in res.trace.evaluations if e.step >= 0])
    assert seen[0] == seen[1] == seen[2] == seen[3]
    want = {"first": [], "every": list(range(60)), "periodic": list(range(9, 60, 10)),
            "annealing": [0, 1, 2, 3, 5, 9, 17, 33, 49]}[schedule]
    assert seen[0] == want


@pytest.mark.parametrize("schedule", ["every", "periodic", "annealing"])
@pytest.mark.parametrize("length", [23, 50])
def test_no_generated_token_goes_unread_up_to_where_the_schedule_stops(model, schedule, length, monkeypatch):
    """Replies that end by length and by EOS (a token chosen as EOS mid-reply), with r2 shorter than every gap."""
    cfg = DecodeConfig(max_new_tokens=length, min_new_tokens=length, schedule=schedule, period=7, anneal_dense=2,
                       anneal_stop=40, r2=3)
    eng = Engine(model)
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.1]))
    res = eng.generate([PROMPT], cfg)[0]
    read = set()
    for e in res.trace.evaluations[1:]:
        read |= set(range(*e.span))
    assert set(range(min(length, 40))) <= read
    # the same reply ended by EOS at step 17: the last read covers its unread tail
    eos_at = 17
    eng2 = Engine(model)
    monkeypatch.setattr(eng2, "_head_p", ScriptedHead(eng2, [0.1]))
    monkeypatch.setattr(eng2, "_next_logits", ForcedTokens(eng2, {eos_at: model.tokenizer.eos_token_id}))
    short = eng2.generate([PROMPT], cfg.model_copy(update={"min_new_tokens": 0}))[0]
    assert short.token_ids == res.token_ids[:eos_at] and short.finish_reason == "stop"
    read = set()
    for e in short.trace.evaluations[1:]:
        read |= set(range(*e.span))
    assert set(range(eos_at)) <= read


def test_a_pending_trigger_is_acted_on_when_the_reply_ends_by_eos(model, monkeypatch):
    cfg = DecodeConfig(max_new_tokens=30, schedule="every", tau=3)
    eng = Engine(model)
    eos_at = 12
    forced = sentence_ends_before(model.tokenizer, 11)
    plain = Engine(model)
    monkeypatch.setattr(plain, "_next_logits", ForcedTokens(plain, forced))
    free = plain.generate([PROMPT], cfg.model_copy(update={"policy": "low", "min_new_tokens": 30}))[0]
    monkeypatch.setattr(eng, "_next_logits", ForcedTokens(eng, forced | {eos_at: model.tokenizer.eos_token_id}))
    # reads: prompt, steps 0..10 benign, step 11 malicious (one of tau = 3), then EOS at step 12
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.1] * 12 + [0.9] + [0.1] * 100))
    res = eng.generate([PROMPT], cfg)[0]
    assert [(i.kind, i.at, i.step) for i in res.trace.interventions] == [("insert_prefix", 11, 11)]
    kept = model.tokenizer.decode(free.token_ids[:11])
    assert res.text.startswith(kept) and cfg.refusal_prefix in res.text


def test_a_pending_trigger_is_acted_on_at_the_length_limit(model, monkeypatch):
    cfg = DecodeConfig(max_new_tokens=10, min_new_tokens=10, schedule="every", tau=3)
    eng = Engine(model)
    monkeypatch.setattr(eng, "_next_logits", ForcedTokens(eng, sentence_ends_before(model.tokenizer, 9)))
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.1] * 10 + [0.9] * 100))  # step 9 (the last) malicious
    res = eng.generate([PROMPT], cfg)[0]
    assert [(i.kind, i.at) for i in res.trace.interventions] == [("insert_prefix", 9)]
    assert res.text.rstrip().endswith(cfg.refusal_prefix)  # the inserted prefix is never cut by the limit


def test_high_ends_the_reply_at_the_first_malicious_read(model, monkeypatch):
    cfg = DecodeConfig(max_new_tokens=20, min_new_tokens=20, schedule="every", tau=3, policy="high")
    plain, eng = Engine(model), Engine(model)
    for e in (plain, eng):
        monkeypatch.setattr(e, "_next_logits", ForcedTokens(e, sentence_ends_before(model.tokenizer, 5)))
    free = plain.generate([PROMPT], cfg.model_copy(update={"policy": "low"}))[0]
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.1] * 6 + [0.9]))  # step 5 malicious: no tau wait
    res = eng.generate([PROMPT], cfg)[0]
    assert [(i.kind, i.at, i.step) for i in res.trace.interventions] == [("fixed_refusal", 5, 5)]
    kept = model.tokenizer.decode(free.token_ids[:5])
    assert kept.endswith("\n") and res.text == kept + cfg.fixed_refusal  # a new line: no space before it
    assert res.finish_reason == "content_filter"


def test_mixed_fused_values_in_one_batch_are_rejected(model):
    with pytest.raises(ValueError, match="fused"):
        Engine(model).generate([PROMPT, PROMPT], [DecodeConfig(fused=True), DecodeConfig(fused=False)])


def _reference_read(model, prompt_ids, prompt_kinds, reply_ids, lo, hi, read_prompt):
    """An independent [CLS] read: a full forward (no cache) of [CLS] + prompt + reply + EVAL, where the EVAL row is
    built here by hand to see the prompt's content (if read_prompt) and reply steps [lo, hi); the head over the
    states of its layers there."""
    ids = [model.cls_token_id] + prompt_ids + reply_ids + [model.cls_token_id]
    T = len(ids)
    allow = torch.tril(torch.ones(T, T, dtype=torch.bool))
    allow[:, 0] = False
    allow[0, :] = False
    allow[0, 0] = True
    for j, k in enumerate(prompt_kinds):  # the prompt's [CLS] reads the query content (sft)
        allow[0, 1 + j] = k == Kind.QUERY
    for j in range(len(reply_ids)):  # reply tokens see the [CLS] (sft)
        allow[1 + len(prompt_ids) + j, 0] = True
    allow[-1, :] = False
    allow[-1, -1] = True
    for j, k in enumerate(prompt_kinds):
        allow[-1, 1 + j] = bool(read_prompt and k == Kind.QUERY)
    for s in range(max(lo, 0), hi):
        allow[-1, 1 + len(prompt_ids) + s] = True
    pos = list(range(len(prompt_ids) + len(reply_ids)))
    position = [len(prompt_ids)] + pos + [len(prompt_ids) + len(reply_ids)]  # the read sits past the newest token
    mask = torch.zeros(1, 1, T, T)
    mask[0, 0][~allow] = torch.finfo(torch.float32).min
    with torch.no_grad():
        out = model.backbone(input_ids=torch.tensor([ids]), attention_mask=mask, position_ids=torch.tensor([position]),
                             use_cache=False, output_hidden_states=True)
        states = [out.last_hidden_state if k == FINAL else out.hidden_states[k] for k in model.head_layers]
        return float(torch.softmax(model.head(torch.cat([h[0, -1] for h in states])), -1)[1])


@pytest.mark.parametrize("read_prompt", [True, False])
def test_r2_and_r3_reads_equal_an_independent_full_forward_of_their_span(model, read_prompt, monkeypatch):
    cfg = DecodeConfig(max_new_tokens=24, min_new_tokens=24, schedule="every", r2=4, r3=3, tau=9,
                       read_prompt=read_prompt)
    eng = Engine(model)
    # step 11 triggers R3 at S_t = 11, steps 12..16 count (tau 9 is never reached), step 17 is a false trigger
    head = ScriptedHead(eng, [0.1] * 12 + [0.9] * 6 + [0.1] * 100)
    real = []
    orig = eng._head_p

    def spy(h):
        real.append(orig(h))
        return head(h)

    monkeypatch.setattr(eng, "_head_p", spy)
    res = eng.generate([PROMPT], cfg)[0]
    enc = encode_prompt(model.tokenizer, PROMPT)
    checked = {"R2": 0, "R3": 0}
    for e, p in zip(res.trace.evaluations[1:], real[1:], strict=True):
        if e.rule not in checked:
            continue
        want = _reference_read(model, enc.ids, enc.kinds, res.token_ids[: e.step + 1], *e.span, read_prompt)
        assert float(p[0]) == pytest.approx(want, abs=1e-4), e  # fp32, cached vs uncached summation order
        checked[e.rule] += 1
    assert checked["R2"] >= 5 and checked["R3"] >= 5
    assert res.trace.interventions == []
    assert [e.span for e in res.trace.evaluations if e.rule == "R3"][:5] == [(7, 13), (7, 14), (7, 15), (7, 15), (7, 15)]


def test_sft_routing_unchanged_by_padding_and_reads(model):
    """A sanity anchor for the reference above: classify() of a prompt equals the engine's prompt read."""
    eng = Engine(model)
    res = eng.generate([PROMPT, "Hi"], DecodeConfig(max_new_tokens=2, policy="medium", threshold=0.99))
    want = model.classify([PROMPT, "Hi"])
    assert [r.trace.p_initial for r in res] == pytest.approx(want, abs=1e-5)
    b = collate([encode_prompt(model.tokenizer, "Hi")], model.cls_token_id, model.tokenizer.pad_token_id)
    assert b.kinds[0, 0] == Kind.CLS
