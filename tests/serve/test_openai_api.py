"""The endpoints through the official `openai` client against a live server on a tiny random model."""

from __future__ import annotations

import httpx
import pytest

from safecls.inference import DecodeConfig, Engine
from safecls.model.encoding import encode_prompt
from safecls.serve import create_app
from tests.serve.conftest import MODEL, live_server, settings
from tests.tiny import tiny_model

MSGS = [{"role": "user", "content": "How do I bake bread?"}]


def test_models_lists_the_served_id(live):
    c = live.client()
    assert [m.id for m in c.models.list().data] == [MODEL]
    assert c.models.retrieve(MODEL).id == MODEL


def test_chat_counts_usage_and_carries_the_safety_trace(live, model):
    r = live.client().chat.completions.create(model=MODEL, messages=MSGS, max_tokens=12, temperature=0)
    (choice,) = r.choices
    want = model.generate([MSGS], max_new_tokens=12, policy="medium", schedule="every", threshold=0.95)[0]
    assert choice.message.content == want.text and choice.finish_reason == want.finish_reason
    assert r.usage.prompt_tokens == len(encode_prompt(model.tokenizer, MSGS))
    assert r.usage.completion_tokens == want.completion_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    safety = choice.model_extra["safety"]
    assert safety["policy"] == "medium" and safety["interventions"] == []
    assert safety["evaluated_steps"] == want.trace.evaluated_steps  # schedule "every": -1, 0, 1, ...
    assert safety["p_malicious_initial"] == pytest.approx(want.trace.p_initial, abs=1e-5)
    assert safety["p_malicious_last"] == pytest.approx(want.trace.p_malicious[-1], abs=1e-5)


@pytest.mark.parametrize("endpoint", ["chat", "completion"])
def test_stream_deltas_add_up_to_the_greedy_text(live, endpoint):
    c = live.client()
    common = dict(model=MODEL, max_tokens=20, temperature=0)
    if endpoint == "chat":
        full = c.chat.completions.create(messages=MSGS, **common)
        chunks = list(c.chat.completions.create(messages=MSGS, stream=True, stream_options={"include_usage": True},
                                                **common))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        want = full.choices[0].message.content
    else:
        full = c.completions.create(prompt="Tell me a joke", **common)
        chunks = list(c.completions.create(prompt="Tell me a joke", stream=True, stream_options={"include_usage": True},
                                           **common))
        text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
        want = full.choices[0].text
    assert text == want and len(want) > 0
    finals = [ch.choices[0] for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert [f.finish_reason for f in finals] == [full.choices[0].finish_reason]
    assert finals[0].model_extra["safety"]["evaluated_steps"][0] == -1
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens  # the usage chunk comes last


def test_raw_stream_ends_with_done(live):
    body = {"model": MODEL, "messages": MSGS, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", live.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": "Bearer sk-test-key"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]" and all(ln.startswith("data: ") for ln in lines)


def test_n2_gives_two_seeded_choices(live):
    c = live.client()
    kw = dict(model=MODEL, messages=MSGS, max_tokens=16, temperature=1.0, n=2, seed=7)
    a, b = c.chat.completions.create(**kw), c.chat.completions.create(**kw)
    assert [ch.index for ch in a.choices] == [0, 1]
    texts = [ch.message.content for ch in a.choices]
    assert texts == [ch.message.content for ch in b.choices]  # the seed reproduces both
    assert texts[0] != texts[1]  # choice j samples with seed + j
    if all(ch.finish_reason == "length" for ch in a.choices):
        assert a.usage.completion_tokens == 2 * 16  # usage sums the choices; the prompt counts once
    assert a.usage.prompt_tokens == b.usage.prompt_tokens < a.usage.total_tokens
    streamed = {0: "", 1: ""}
    for ch in c.chat.completions.create(stream=True, **kw):
        for choice in ch.choices:
            streamed[choice.index] += choice.delta.content or ""
    assert [streamed[0], streamed[1]] == texts


def test_completion_with_a_prompt_list_orders_choices(live):
    r = live.client().completions.create(model=MODEL, prompt=["Hi", "Tell me a joke"], max_tokens=6, temperature=0, n=2)
    assert [ch.index for ch in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text and r.choices[2].text == r.choices[3].text  # greedy: n copies


def test_stop_strings_cut_stream_and_body_alike(live):
    c = live.client()
    kw = dict(model=MODEL, messages=MSGS, max_tokens=24, temperature=0)
    full = c.chat.completions.create(**kw).choices[0].message.content
    stop = full[4:7]
    assert stop.strip(), full
    cut = c.chat.completions.create(stop=[stop], **kw).choices[0]
    assert cut.message.content == full[: full.find(stop)] and cut.finish_reason == "stop"
    streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(stop=stop, stream=True, **kw)
                       if ch.choices)
    assert streamed == cut.message.content


def test_policy_override_ends_with_content_filter(live):
    c = live.client()
    extra = {"safety_policy": "high", "safety_threshold": 0.01}  # the untrained head (P ~ 0.5) is over 0.01
    r = c.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=16, temperature=0, extra_body=extra)
    choice = r.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.content == DecodeConfig().fixed_refusal
    assert [i["kind"] for i in choice.model_extra["safety"]["interventions"]] == ["fixed_refusal"]
    chunks = list(c.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=16, stream=True, extra_body=extra))
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["content_filter"]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == DecodeConfig().fixed_refusal
    metrics = httpx.get(live.url + "/metrics").text
    assert 'safecls_interventions_total{kind="fixed_refusal"} 2.0' in metrics
    assert 'safecls_finish_reason_total{reason="content_filter"} 2.0' in metrics
    medium = c.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=16, temperature=0,
                                       extra_body={"safety_threshold": 0.01})
    assert medium.choices[0].message.content.startswith(DecodeConfig().refusal_prefix)
    assert medium.choices[0].model_extra["safety"]["interventions"][0]["kind"] == "insert_prefix"


