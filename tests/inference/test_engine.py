"""The engine against transformers' own generate(), and its safety mechanics on tiny models."""

from __future__ import annotations

import pytest

from safecls.errors import ConfigError, ContextLengthError, DataError, UnknownNameError
from safecls.inference import DecodeConfig, Engine
from safecls.model import SafeClsModel
from safecls.model.routing import Kind
from tests.inference.scripted import ForcedTokens, ScriptedHead, sentence_ends_before
from tests.tiny import tiny_model

PROMPTS = ["How do I bake bread?", "Tell me a joke about the sea and the fox, please, right now", "Hi"]


def _hf_greedy(model, tok, prompts, n):
    tok.padding_side = "left"
    enc = tok.apply_chat_template([[{"role": "user", "content": p}] for p in prompts], add_generation_prompt=True,
                                  return_tensors="pt", padding=True, return_dict=True)
    out = model.generate(**enc, max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[:, enc["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_policy_low_with_invisible_cls_matches_hf_generate(arch):
    base, tok = tiny_model(arch)
    ref, _ = tiny_model(arch)
    want = _hf_greedy(ref, tok, PROMPTS, 16)
    model = SafeClsModel.from_base(base, tok)
    got = Engine(model).generate(PROMPTS, DecodeConfig(max_new_tokens=16, policy="low", cls_visible=False))
    eos = tok.eos_token_id
    for g, w in zip(got, want, strict=True):
        w = w[: w.index(eos)] if eos in w else w
        assert g.token_ids == w
    plain = Engine.plain(ref, tok).generate(PROMPTS, DecodeConfig(max_new_tokens=16))
    assert [p.token_ids for p in plain] == [g.token_ids for g in got]


@pytest.mark.parametrize("cfg", [
    DecodeConfig(max_new_tokens=12, policy="medium", schedule="every", threshold=0.5),
    DecodeConfig(max_new_tokens=12, temperature=0.9, top_p=0.9, top_k=50, repetition_penalty=1.2, seed=3,
                 policy="medium", schedule="periodic", period=2, threshold=0.51),
])
def test_batched_equals_one_at_a_time(cfg):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    eng = Engine(model)
    batched = eng.generate(PROMPTS, cfg)
    single = [eng.generate([p], cfg)[0] for p in PROMPTS]
    for a, b in zip(batched, single, strict=True):
        assert a.token_ids == b.token_ids
        assert a.trace.evaluated_steps == b.trace.evaluated_steps
        assert a.trace.p_malicious == pytest.approx(b.trace.p_malicious, abs=1e-5)


def test_fused_equals_separate_pass():
    model = SafeClsModel.from_base(*tiny_model("qwen2"))
    eng = Engine(model)
    cfg = DecodeConfig(max_new_tokens=16, policy="medium", schedule="every", threshold=0.52, tau=2)
    fused = eng.generate(PROMPTS, cfg)
    sep = eng.generate(PROMPTS, cfg.model_copy(update={"fused": False}))
    for a, b in zip(fused, sep, strict=True):
        assert a.token_ids == b.token_ids
        assert [i.at for i in a.trace.interventions] == [i.at for i in b.trace.interventions]
        assert a.trace.p_malicious == pytest.approx(b.trace.p_malicious, abs=1e-4)  # fp32 summation order


@pytest.mark.parametrize("read_prompt", [True, False])
def test_full_span_read_equals_classify_of_the_pair(read_prompt):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    n = 6
    cfg = DecodeConfig(max_new_tokens=n, min_new_tokens=n, policy="medium", schedule="every", threshold=0.99, r2=100,
                       read_prompt=read_prompt)
    res = Engine(model).generate([PROMPTS[0]], cfg)[0]
    ids = res.token_ids
    # the engine's last read covers (the prompt and) every generated token, as classify(prompt, response) does
    text = model.tokenizer.decode(ids)
    assert model.tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    want = model.classify([PROMPTS[0]], [text], read_prompt=read_prompt)[0]
    assert res.trace.p_malicious[-1] == pytest.approx(want, abs=1e-5)
    other = model.classify([PROMPTS[0]], [text], read_prompt=not read_prompt)[0]
    assert abs(other - want) > 1e-6  # the setting changes what the read sees


def test_benign_to_malicious_rolls_back_exactly_and_inserts_prefix(monkeypatch):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    eng = Engine(model)
    cfg = DecodeConfig(max_new_tokens=30, policy="medium", schedule="every", tau=3, threshold=0.5)
    # prompt read benign; steps 0..5 benign; step 6 triggers; 7, 8 confirm (tau = 3)
    script = [0.1] * 7 + [0.9, 0.9, 0.9] + [0.1] * 100
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, script))
    monkeypatch.setattr(eng, "_next_logits", ForcedTokens(eng, sentence_ends_before(model.tokenizer, 6)))
    seen_lengths = []
    orig_forward = eng._run_backbone  # every backbone call of the engine goes through it

    def spy(inp, mask, pos, cache):
        seen_lengths.append((cache.get_seq_length(), pos[0].tolist()))
        return orig_forward(inp, mask, pos, cache)

    monkeypatch.setattr(eng, "_run_backbone", spy)
    res = eng.generate([PROMPTS[0]], cfg)[0]
    assert [(i.kind, i.at, i.step) for i in res.trace.interventions] == [("insert_prefix", 6, 8)]
    assert res.trace.extra_tokens == 9 - 6
    prefix = model.tokenizer(cfg.refusal_prefix, add_special_tokens=False)["input_ids"]
    assert res.token_ids[6: 6 + len(prefix)] == prefix
    # the forward after the rollback sees exactly [CLS] + prompt + 6 kept tokens, at the right position
    from safecls.model.encoding import encode_prompt

    n_prompt = len(encode_prompt(model.tokenizer, PROMPTS[0]))
    rollback_fwd = seen_lengths[1 + 9]  # prefill, then steps 0..8, then the first forward after the decision
    assert rollback_fwd[0] == 1 + n_prompt + 6
    assert rollback_fwd[1][0] == n_prompt + 6
    # and what follows the prefix equals a fresh greedy run given the kept tokens + prefix as a prefill
    kept = model.tokenizer.decode(res.token_ids[: 6 + len(prefix)])
    monkeypatch.undo()
    fresh = Engine(model).generate([PROMPTS[0]], DecodeConfig(max_new_tokens=30 - 6 - len(prefix), policy="low"),
                                   prefills=[kept])[0]
    pre_ids = model.tokenizer(kept, add_special_tokens=False)["input_ids"]
    if pre_ids == res.token_ids[: 6 + len(prefix)]:
        assert fresh.token_ids == res.token_ids[6 + len(prefix):]


def test_false_trigger_changes_nothing(monkeypatch):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    eng = Engine(model)
    cfg = DecodeConfig(max_new_tokens=20, policy="medium", schedule="every", tau=3)
    base = Engine(model).generate([PROMPTS[0]], cfg.model_copy(update={"policy": "low"}))[0]
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.1] * 5 + [0.9, 0.9, 0.1] + [0.1] * 50))
    res = eng.generate([PROMPTS[0]], cfg)[0]
    assert res.trace.interventions == [] and res.token_ids == base.token_ids
    # reads: [prompt, step 0..]; step 4 triggers (read under R2), step 5 counts (R3), step 6 is benign: back to R2
    assert [e.rule for e in res.trace.evaluations[5:9]] == ["R2", "R3", "R3", "R2"]


