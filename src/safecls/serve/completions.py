"""Chat and text completions over the batcher: request checks, one Ticket per request, and the two ways out
(one JSON body, or SSE chunks in OpenAI's format ending with `data: [DONE]`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from safecls.errors import SafeclsError
from safecls.inference.config import DecodeConfig
from safecls.inference.results import GenerationResult, StepEvent
from safecls.model.encoding import encode_prompt
from safecls.serve.batcher import QueueFull, RowJob, ServerStopping
from safecls.serve.protocol import ChatCompletionRequest, CompletionRequest, SafetyInfo, ServeError, new_id, now

logger = logging.getLogger(__name__)

# a non-streaming request checks this often whether its client left (a stream learns it from the ASGI server)
DISCONNECT_POLL_S = 0.5


@dataclass
class Plan:
    """A checked request: what to run, and how to answer."""

    endpoint: str  # "chat" | "completion"
    model: str
    prompts: list[Any]
    prompt_tokens: list[int]
    configs: list[list[DecodeConfig]]  # [prompt][choice]
    stream: bool
    include_usage: bool
    started: float

    @property
    def n(self) -> int:
        return len(self.configs[0])


def plan(state: Any, req: ChatCompletionRequest | CompletionRequest) -> Plan:
    """Every check that can fail a request, before it queues. Raises ServeError (400/404)."""
    started, settings = time.monotonic(), state.settings
    if req.model != settings.model_name:
        raise ServeError(404, f"model: {req.model!r} does not exist; this server serves {settings.model_name!r} "
                         "(see /v1/models)", param="model", code="model_not_found")
    req.check_supported()
    n = req.choices_per_prompt
    if n > settings.max_n:
        raise ServeError(400, f"n: {n} is over this server's limit {settings.max_n}", param="n")
    asked = req.requested_max_tokens
    max_name = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) is not None else "max_tokens"
    if asked is not None and asked > settings.max_tokens_cap:
        raise ServeError(400, f"{max_name}: {asked} is over this server's cap {settings.max_tokens_cap}", param=max_name)
    chat = isinstance(req, ChatCompletionRequest)
    prompts = req.prompts()
    if n * len(prompts) > settings.max_queue:
        raise ServeError(400, f"n x prompts = {n * len(prompts)} rows is over the queue size {settings.max_queue}",
                         param="n")
    where = "messages" if chat else "prompt"
    limit = state.context_length
    lengths, configs = [], []
    for i, prompt in enumerate(prompts):
        if (isinstance(prompt, str) and not prompt.strip()) or (not isinstance(prompt, str) and not any(m["content"].strip() for m in prompt)):
            raise ServeError(400, f"{where}: the prompt is empty", param=where)
        try:
            n_tok = len(encode_prompt(state.tokenizer, prompt))
        except SafeclsError as e:
            raise ServeError(400, f"{where}: {e}", param=where) from None
        room = None if limit is None else limit - n_tok - state.cls_slots
        if room is not None and (room < 1 or (asked is not None and asked > room)):
            raise ServeError(
                400, f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{n_tok + state.cls_slots + (asked or 1)} tokens ({n_tok} in the {where}{f' {i}' if len(prompts) > 1 else ''}"
                f", {asked or 1} for the completion). Please reduce the length of the {where} or {max_name}.",
                param=where, code="context_length_exceeded")
        max_tokens = asked or min(settings.default_max_tokens, settings.max_tokens_cap, room or settings.default_max_tokens)
        # choice j gets seed + j: n choices under one seed must differ, and stay reproducible
        configs.append([req.to_decode_config(settings, max_tokens, None if req.seed is None else req.seed + j)
                        for j in range(n)])
        lengths.append(n_tok)
    opts = req.stream_options
    return Plan("chat" if chat else "completion", req.model, prompts, lengths, configs, bool(req.stream),
                bool(opts and opts.include_usage), started)


class Ticket:
    """The rows of one request on the batcher, and the asyncio queue their events come back on."""

    def __init__(self, plan: Plan, loop: asyncio.AbstractEventLoop):
        self.plan, self.loop = plan, loop
        self.queue: asyncio.Queue[tuple[int, StepEvent | BaseException]] = asyncio.Queue()
        self.jobs = [RowJob(prompt, cfg, deliver=self._deliverer(i * plan.n + j))
                     for i, (prompt, cfgs) in enumerate(zip(plan.prompts, plan.configs)) for j, cfg in enumerate(cfgs)]
        self.open = set(range(len(self.jobs)))

    def _deliverer(self, index: int) -> Callable[[StepEvent | BaseException], None]:
        def deliver(item: StepEvent | BaseException) -> None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, item))
        return deliver

    def submit(self, batcher: Any) -> None:
        try:
            batcher.submit(self.jobs)
        except QueueFull as e:
            raise ServeError(429, f"the server is busy: {e}. Retry shortly", type="rate_limit_error",
                             code="rate_limit_exceeded") from None
        except ServerStopping as e:
            raise ServeError(503, str(e), type="server_error", code="unavailable") from None

    def cancel(self) -> None:
        for i in self.open:
            self.jobs[i].cancelled = True

    async def events(self, timeout_s: float, disconnected: Callable[[], Awaitable[bool]] | None = None
                     ) -> AsyncIterator[tuple[int, StepEvent]]:
        """(choice index, event) until every row finished. Raises ServeError on an engine error or the deadline."""
        deadline = self.plan.started + timeout_s
        next_check = time.monotonic() + DISCONNECT_POLL_S
        while self.open:
            t = time.monotonic()
            if t >= deadline:
                self.cancel()
                raise ServeError(504, f"the request took longer than the server's {timeout_s:g} s timeout",
                                 type="server_error", code="timeout")
            if disconnected is not None and t >= next_check:  # by the clock: events keep coming while it decodes
                next_check = t + DISCONNECT_POLL_S
                if await disconnected():
                    logger.info("client disconnected; cancelling %d rows", len(self.open))
                    self.cancel()
                    return
            try:
                index, item = await asyncio.wait_for(self.queue.get(), min(deadline - t, DISCONNECT_POLL_S))
            except TimeoutError:
                continue
            if isinstance(item, BaseException):
                self.open.discard(index)
                self.cancel()
                raise _engine_error(item)
            if item.finished:
                self.open.discard(index)
                if item.finish_reason == "cancelled":  # not by us (we stop listening when we cancel): shutdown
                    self.cancel()
                    raise ServeError(503, "the server is shutting down; the generation was stopped",
                                     type="server_error", code="unavailable")
            yield index, item


def _engine_error(e: BaseException) -> ServeError:
    if isinstance(e, ServerStopping):
        return ServeError(503, str(e), type="server_error", code="unavailable")
    if isinstance(e, SafeclsError):
        return ServeError(400, str(e))
    return ServeError(500, f"the engine failed: {type(e).__name__}: {e}", type="server_error")


def account(metrics: Any, index: int, n: int, result: GenerationResult) -> None:
    if index % n == 0:  # a prompt is counted once, not once per choice
        metrics.prompt_tokens.inc(result.prompt_tokens)
    metrics.completion_tokens.inc(result.completion_tokens)
    metrics.finish.labels(result.finish_reason).inc()
    for iv in result.trace.interventions:
        metrics.interventions.labels(iv.kind).inc()


def _choice(p: Plan, index: int, r: GenerationResult) -> dict:
    safety = SafetyInfo.from_trace(r.trace, p.configs[index // p.n][index % p.n].policy).model_dump()
    body = {"message": {"role": "assistant", "content": r.text}} if p.endpoint == "chat" else {"text": r.text}
    return {"index": index, **body, "finish_reason": r.finish_reason, "logprobs": None, "safety": safety}


def _usage(p: Plan, results: list[GenerationResult]) -> dict:
    prompt = sum(p.prompt_tokens)
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def complete(state: Any, p: Plan, ticket: Ticket, disconnected: Callable[[], Awaitable[bool]]) -> dict:
    results: dict[int, GenerationResult] = {}
    async for index, ev in ticket.events(state.settings.request_timeout_s, disconnected):
        if ev.finished:
            results[index] = ev.result
            account(state.metrics, index, p.n, ev.result)
    ordered = [results[i] for i in sorted(results)]
    obj = "chat.completion" if p.endpoint == "chat" else "text_completion"
    return {"id": new_id("chatcmpl" if p.endpoint == "chat" else "cmpl"), "object": obj, "created": now(),
            "model": p.model, "system_fingerprint": None, "choices": [_choice(p, i, results[i]) for i in sorted(results)],
            "usage": _usage(p, ordered)}


class _StopHoldback:
    """Streams only text that cannot turn out to be the start of a stop string. The engine cuts its final text
    before a stop string, but its deltas may already carry the stop string's first characters."""

    def __init__(self, stops: list[str]):
        self.stops, self.sent, self.held, self.stopped = stops, "", "", False

    def feed(self, delta: str) -> str:
        self.held += delta
        if self.stopped:
            return ""
        cut = min((i for i in (self.held.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:  # a whole stop string: nothing from it on is ever sent (the final text is cut there too)
            out, self.held, self.stopped = self.held[:cut], self.held[cut:], True
            self.sent += out
            return out
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.held)), keep, -1):
                if self.held.endswith(s[:k]):
                    keep = k
                    break
        out = self.held[: len(self.held) - keep]
        self.held = self.held[len(out):]
        self.sent += out
        return out

    def finish(self, final: str) -> str:
        if not final.startswith(self.sent):
            logger.warning("streamed text is not a prefix of the final text; the stream may differ from it")
            return ""
        tail, self.sent, self.held = final[len(self.sent):], final, ""
        return tail


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def stream(state: Any, p: Plan, ticket: Ticket) -> AsyncIterator[str]:
    chat = p.endpoint == "chat"
    rid, created = new_id("chatcmpl" if chat else "cmpl"), now()
    obj = "chat.completion.chunk" if chat else "text_completion"
    usage_field = {"usage": None} if p.include_usage else {}

    def chunk(index: int, text: str | None = None, finish: str | None = None, role: bool = False, **extra) -> str:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None, **extra}
        else:
            choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None, **extra}
        return _sse({"id": rid, "object": obj, "created": created, "model": p.model, "system_fingerprint": None,
                     "choices": [choice], **usage_field})

    n_rows = len(ticket.jobs)
    holds = [_StopHoldback(ticket.jobs[i].config.stop) for i in range(n_rows)]
    results: dict[int, GenerationResult] = {}
    first = True
    if chat:
        for i in range(n_rows):
            yield chunk(i, role=True)
    try:
        async for index, ev in ticket.events(state.settings.request_timeout_s):
            text = holds[index].finish(ev.result.text) if ev.finished else holds[index].feed(ev.delta)
            if text:
                if first:
                    state.metrics.ttft.labels(p.endpoint).observe(time.monotonic() - p.started)
                    first = False
                yield chunk(index, text)
            if ev.finished:
                results[index] = ev.result
                account(state.metrics, index, p.n, ev.result)
                yield chunk(index, finish=ev.result.finish_reason, **{"safety": _choice(p, index, ev.result)["safety"]})
    except ServeError as e:
        # headers are gone: the error travels as an SSE event, which the official client raises as APIError
        yield _sse({"error": e.body.model_dump()})
        return
    if p.include_usage:
        yield _sse({"id": rid, "object": obj, "created": created, "model": p.model, "system_fingerprint": None,
                    "choices": [], "usage": _usage(p, [results[i] for i in sorted(results)])})
    yield "data: [DONE]\n\n"
