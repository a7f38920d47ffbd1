"""RequestGuard: API keys (401), the request body size limit (413) and per-request metrics, as one pure ASGI
middleware, so each check runs before any body is parsed.

Pure ASGI rather than BaseHTTPMiddleware: it must see the body as it arrives (a chunked body has no
Content-Length) and must not buffer streaming responses.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from starlette.exceptions import HTTPException

from safecls.serve.protocol import error_payload

# an oversized body is read and dropped before the 413 goes out, so the client (still sending) reads the 413
# instead of a reset connection; beyond this much the connection is simply answered and closed
DRAIN_CAP = 64 * 1024 * 1024

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completion", "/v1/moderations": "moderation",
             "/health": "health", "/metrics": "metrics"}


def endpoint_label(path: str) -> str:
    if path in ENDPOINTS:
        return ENDPOINTS[path]
    return "models" if path.startswith("/v1/models") else "other"  # bounded label set: never the raw path


class RequestGuard:
    def __init__(self, app: Any, *, max_body_bytes: int, metrics: Any, api_keys: list[str]):
        self.app, self.max_bytes, self.metrics = app, max_body_bytes, metrics
        self.keys = [k.encode() for k in api_keys]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint, t0, status = endpoint_label(scope["path"]), time.monotonic(), [0]
        if scope["method"] == "POST":
            scope = _as_json(scope)

        async def send_recording(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        seen = [0]

        async def receive_limited() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_bytes:
                    # FastAPI re-raises HTTPException from body reading; the app's handler shapes the 413
                    raise HTTPException(413, self._too_large(seen[0]))
            return message

        try:
            declared = _content_length(scope)
            refusal = None
            if self.keys and scope["path"].startswith("/v1/"):  # /health and /metrics stay open
                refusal = self._auth_error(_header(scope, b"authorization"))
            if refusal is None and declared is not None and declared > self.max_bytes:
                refusal = (413, error_payload(self._too_large(declared), "invalid_request_error",
                                              code="request_too_large"), [])
            if refusal is not None:
                if declared is None or declared <= DRAIN_CAP:
                    await _drain(receive)
                await _send_json(send_recording, *refusal)
                return
            await self.app(scope, receive_limited, send_recording)
        finally:
            self.metrics.requests.labels(endpoint, str(status[0] or 500)).inc()
            self.metrics.latency.labels(endpoint).observe(time.monotonic() - t0)

    def _auth_error(self, header: bytes | None) -> tuple[int, dict, list] | None:
        scheme, _, token = (header or b"").partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            message = "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'."
        elif any(hmac.compare_digest(token, k) for k in self.keys):  # constant time: no key guessing by timing
            return None
        else:
            message = "Incorrect API key provided."
        return 401, error_payload(message, "invalid_request_error", code="invalid_api_key"), [(b"www-authenticate",
                                                                                                  b"Bearer")]

    def _too_large(self, n: int) -> str:
        return f"the request body has {n} bytes, over this server's limit of {self.max_bytes} (max_body_bytes)"


def _as_json(scope: dict) -> dict:
    """Every POST body here is JSON: read it as JSON whatever Content-Type says (`curl -d` sends a form type),
    so a malformed body gets the invalid-JSON error instead of a confusing type error."""
    headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def _header(scope: dict, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers", ()) if k == name), None)


def _content_length(scope: dict) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


async def _drain(receive) -> None:
    total = 0
    while total <= DRAIN_CAP:
        message = await receive()
        if message["type"] != "http.request":
            return
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_json(send, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
