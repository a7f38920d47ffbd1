"""OpenAITarget through the official `openai` client, against an in-process fake server (httpx MockTransport)."""

from __future__ import annotations

import json

import pytest

from safecls.attacks import ATTACKS, AttackItem, OpenAITarget, TargetError
from safecls.errors import ConfigError
from safecls.inference.config import DecodeConfig

openai = pytest.importorskip("openai", reason="the openai client is a dev extra")
httpx = pytest.importorskip("httpx", reason="httpx comes with openai")


def _server(requests: list[dict], reply=lambda body: "an answer", status: int = 200):
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append(body)
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "boom", "type": "server_error"}})
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": reply(body)}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        })

    return handle


def _target(handler, **kwargs) -> OpenAITarget:
    client = openai.OpenAI(base_url="http://test/v1", api_key="k", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    return OpenAITarget("m", base_url="http://test/v1", api_key="k", client=client, concurrency=1, **kwargs)


def test_decode_settings_map_to_the_request():
    seen: list[dict] = []
    t = _target(_server(seen))
    [g] = t.generate(["hi"], DecodeConfig(max_new_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop=["END"]))
    assert g.text == "an answer" and g.finish_reason == "length" and g.usage["completion_tokens"] == 2
    body = seen[0]
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"], body["stop"]) == (7, 0.5, 0.9, 3, ["END"])
    assert "top_k" not in body and "repetition_penalty" not in body  # defaults are not sent
    t.generate(["hi"], DecodeConfig(top_k=5, repetition_penalty=1.2))
    assert seen[1]["top_k"] == 5 and seen[1]["repetition_penalty"] == 1.2


def test_prefill_is_a_continued_assistant_message_and_only_the_continuation_returns():
    seen: list[dict] = []
    t = _target(_server(seen, reply=lambda b: b["messages"][-1]["content"] + " and more"), prefill="continue_final_message")
    [g] = t.generate(["hi"], None, prefills=["Sure, here"])
    assert seen[0]["messages"][-1] == {"role": "assistant", "content": "Sure, here"}
    assert seen[0]["continue_final_message"] is True and seen[0]["add_generation_prompt"] is False
    assert g.text == " and more" and g.prefill == "Sure, here"


def test_an_endpoint_without_prefill_refuses_prefills():
    t = _target(_server([]))
    with pytest.raises(ConfigError, match="prefill"):
        t.generate(["hi"], None, prefills=["Sure"])


def test_a_failed_request_raises_and_is_never_a_response():
    t = _target(_server([], status=500))
    with pytest.raises(TargetError, match="request failed"):
        t.generate(["hi"])


def test_a_black_box_attack_runs_against_an_endpoint():
    seen: list[dict] = []
    t = _target(_server(seen))
    grid = {"greedy": True, "temperatures": [0.5], "top_ps": [], "top_ks": [10]}
    recs = ATTACKS.get("decoding")().run(t, [AttackItem(id="e/0", prompt="hi")], {"grid": grid, "system_modes": ["sys"]})
    assert [r.variant for r in recs] == ["greedy/sys", "temperature=0.5/sys", "top_k=10/sys"]
    assert [b["temperature"] for b in seen] == [0.0, 0.5, 1.0] and seen[2]["top_k"] == 10
    assert all(b["messages"][0]["role"] == "system" for b in seen) and recs[0].trace is None
