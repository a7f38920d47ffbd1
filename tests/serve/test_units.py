"""Pieces that need no server: stop-string holdback, error params, settings and the `safecls serve` flags."""

from __future__ import annotations

import argparse

import pytest

from safecls.serve.commands import API_KEY_ENV, register, settings_from_args
from safecls.serve.completions import _StopHoldback
from safecls.serve.protocol import ChatCompletionRequest, ServeError
from safecls.serve.settings import ServeSettings


@pytest.mark.parametrize(("deltas", "stops", "final"), [
    (["Hello", " wor", "ld\n", "\nBye"], ["\n\n"], "Hello world"),  # "\n" held back, then dropped by the cut
    (["a", "b", "c"], [], "abc"),
    (["x EN", "D y"], ["END"], "x "),
    (["ab", "ab", "c"], ["abd", "abc"], "ab"),
])
def test_holdback_never_streams_text_the_stop_cut_removes(deltas, stops, final):
    h = _StopHoldback(stops)
    sent = "".join(h.feed(d) for d in deltas)
    assert final.startswith(sent)
    assert sent + h.finish(final) == final


def test_holdback_releases_a_false_alarm():
    h = _StopHoldback(["\n\n"])
    assert h.feed("a\n") == "a"
    assert h.feed("b") == "\nb"


def _parse(argv):
    p = argparse.ArgumentParser()
    register(p.add_subparsers())
    return p.parse_args(["serve", *argv])


def test_serve_flags_build_settings(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    args = _parse(["--model", "runs/sft/final", "--port", "9001", "--api-key", "k1", "--api-key", "k2", "--max-batch",
                   "4", "--policy", "high", "--preset", "authors", "--no-fused", "--max-body-mb", "0.5"])
    s = settings_from_args(args)
    assert (s.host, s.port, s.max_batch, s.model_name) == ("127.0.0.1", 9001, 4, "final")
    assert s.key_values() == ["k1", "k2"] and "k1" not in repr(s)  # keys never show up in logs
    d = s.decode_defaults
    assert (d.policy, d.r2, d.r3, d.tau, d.fused) == ("high", 15, 10, 3, False)
    assert s.max_body_bytes == 512 * 1024


def test_untrained_head_defaults_to_policy_low_and_env_keys(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "a, b,")
    s = settings_from_args(_parse(["--model", "untrained"]), untrained_head=True)
    assert s.decode_defaults.policy == "low" and s.key_values() == ["a", "b"] and s.model_name == "safecls-untrained"
    assert settings_from_args(_parse(["--model", "untrained", "--api-key", "c"])).key_values() == ["c"]  # flag wins
    d = settings_from_args(_parse(["--model", "default"])).decode_defaults
    assert d.policy == "medium" and (d.threshold, d.tau) == (None, None)  # the checkpoint's calibrated values


def test_bad_flag_values_are_config_errors():
    from safecls.errors import ConfigError

    with pytest.raises(ConfigError, match="max_batch"):
        settings_from_args(_parse(["--model", "x", "--max-batch", "0"]))
    with pytest.raises(ConfigError, match="threshold"):
        settings_from_args(_parse(["--model", "x", "--threshold", "1.5"]))


def test_fused_comes_from_the_server_and_overrides_map_to_decode_fields():
    s = ServeSettings(decode_defaults={"fused": False, "policy": "medium"}, min_policy="medium")
    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], safety_tau=2,
                                safety_schedule="every", fused=True, temperature=0.3)
    cfg = req.to_decode_config(s, max_tokens=7, seed=3)
    assert (cfg.fused, cfg.tau, cfg.schedule, cfg.temperature, cfg.max_new_tokens, cfg.seed) == (False, 2, "every", 0.3, 7, 3)
    with pytest.raises(ServeError) as e:
        ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}],
                              safety_policy="low").to_decode_config(s, 7, None)
    assert e.value.body.param == "safety_policy" and e.value.status == 400


def test_content_parts_join_and_non_text_parts_are_refused():
    req = ChatCompletionRequest(model="m", messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert req.prompts() == [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ab"}]]
    bad = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": [{"type": "image_url"}]}])
    with pytest.raises(ServeError) as e:
        bad.prompts()
    assert e.value.body.param == "messages.0.content"