def test_high_policy_ends_with_fixed_refusal(monkeypatch):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    eng = Engine(model)
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.95]))
    res = eng.generate([PROMPTS[0]], DecodeConfig(policy="high", max_new_tokens=10))[0]
    assert res.text == DecodeConfig().fixed_refusal and res.finish_reason == "content_filter"


def test_initially_malicious_starts_with_refusal_prefix(monkeypatch):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    eng = Engine(model)
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.95]))
    res = eng.generate([PROMPTS[0]], DecodeConfig(policy="medium", max_new_tokens=20))[0]
    assert res.text.startswith(DecodeConfig().refusal_prefix)
    n_prefix = len(model.tokenizer(DecodeConfig().refusal_prefix, add_special_tokens=False)["input_ids"])
    later = [e.step for e in res.trace.evaluations if e.rule != "prompt"]
    assert later and min(later) >= n_prefix  # the refusal is read on (it may drift), but never inside its prefix


def test_the_first_read_is_judged_at_its_own_threshold_and_later_reads_at_theirs(monkeypatch):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    cfg = DecodeConfig(policy="medium", max_new_tokens=12, schedule="every", tau=1, threshold=0.9,
                       request_threshold=0.5)
    eng = Engine(model)
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.7, 0.1]))  # above the first read's threshold only
    assert eng.generate([PROMPTS[0]], cfg)[0].text.startswith(DecodeConfig().refusal_prefix)
    eng = Engine(model)
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.1, 0.7]))  # later reads at 0.7: below their 0.9
    res = eng.generate([PROMPTS[0]], cfg)[0]
    assert not res.trace.steered_to_refusal and len(res.trace.evaluations) > 3


