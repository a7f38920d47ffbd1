"""A live uvicorn server per app, on 127.0.0.1 and a free port, in a thread; driven with the official client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'safecls[serve]'")
openai = pytest.importorskip("openai", reason="the dev extra is not installed: pip install 'safecls[dev]'")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from safecls.inference import DecodeConfig  # noqa: E402
from safecls.model import SafeClsModel  # noqa: E402
from safecls.serve import ServeSettings, create_app  # noqa: E402
from tests.tiny import tiny_model  # noqa: E402

MODEL = "tiny"
KEY = "sk-test-key"
# medium policy, but a threshold the untrained head (P ~ 0.5) never crosses: no intervention unless a test asks
QUIET = DecodeConfig(policy="medium", schedule="every", threshold=0.95)


@dataclass
class Live:
    app: object
    url: str

    def client(self, api_key: str = KEY, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=60, **kw)

    @property
    def state(self):
        return self.app.state


@contextmanager
def live_server(app) -> Iterator[Live]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield Live(app, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def settings(**kw) -> ServeSettings:
    return ServeSettings(**{"model_name": MODEL, "api_keys": [KEY], "decode_defaults": QUIET, "batch_wait_ms": 20,
                            **kw})


@pytest.fixture(scope="module")
def model() -> SafeClsModel:
    return SafeClsModel.from_base(*tiny_model("llama"))


@pytest.fixture(scope="module")
def live(model) -> Iterator[Live]:
    with live_server(create_app(model, settings())) as s:
        yield s
