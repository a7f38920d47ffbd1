"""Dynamic batching, back-pressure (429), cancellation of rows whose client left, and request timeouts."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from safecls.errors import DataError
from safecls.inference import DecodeConfig, Engine
from safecls.serve import create_app
from safecls.serve.batcher import Batcher, QueueFull, RowJob
from tests.serve.conftest import KEY, MODEL, QUIET, live_server, settings

PROMPTS = ["How do I bake bread?", "Tell me a joke", "Hi", "Write a poem about the sea", "Explain the fox",
           "Why is the sky blue?", "Count to five", "What is 0123?"]


class Spy:
    """Wraps engine.stream: records batch sizes and final events, and can hold a batch at a gate or slow it down."""

    def __init__(self, engine: Engine, *, gated: bool = False, step_delay: float = 0.0):
        self.orig, self.delay = engine.stream, step_delay
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.batches: list[int] = []
        self.finished: list[str] = []  # finish reasons of the final events
        self.ended: list[int] = []  # per finished engine.stream call: how many events it yielded
        engine.stream = self

    def __call__(self, prompts, configs, prefills=None, cancelled=None):
        self.batches.append(len(prompts))
        self.gate.wait(30)
        n = 0
        try:
            for ev in self.orig(prompts, configs, prefills, cancelled=cancelled):
                n += 1
                if ev.finished:
                    self.finished.append(ev.finish_reason)
                time.sleep(self.delay)
                yield ev
        finally:
            self.ended.append(n)


def _until(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_concurrent_requests_share_batches_and_keep_their_text(model):
    app = create_app(model, settings(max_batch=8, batch_wait_ms=200))
    with live_server(app) as s:
        c = s.client()

        def ask(p):
            return c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=12,
                                             temperature=0).choices[0].message.content

        with ThreadPoolExecutor(8) as ex:
            got = list(ex.map(ask, PROMPTS))
        assert _metric(httpx.get(s.url + "/metrics").text, "safecls_batch_size_max") > 1
    want = Engine(model).generate([[{"role": "user", "content": p}] for p in PROMPTS],
                                  QUIET.model_copy(update={"max_new_tokens": 12}))
    assert got == [r.text for r in want]


def test_mixed_configs_run_in_one_batch(model):
    app = create_app(model, settings(max_batch=2, batch_wait_ms=10_000, batch_wait_max_ms=10_000))  # the batch starts when both are in
    with live_server(app) as s:
        spy = Spy(app.state.engine)
        c = s.client()
        msgs = [{"role": "user", "content": PROMPTS[0]}]
        with ThreadPoolExecutor(2) as ex:
            plain = ex.submit(c.chat.completions.create, model=MODEL, messages=msgs, max_tokens=10, temperature=0)
            strict = ex.submit(c.chat.completions.create, model=MODEL, messages=msgs, max_tokens=10, temperature=0,
                               extra_body={"safety_policy": "high", "safety_threshold": 0.01})
            plain, strict = plain.result(), strict.result()
        assert spy.batches == [2]
    want = model.generate([msgs], **QUIET.model_copy(update={"max_new_tokens": 10}).model_dump())[0]
    assert plain.choices[0].message.content == want.text
    assert strict.choices[0].finish_reason == "content_filter"


def test_full_queue_gets_429_and_the_server_recovers(model):
    app = create_app(model, settings(max_batch=1, max_queue=1))
    with live_server(app) as s:
        spy = Spy(app.state.engine, gated=True)
        c = s.client()
        kw = dict(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
        with ThreadPoolExecutor(2) as ex:
            running = ex.submit(c.chat.completions.create, **kw)
            _until(lambda: spy.batches == [1])  # the worker holds it at the gate
            waiting = ex.submit(c.chat.completions.create, **kw)
            _until(lambda: app.state.batcher.queue_depth == 1)
            with pytest.raises(openai.RateLimitError) as e:
                c.chat.completions.create(**kw)
            assert e.value.code == "rate_limit_exceeded" and e.value.type == "rate_limit_error"
            spy.gate.set()
            assert running.result().choices[0].finish_reason and waiting.result().choices[0].finish_reason
        assert c.chat.completions.create(**kw).usage.prompt_tokens > 0
        assert _metric(httpx.get(s.url + "/metrics").text, "safecls_queue_rejected_total") == 1


def test_disconnected_stream_cancels_its_row(model):
    msgs = [{"role": "user", "content": PROMPTS[0]}]
    app = create_app(model, settings())
    with live_server(app) as s:
        spy = Spy(app.state.engine, step_delay=0.02)  # 200 steps take >= 4 s
        stream = s.client().chat.completions.create(model=MODEL, messages=msgs, max_tokens=200, temperature=0,
                                                    stream=True)
        for i, _ in enumerate(stream):
            if i == 3:
                break
        stream.close()
        _until(lambda: spy.ended)
        # the engine stops the row at its next step; a batch whose rows are all cancelled ends without final events
        assert spy.finished in ([], ["cancelled"]) and spy.ended[0] < 50


def test_disconnected_plain_request_cancels_its_row(model):
    app = create_app(model, settings())
    with live_server(app) as s:
        spy = Spy(app.state.engine, step_delay=0.02)
        body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 200}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(s.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                       timeout=0.5)
        _until(lambda: spy.ended)
        assert spy.finished in ([], ["cancelled"]) and spy.ended[0] < 100


def test_request_timeout_gives_504_and_cancels(model):
    app = create_app(model, settings(request_timeout_s=0.5))
    with live_server(app) as s:
        spy = Spy(app.state.engine, gated=True)
        with pytest.raises(openai.InternalServerError) as e:
            s.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=50)
        assert e.value.status_code == 504 and e.value.code == "timeout"
        spy.gate.set()
        _until(lambda: spy.ended)
        assert spy.finished in ([], ["cancelled"]) and spy.ended[0] <= 1


def test_batcher_admits_a_request_whole_or_not_at_all(model):
    b = _admitting(Batcher(Engine(model), max_batch=4, batch_wait_ms=0, max_queue=3))
    b.submit([_row(), _row()])
    with pytest.raises(QueueFull):
        b.submit([_row(), _row()])
    assert b.queue_depth == 2
    b.submit([_row()])
    assert b.queue_depth == 3


def test_one_bad_row_does_not_fail_its_batch(model):
    b = Batcher(Engine(model), max_batch=4, batch_wait_ms=0, max_queue=8)
    got: dict[int, object] = {}
    jobs = [RowJob(p, DecodeConfig(max_new_tokens=3, policy="low"),
                   deliver=lambda item, i=i: got.__setitem__(i, item) if getattr(item, "finished", True) else None)
            for i, p in enumerate(["Hi", "", "Tell me a joke"])]
    b._run(jobs)  # the engine rejects the whole batch for the empty prompt; the batcher isolates it
    assert isinstance(got[1], DataError)
    assert got[0].finish_reason in ("length", "stop") and got[2].finish_reason in ("length", "stop")


def _admitting(batcher: Batcher) -> Batcher:
    batcher._thread = threading.current_thread()  # admit rows without a worker: the test calls _take() itself
    return batcher


def _row() -> RowJob:
    return RowJob("Hi", DecodeConfig(max_new_tokens=2), deliver=lambda item: None)


def test_batch_window_waits_for_a_trickling_burst(model):
    b = _admitting(Batcher(Engine(model), max_batch=8, batch_wait_ms=1000, batch_wait_max_ms=20_000, max_queue=8))
    b.submit([_row()])

    def trickle():
        for _ in range(3):
            time.sleep(0.1)
            b.submit([_row()])

    t = threading.Thread(target=trickle)
    t.start()
    assert len(b._take()) == 4  # each arrival came well inside the quiet gap of the previous one
    t.join()


def test_batch_window_is_capped_from_the_oldest_row(model):
    b = _admitting(Batcher(Engine(model), max_batch=8, batch_wait_ms=60_000, batch_wait_max_ms=200, max_queue=8))
    b.submit([_row()])
    t0 = time.monotonic()
    assert len(b._take()) == 1
    assert time.monotonic() - t0 < 30  # the cap (0.2 s), not the 60 s quiet gap


def test_rows_that_queued_behind_a_batch_go_at_once(model):
    b = _admitting(Batcher(Engine(model), max_batch=8, batch_wait_ms=60_000, batch_wait_max_ms=60_000, max_queue=8))
    old = _row()
    old.submitted -= 120  # waited two minutes behind a long batch
    b.submit([old, _row()])
    t0 = time.monotonic()
    assert len(b._take()) == 2 and time.monotonic() - t0 < 30