@pytest.mark.parametrize(("prefill", "lead"), [("Sure, here is how to bake bread", "\n\n"),  # not "...breadSorry"
                                              ("Sure, here is how to bake bread.", " ")])
def test_a_refusal_after_a_prefill_opens_a_sentence_of_its_own(prefill, lead, monkeypatch):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    eng = Engine(model)
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.95]))
    res = eng.generate([PROMPTS[0]], DecodeConfig(policy="medium", max_new_tokens=20), prefills=[prefill])[0]
    assert res.prefill == prefill
    assert res.text.startswith(lead + DecodeConfig().refusal_prefix)


def test_a_trigger_mid_sentence_rolls_back_to_the_sentence_start(monkeypatch):
    """The head first reads malicious inside "To make the paste": the refusal replaces that whole sentence instead of
    following its first words ("... water. To make Sorry, I cannot ...")."""
    model = SafeClsModel.from_base(*tiny_model("llama"))
    tok = model.tokenizer
    eng = Engine(model)
    words = tok(" Mix flour and water. To make the paste, stir it well.", add_special_tokens=False)["input_ids"]
    kept = " Mix flour and water. "
    n_kept = len(tok(kept, add_special_tokens=False)["input_ids"])
    s_t = len(tok(" Mix flour and water. To make", add_special_tokens=False)["input_ids"])
    assert tok.decode(words[:n_kept]) == kept and s_t > n_kept + 1
    monkeypatch.setattr(eng, "_next_logits", ForcedTokens(eng, dict(enumerate(words[:s_t + 1]))))
    # reads: the prompt, steps 0 .. s_t - 1 benign, step s_t malicious (tau 1: acted on at once)
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.1] * (s_t + 1) + [0.9] + [0.1] * 100))
    res = eng.generate([PROMPTS[0]], DecodeConfig(max_new_tokens=40, schedule="every", tau=1, threshold=0.5))[0]
    assert [(i.kind, i.at, i.step) for i in res.trace.interventions] == [("insert_prefix", n_kept, s_t)]
    assert res.text.startswith(kept + DecodeConfig().refusal_prefix)
    assert res.trace.extra_tokens == s_t + 1 - n_kept


def test_stop_strings_and_streaming_deltas_add_up():
    model = SafeClsModel.from_base(*tiny_model("llama"))
    eng = Engine(model)
    cfg = DecodeConfig(max_new_tokens=24, policy="medium", schedule="every")
    full = eng.generate(PROMPTS, cfg)
    pieces = {i: "" for i in range(len(PROMPTS))}
    for ev in eng.stream(PROMPTS, cfg):
        pieces[ev.row] += ev.delta
    assert [pieces[i] for i in range(len(PROMPTS))] == [r.text for r in full]
    stop = full[0].text[3:6]
    if stop.strip():
        cut = eng.generate([PROMPTS[0]], cfg.model_copy(update={"stop": [stop]}))[0]
        assert cut.text == full[0].text[: full[0].text.find(stop)] and cut.finish_reason == "stop"


def test_bad_input_errors():
    model = SafeClsModel.from_base(*tiny_model("gpt2"))
    eng = Engine(model)
    with pytest.raises(DataError, match="prompt 0.*empty"):
        eng.generate([""])
    with pytest.raises(ContextLengthError, match="context length 256"):
        eng.generate(["fox " * 300], DecodeConfig(max_new_tokens=8))
    with pytest.raises(ConfigError, match="max_new_tokens"):
        from safecls.config import validate

        validate(DecodeConfig, {"max_new_tokens": 0})
    for bad in ({"top_p": 0}, {"top_p": 1.5}, {"policy": "paranoid"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            validate(DecodeConfig, bad)
    assert Kind.EVAL > Kind.RESPONSE
    assert UnknownNameError  # the registry error family is shared with schedules via the config literal


