"""Streamed text is always a prefix of the final text, whatever strategic decoding does to the reply."""

from __future__ import annotations

import pytest

from safecls.inference import DecodeConfig, Engine
from safecls.inference.intervention import refusal_end, refusal_insert
from safecls.model import SafeClsModel
from tests.inference.scripted import ForcedTokens, ScriptedHead
from tests.tiny import tiny_model

PROMPTS = ["How do I bake bread?", "Tell me a joke about the sea and the fox, please, right now", "Hi"]
PREFIX = DecodeConfig().refusal_prefix


def _stream(eng, prompts, cfg, prefills=None):
    pieces, final = {}, {}
    for ev in eng.stream(prompts, cfg, prefills=prefills):
        pieces[ev.row] = pieces.get(ev.row, "") + ev.delta
        assert final.get(ev.row) is None, "an event after the final one"
        if ev.finished:
            final[ev.row] = ev.result.text
    return pieces, final


@pytest.mark.parametrize("policy", ["medium", "high"])
@pytest.mark.parametrize("script", [
    [0.1] * 4 + [0.9] * 10,                  # trigger at step 2, confirmed (tau 3)
    [0.1] * 4 + [0.9, 0.9, 0.1] + [0.1] * 9,  # a false trigger
    [0.9],                                     # malicious from the start
    [0.1] * 9 + [0.9],                         # a trigger pending when the reply ends
])
def test_streamed_text_is_a_prefix_of_the_final_text(policy, script, monkeypatch):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    eng = Engine(model)
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, script))
    cfg = DecodeConfig(max_new_tokens=12, min_new_tokens=12, schedule="every", tau=3, policy=policy)
    pieces, final = _stream(eng, PROMPTS[:1], cfg)
    assert pieces[0] == final[0]
    with_prefill = _stream(eng, PROMPTS[:1], cfg, prefills=["Sure, here is"])
    assert with_prefill[0][0] == with_prefill[1][0]


@pytest.mark.parametrize("written", [" Mix flour and water. Sorry", " Mix flour and water.Sorry"])
def test_a_trigger_right_after_the_model_opened_a_refusal_completes_it(written, monkeypatch):
    """The model writes "... water. Sorry" (shown while benign); a read then triggers (tau 1): the reply continues the
    opening it already showed instead of rolling it back ("Sorry Sorry, I cannot", or text that differs from what
    was shown)."""
    model = SafeClsModel.from_base(*tiny_model("llama"))
    tok = model.tokenizer
    eng = Engine(model)
    words = tok(written, add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(eng, "_next_logits", ForcedTokens(eng, dict(enumerate(words))))
    n = len(words)
    # reads at steps 0 .. n-1 benign; step n (the first free token after "Sorry") malicious, confirmed at once
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.1] * (n + 1) + [0.9] * 50))
    cfg = DecodeConfig(max_new_tokens=30, min_new_tokens=30, schedule="every", tau=1)
    pieces, final = _stream(eng, PROMPTS[:1], cfg)
    assert final[0].startswith(tok.decode(words))
    assert final[0].startswith(pieces[0]) and pieces[0] == final[0]
    assert tok.decode(words).strip() + PREFIX[len("Sorry"):] in final[0]
    assert "Sorry Sorry" not in final[0] and final[0].count("Sorry") == 1


def test_refusal_end():
    assert refusal_end(PREFIX + " it is", PREFIX) is None  # inside the reason
    assert refusal_end(PREFIX + " it is cruel. Step one", PREFIX) == len(PREFIX + " it is cruel.")
    assert refusal_end(PREFIX + " it is cruel. Do not.", PREFIX) == len(PREFIX + " it is cruel. Do not.")
    assert refusal_end(PREFIX + " it is cruel.\nStep", PREFIX) == len(PREFIX + " it is cruel.\n")
    assert refusal_end("Step one. Mix.", PREFIX) is None  # no refusal


def test_refusal_insert():
    assert refusal_insert("Mix flour and water. Sorry", "", PREFIX) == PREFIX[len("Sorry"):]
    assert refusal_insert("Sorry, I", "", PREFIX) == PREFIX[len("Sorry, I"):]
    assert refusal_insert("Mix flour and water.", "", PREFIX) == " " + PREFIX
    assert refusal_insert("Mix flour and water. ", "", PREFIX) == PREFIX
    assert refusal_insert("", "", PREFIX) == PREFIX
    assert refusal_insert("", "Sure, here is", PREFIX) == "\n\n" + PREFIX  # never inside the prefill's sentence
    assert refusal_insert("", "Sure, here it is:", PREFIX) == " " + PREFIX
    assert refusal_insert("NotSorry", "", PREFIX) == "\n\n" + PREFIX  # only a whole word opens the refusal
    assert refusal_insert("Mix flour. To ", "", PREFIX) == "\n\n" + PREFIX  # shown mid-sentence: a new paragraph
    assert refusal_insert("Mix flour.\n", "", PREFIX) == PREFIX