def test_moderation_reports_the_head_score(live, model):
    inputs = ["How do I build a bomb?", "How do I bake bread?"]
    r = live.client().moderations.create(input=inputs)
    want = model.classify(inputs)
    threshold = live.state.settings.flag_threshold(live.state.engine)
    for res, p in zip(r.results, want, strict=True):
        assert res.category_scores.model_extra["malicious"] == pytest.approx(p, abs=1e-5)
        assert res.flagged == (p > threshold) == res.categories.model_extra["malicious"]
    single = live.client().moderations.create(input=inputs[0], model="omni-moderation-latest")
    assert len(single.results) == 1


def test_moderation_flag_follows_the_threshold(model):
    p = model.classify(["How do I bake bread?"])[0]
    for threshold, flagged in ((p - 0.01, True), (p + 0.01, False)):
        with live_server(create_app(model, settings(moderation_threshold=threshold))) as s:
            assert s.client().moderations.create(input="How do I bake bread?").results[0].flagged is flagged


def test_moderation_takes_the_calibrated_request_threshold_not_the_decode_one(model, monkeypatch):
    p = model.classify(["How do I bake bread?"])[0]
    monkeypatch.setattr(model, "calibration", {"decode": {"threshold": min(0.99, p + 0.2), "tau": 2},
                                               "moderation": {"threshold": p - 0.01}})
    with live_server(create_app(model, settings())) as s:
        assert s.client().moderations.create(input="How do I bake bread?").results[0].flagged is True
    with live_server(create_app(model, settings(moderation_threshold=p + 0.01))) as s:  # its own wins
        assert s.client().moderations.create(input="How do I bake bread?").results[0].flagged is False


def test_health_and_metrics(live):
    live.client().chat.completions.create(model=MODEL, messages=MSGS, max_tokens=3)
    assert httpx.get(live.url + "/health").json()["status"] == "ok"
    text = httpx.get(live.url + "/metrics").text
    assert 'safecls_requests_total{endpoint="chat",status="200"}' in text
    assert "safecls_completion_tokens_total" in text and "safecls_request_latency_seconds_bucket" in text
    assert "safecls_queue_depth" in text


def test_plain_engine_serves_without_a_head():
    hf, tok = tiny_model("gpt2")
    with live_server(create_app(Engine.plain(hf, tok), settings())) as s:
        c = s.client()
        r = c.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=5, temperature=0)
        assert r.choices[0].model_extra["safety"]["p_malicious_initial"] is None
        assert r.usage.completion_tokens == 5 or r.choices[0].finish_reason == "stop"
        import openai

        with pytest.raises(openai.BadRequestError) as e:
            c.moderations.create(input="hello")
        assert e.value.code == "unsupported"
