"""`create_app(engine_or_model, settings)`: the OpenAI-compatible server. All state lives on `app.state`
(engine, settings, metrics, batcher, request-side tokenizer), so a process can hold many apps (tests do).

Routes: GET /health, GET /metrics (Prometheus text; both open), and under /v1 (Bearer key when configured):
GET /models, GET /models/{id}, POST /chat/completions, POST /completions, POST /moderations.
Every error body is {"error": {message, type, param, code}} (protocol.ErrorBody).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

from safecls._optional import require

require("fastapi", "serve")
require("prometheus_client", "serve")

from anyio import to_thread  # noqa: E402 - after the install hint above
from fastapi import APIRouter, FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse, Response, StreamingResponse  # noqa: E402
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from safecls.errors import ContextLengthError, SafeclsError  # noqa: E402
from safecls.inference.engine import Engine  # noqa: E402
from safecls.serve import completions as endpoints  # noqa: E402
from safecls.serve.batcher import Batcher  # noqa: E402
from safecls.serve.prometheus import Metrics  # noqa: E402
from safecls.serve.protocol import (  # noqa: E402
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
    ModerationRequest,
    ServeError,
    error_payload,
    moderation_result,
    new_id,
)
from safecls.serve.request_guard import RequestGuard  # noqa: E402
from safecls.serve.settings import ServeSettings  # noqa: E402

logger = logging.getLogger(__name__)

# what /v1/moderations accepts as `model` besides the served id, so OpenAI-default clients work unchanged
MODERATION_ALIASES = ("omni-moderation-latest", "text-moderation-latest", "text-moderation-stable")
# pydantic's union-member tags in error locations (("body", "stop", "str")): not part of the request field's path
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _error(status: int, message: str, type: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_payload(message, type, param, code), status_code=status)


def _param(loc: tuple) -> str | None:
    parts: list[str] = []
    for part in loc[1:]:  # loc[0] is "body"
        if isinstance(part, str) and (not part.isidentifier() or part in _TYPE_TAGS):
            break
        parts.append(str(part))
    return ".".join(parts) or None


class _RowsStream(StreamingResponse):
    """A stream that cancels its rows however it ends: finished, client gone (the ASGI server cancels the task),
    or a send error."""

    def __init__(self, content: Any, on_close: Any):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _classifier_view(engine: Engine) -> Any:
    """The engine's model with its own tokenizer copy: moderation runs beside the batcher thread, and a
    fast tokenizer shared across threads can fail ("Already borrowed")."""
    model = engine.model
    if model.head is None:
        return None
    from safecls.model.safecls_model import SafeClsModel

    return SafeClsModel(model.base, copy.deepcopy(model.tokenizer), model.head, model.cls_token_id, stage=model.stage,
                        base_ref=getattr(model, "base_ref", None), head_layers=model.head_layers)


def create_app(engine_or_model: Any, settings: ServeSettings | None = None) -> FastAPI:
    """`engine_or_model`: an Engine, or a SafeClsModel (wrapped in one). The batcher thread starts with the app's
    lifespan (uvicorn runs it) and stops with it."""
    settings = settings or ServeSettings()
    engine = engine_or_model if isinstance(engine_or_model, Engine) else Engine(engine_or_model)
    metrics = Metrics()
    batcher = Batcher(engine, max_batch=settings.max_batch, batch_wait_ms=settings.batch_wait_ms,
                      batch_wait_max_ms=settings.batch_wait_max_ms, max_queue=settings.max_queue, metrics=metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            await to_thread.run_sync(batcher.stop)

    app = FastAPI(title="safecls", summary="OpenAI-compatible server with an explicit safety signal", lifespan=lifespan)
    st = app.state
    st.engine, st.settings, st.metrics, st.batcher = engine, settings, metrics, batcher
    st.tokenizer = copy.deepcopy(engine.tok)  # request-side checks run on the event loop thread, beside the batcher
    st.context_length = engine.model.context_length
    st.cls_slots = 1 if engine.has_head else 0
    st.classifier = _classifier_view(engine)
    st.classify_lock = threading.Lock()
    st.started = int(time.time())
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes, metrics=metrics,
                       api_keys=settings.key_values())
    _add_error_handlers(app)
    app.include_router(_v1_router(), prefix="/v1")

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        s = request.app.state
        alive = s.batcher.alive
        return JSONResponse({"status": "ok" if alive else "unavailable", "model": s.settings.model_name,
                             "queue_depth": s.batcher.queue_depth}, status_code=200 if alive else 503)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse({"error": exc.body.model_dump()}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        if err.get("type") == "json_invalid":
            at = err["loc"][-1] if err.get("loc") else "?"
            return _error(400, f"the request body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])} "
                          f"at character {at}", "invalid_request_error", code="invalid_json")
        param = _param(tuple(err.get("loc", ())))
        got = repr(err.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        where = param or "body"
        return _error(400, f"{where}: {err['msg']} (got {got})", "invalid_request_error", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
        return _error(exc.status_code, str(exc.detail), "invalid_request_error", code=code)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return _error(500, f"internal error: {type(exc).__name__}", "server_error")


def _v1_router() -> APIRouter:
    v1 = APIRouter()  # API keys are checked in RequestGuard, before any body is read

    @v1.get("/models")
    async def models(request: Request) -> dict:
        s = request.app.state
        return ModelList(data=[ModelCard(id=s.settings.model_name, created=s.started)]).model_dump()

    @v1.get("/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> dict:
        s = request.app.state
        if model_id != s.settings.model_name:
            raise ServeError(404, f"The model {model_id!r} does not exist", param="model", code="model_not_found")
        return ModelCard(id=model_id, created=s.started).model_dump()

    @v1.post("/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        return await _generate(request, body)

    @v1.post("/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _generate(request, body)

    @v1.post("/moderations")
    async def moderations(body: ModerationRequest, request: Request) -> dict:
        s = request.app.state
        if body.model is not None and body.model != s.settings.model_name and body.model not in MODERATION_ALIASES:
            raise ServeError(404, f"model: {body.model!r} does not exist; use {s.settings.model_name!r}",
                             param="model", code="model_not_found")
        if s.classifier is None:
            raise ServeError(400, "this server's model has no safety head, so it cannot moderate", code="unsupported")
        inputs = body.inputs()
        if any(not x.strip() for x in inputs):
            raise ServeError(400, "input: every input must be a non-empty string", param="input")
        body.log_extras()
        try:
            scores = await to_thread.run_sync(_classify, s, inputs)
        except ContextLengthError as e:
            raise ServeError(400, f"input: {e}", param="input", code="context_length_exceeded") from None
        except SafeclsError as e:
            raise ServeError(400, f"input: {e}", param="input") from None
        threshold = s.settings.flag_threshold(s.engine)
        results = [moderation_result(p, threshold) for p in scores]
        s.metrics.moderated.inc(len(results))
        s.metrics.flagged.inc(sum(r["flagged"] for r in results))
        return {"id": new_id("modr"), "model": body.model or s.settings.model_name, "results": results}

    return v1


def _classify(state: Any, inputs: list[str]) -> list[float]:
    with state.classify_lock:
        return state.classifier.classify(inputs)


async def _generate(request: Request, body: ChatCompletionRequest | CompletionRequest) -> Response:
    s = request.app.state
    p = endpoints.plan(s, body)
    ticket = endpoints.Ticket(p, asyncio.get_running_loop())
    ticket.submit(s.batcher)
    if p.stream:
        return _RowsStream(endpoints.stream(s, p, ticket), on_close=ticket.cancel)
    try:
        return JSONResponse(await endpoints.complete(s, p, ticket, request.is_disconnected))
    finally:
        ticket.cancel()  # rows still open (error, timeout, client gone) stop decoding