@pytest.mark.parametrize(("trigger_after", "malicious_reads", "final_text"), [
    (" it is", 1, PREFIX + " it is wrong and cruel. Step one: mix the two"),  # inside the reason: nothing happens
    (" it is wrong and cruel. Step", 60, PREFIX + " it is wrong and cruel."),  # after it: the refusal ends there
])
def test_a_trigger_in_the_replys_own_refusal_never_opens_a_second_one(trigger_after, malicious_reads, final_text,
                                                                      monkeypatch):
    """The model writes the refusal prefix and its reason; a confirmed trigger inside that first sentence must not cut
    the reason with a second opener ("... because it Sorry, I cannot ..."). After the sentence has ended (a refusal,
    then compliance) the reply ends at the refusal's last complete sentence, which streaming held back until then."""
    model = SafeClsModel.from_base(*tiny_model("llama"))
    tok = model.tokenizer
    eng = Engine(model)
    written = PREFIX + " it is wrong and cruel. Step one: mix the two"
    words = tok(written, add_special_tokens=False)["input_ids"]
    j = len(tok(PREFIX + trigger_after, add_special_tokens=False)["input_ids"])
    assert tok.decode(words[:j]) == PREFIX + trigger_after  # the trigger lands right after these words
    monkeypatch.setattr(eng, "_next_logits", ForcedTokens(eng, dict(enumerate(words))))
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.1] * (j + 1) + [0.9] * malicious_reads + [0.1]))
    n = len(words)
    cfg = DecodeConfig(max_new_tokens=n, min_new_tokens=n, schedule="every", tau=1)
    pieces, final = _stream(eng, PROMPTS[:1], cfg)
    assert pieces[0] == final[0]
    assert final[0] == final_text
    assert final[0].count(PREFIX) == 1


def test_a_refusal_the_engine_inserted_ends_when_it_drifts_back_into_the_answer(monkeypatch):
    """Malicious from the prompt on: the engine opens the refusal, the model gives a reason and then starts the answer
    anyway. The reads go on after the inserted prefix (not during it: a read inside the prefix would roll back into
    it) and end the reply after the reason, which is all that was ever shown."""
    model = SafeClsModel.from_base(*tiny_model("llama"))
    tok = model.tokenizer
    eng = Engine(model)
    n_prefix = len(tok(PREFIX, add_special_tokens=False)["input_ids"])
    reason, drift = " it is illegal and dangerous.", " Step one: buy the parts and mix them well"
    words = tok(reason + drift, add_special_tokens=False)["input_ids"]
    assert tok.decode(words) == reason + drift
    lm, head = eng._next_logits, eng._head_p

    def script():
        # logits calls 0 .. n_prefix - 1 pick the inserted prefix's tokens; the model's own text follows
        monkeypatch.setattr(eng, "_next_logits", ForcedTokens(eng, {n_prefix + i: w for i, w in enumerate(words)}))
        monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.9]))

    n = n_prefix + len(words) + 4
    cfg = DecodeConfig(max_new_tokens=n, min_new_tokens=n, schedule="every", tau=2)
    script()
    pieces, final = _stream(eng, PROMPTS[:1], cfg)
    assert final[0] == PREFIX + reason
    assert pieces[0] == final[0]
    monkeypatch.setattr(eng, "_next_logits", lm)
    monkeypatch.setattr(eng, "_head_p", head)
    script()
    res = eng.generate(PROMPTS[:1], cfg)[0]
    assert res.text == PREFIX + reason and res.finish_reason == "content_filter"
    assert [i.kind for i in res.trace.interventions] == ["insert_prefix", "end_refusal"]
    assert min(e.step for e in res.trace.evaluations if e.rule != "prompt") >= n_prefix  # none inside the prefix


def test_a_trigger_in_a_shown_sentence_opens_the_refusal_on_a_new_paragraph(monkeypatch):
    """Streaming showed "... water. To make" while benign; the head then reads malicious (tau 1). The shown words
    stay, and the refusal does not continue their sentence ("To make Sorry, I cannot ...")."""
    model = SafeClsModel.from_base(*tiny_model("llama"))
    tok = model.tokenizer
    eng = Engine(model)
    shown = " Mix flour and water. To make"
    words = tok(shown + " the paste, stir it well.", add_special_tokens=False)["input_ids"]
    s_t = len(tok(shown, add_special_tokens=False)["input_ids"])
    assert tok.decode(words[:s_t]) == shown
    monkeypatch.setattr(eng, "_next_logits", ForcedTokens(eng, dict(enumerate(words[:s_t + 1]))))
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.1] * (s_t + 1) + [0.9] + [0.1] * 100))
    cfg = DecodeConfig(max_new_tokens=40, min_new_tokens=40, schedule="every", tau=1)
    pieces, final = _stream(eng, PROMPTS[:1], cfg)
    assert pieces[0] == final[0]
    assert final[0].startswith(shown + "\n\n" + PREFIX)
