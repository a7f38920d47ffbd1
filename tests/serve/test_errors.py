"""Bad requests get OpenAI's error shape and the right status, and the server keeps serving after each."""

from __future__ import annotations

import httpx
import openai
import pytest

from safecls.serve import create_app
from tests.serve.conftest import KEY, MODEL, live_server, settings

MSGS = [{"role": "user", "content": "How do I bake bread?"}]
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def still_serving(live):
    yield
    r = live.client().chat.completions.create(model=MODEL, messages=MSGS, max_tokens=2)
    assert r.choices[0].message.content is not None


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def test_invalid_json(live, still_serving):
    r = httpx.post(live.url + "/v1/chat/completions", content=b'{"model": "tiny", "messages": [', headers=AUTH)
    err = _error(r, 400)
    assert err["code"] == "invalid_json" and err["type"] == "invalid_request_error"


def test_unknown_model(live, still_serving):
    with pytest.raises(openai.NotFoundError) as e:
        live.client().chat.completions.create(model="gpt-9", messages=MSGS)
    assert e.value.code == "model_not_found" and e.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        live.client().models.retrieve("gpt-9")


def test_prompt_over_the_context(live, still_serving):
    long = [{"role": "user", "content": "fox " * 400}]  # the tiny model's context is 256
    with pytest.raises(openai.BadRequestError) as e:
        live.client().chat.completions.create(model=MODEL, messages=long, max_tokens=4)
    assert e.value.code == "context_length_exceeded" and e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:  # a short prompt, but max_tokens past the context
        live.client().chat.completions.create(model=MODEL, messages=MSGS, max_tokens=250)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        live.client().moderations.create(input="fox " * 400)
    assert e.value.code == "context_length_exceeded" and e.value.param == "input"


@pytest.mark.parametrize(("field", "value"), [("max_tokens", -1), ("max_tokens", 0), ("temperature", 5),
                                                ("top_p", 0), ("n", 0), ("safety_policy", "paranoid"),
                                                ("safety_threshold", 1.5)])
def test_out_of_range_fields_name_their_param(live, still_serving, field, value):
    with pytest.raises(openai.BadRequestError) as e:
        live.client().chat.completions.create(model=MODEL, messages=MSGS, extra_body={field: value})
    assert e.value.param == field and e.value.type == "invalid_request_error"


def test_temperature_5_through_the_typed_argument(live, still_serving):
    with pytest.raises(openai.BadRequestError) as e:
        live.client().chat.completions.create(model=MODEL, messages=MSGS, temperature=5)
    assert e.value.param == "temperature"


def test_server_caps(live, still_serving):
    c = live.client()
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model=MODEL, prompt="Hi", max_tokens=live.state.settings.max_tokens_cap + 1)
    assert e.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=MODEL, messages=MSGS, n=live.state.settings.max_n + 1)
    assert e.value.param == "n"
    for kw, param in (({"logprobs": True}, "logprobs"), ({"presence_penalty": 1.0}, "presence_penalty"),
                      ({"stop": ""}, "stop"), ({"messages": [{"role": "user", "content": "  "}]}, "messages"),
                      ({"messages": []}, "messages")):
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(**{"model": MODEL, "messages": MSGS, **kw})
        assert e.value.param == param


def test_ten_megabyte_body(live, still_serving):
    huge = [{"role": "user", "content": "x" * (10 * 1024 * 1024)}]
    with pytest.raises(openai.APIStatusError) as e:
        live.client().chat.completions.create(model=MODEL, messages=huge)
    assert e.value.status_code == 413 and e.value.code == "request_too_large"


def test_chunked_body_over_the_limit(live, still_serving):
    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}]}'

    err = _error(httpx.post(live.url + "/v1/chat/completions", content=chunks(), headers=AUTH), 413)
    assert err["code"] == "request_too_large"


def test_api_keys(live, still_serving):
    with pytest.raises(openai.AuthenticationError) as e:
        live.client(api_key="sk-wrong").chat.completions.create(model=MODEL, messages=MSGS)
    assert e.value.code == "invalid_api_key"
    missing = httpx.post(live.url + "/v1/chat/completions", json={"model": MODEL, "messages": MSGS})
    assert _error(missing, 401)["code"] == "invalid_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert _error(httpx.get(live.url + "/v1/models", headers={"Authorization": "Basic abc"}), 401)["code"] == "invalid_api_key"
    assert httpx.get(live.url + "/health").status_code == 200  # open without a key
    # the key is checked before the body is read: no key and a broken body is a 401, not a 400
    assert _error(httpx.post(live.url + "/v1/completions", content=b"{oops"), 401)["code"] == "invalid_api_key"


def test_unknown_route_and_method(live, still_serving):
    assert _error(httpx.get(live.url + "/v1/nothing", headers=AUTH), 404)["code"] == "not_found"
    assert _error(httpx.get(live.url + "/v1/chat/completions", headers=AUTH), 405)["code"] == "method_not_allowed"


def test_safety_overrides_are_policed(model):
    with live_server(create_app(model, settings(min_policy="medium"))) as s:
        with pytest.raises(openai.BadRequestError) as e:
            s.client().chat.completions.create(model=MODEL, messages=MSGS, extra_body={"safety_policy": "low"})
        assert e.value.param == "safety_policy" and e.value.code == "safety_override_forbidden"
        r = s.client().chat.completions.create(model=MODEL, messages=MSGS, max_tokens=2,
                                               extra_body={"safety_policy": "high"})
        assert r.choices[0].model_extra["safety"]["policy"] == "high"
    with live_server(create_app(model, settings(allow_safety_overrides=False))) as s:
        with pytest.raises(openai.BadRequestError) as e:
            s.client().chat.completions.create(model=MODEL, messages=MSGS, extra_body={"safety_tau": 2})
        assert e.value.param == "safety_tau"


def test_no_keys_configured_means_no_auth(model):
    with live_server(create_app(model, settings(api_keys=[]))) as s:
        r = httpx.post(s.url + "/v1/chat/completions", json={"model": MODEL, "messages": MSGS, "max_tokens": 2})
        assert r.status_code == 200 and r.json()["object"] == "chat.completion"
