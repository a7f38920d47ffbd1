"""Serving throughput: N concurrent streaming clients vs the same requests one at a time, through HTTP.

    python benchmarks/bench_serve.py                       # tiny random model x 32 clients, SmolLM2 x 8 clients
    python benchmarks/bench_serve.py --only default --clients 8 --tokens 64 --rounds 3 --policy medium

The server runs in its own process (as `safecls serve` would), so the clients do not share its GIL; the clients are
the official `openai` AsyncOpenAI with stream=True. Requests are greedy, so a batched request generates exactly the
tokens it would alone and tokens/s compare like for like. Reported: errors, p50/p99 latency and time to first token,
aggregate tokens/s concurrent vs sequential (ratio), and the server's resident memory after each concurrent round.
SmolLM2 gets an untrained head (throughput only): keep --policy low or medium. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "Write a short story about a lighthouse keeper.", "Explain how vaccines train the immune system.",
    "Give me three ideas for a birthday party.", "What is the difference between TCP and UDP?",
    "Describe the water cycle for a child.", "How do I bake bread at home?", "Summarise the plot of Hamlet.",
    "What are good habits for learning a language?",
]


def _serve(model: str, port: int, max_batch: int, policy: str, threads: int | None, wait_ms: tuple[float, float]) -> None:
    """Child process: build the model and run uvicorn until terminated."""
    sys.path.insert(0, str(ROOT))
    import torch
    import uvicorn

    from safecls.inference import DecodeConfig
    from safecls.model import SafeClsModel, load_base
    from safecls.serve import ServeSettings, create_app

    if threads:
        torch.set_num_threads(threads)
    if model == "tiny":
        from tests.tiny import tiny_model

        m = SafeClsModel.from_base(*tiny_model("llama"))
    else:
        m = SafeClsModel.from_base(*load_base(model))
    settings = ServeSettings(model_name="bench", max_batch=max_batch, batch_wait_ms=wait_ms[0], batch_wait_max_ms=wait_ms[1],
                             max_queue=1024,
                             decode_defaults=DecodeConfig(policy=policy, threshold=0.999))
    uvicorn.run(create_app(m, settings), host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _one(client, prompt: str, tokens: int) -> dict:
    t0 = time.perf_counter()
    ttft, usage = None, None
    stream = await client.chat.completions.create(model="bench", messages=[{"role": "user", "content": prompt}],
                                                  max_tokens=tokens, temperature=0, stream=True,
                                                  stream_options={"include_usage": True})
    async for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - t0
        if chunk.usage is not None:
            usage = chunk.usage
    return {"latency": time.perf_counter() - t0, "ttft": ttft or 0.0, "tokens": usage.completion_tokens}


async def _round(client, n: int, tokens: int, concurrent: bool) -> tuple[list[dict], int, float]:
    prompts = [PROMPTS[i % len(PROMPTS)] + f" (#{i})" for i in range(n)]
    t0 = time.perf_counter()
    if concurrent:
        outs = await asyncio.gather(*(_one(client, p, tokens) for p in prompts), return_exceptions=True)
    else:
        outs = []
        for p in prompts:
            try:
                outs.append(await _one(client, p, tokens))
            except Exception as e:  # noqa: BLE001 - counted as an error, the run goes on
                outs.append(e)
    wall = time.perf_counter() - t0
    errors = sum(isinstance(o, BaseException) for o in outs)
    for o in outs:
        if isinstance(o, BaseException):
            print(f"    error: {type(o).__name__}: {o}")
    return [o for o in outs if not isinstance(o, BaseException)], errors, wall


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def _batches(url: str) -> str:
    """Batch sizes the server ran, from its /metrics histogram: 'count x mean'."""
    import httpx

    text = httpx.get(url + "/metrics").text
    val = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln.startswith("safecls_batch_size_")}
    n, total = val.get("safecls_batch_size_count", 0), val.get("safecls_batch_size_sum", 0)
    return f"{n:.0f} batches, mean {total / max(n, 1):.1f} rows, max {val.get('safecls_batch_size_max', 0):.0f}"


async def _bench(url: str, pid: int, clients: int, tokens: int, rounds: int) -> None:
    import openai
    import psutil

    proc = psutil.Process(pid)
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=1800)
    await _round(client, min(clients, 2), 4, True)  # warm-up
    results, errors, rss, walls, toks = [], 0, [], [], []
    for r in range(rounds):
        outs, err, wall = await _round(client, clients, tokens, True)
        results += outs
        errors += err
        walls.append(wall)
        toks.append(sum(o["tokens"] for o in outs))
        rss.append(proc.memory_info().rss / 2**20)
        print(f"  concurrent round {r + 1}: {toks[-1]} tokens in {wall:.2f} s = {toks[-1] / wall:.1f} tok/s, "
              f"errors {err}, server RSS {rss[-1]:.0f} MiB; so far {_batches(url.removesuffix('/v1'))}")
    seq, seq_err, seq_wall = await _round(client, clients, tokens, False)
    seq_tokens = sum(o["tokens"] for o in seq)
    lat = [o["latency"] for o in results]
    ttft = [o["ttft"] for o in results]
    conc_tps = sum(toks) / sum(walls)
    seq_tps = seq_tokens / seq_wall
    print(f"  sequential: {seq_tokens} tokens in {seq_wall:.2f} s = {seq_tps:.1f} tok/s, errors {seq_err}")
    print(f"  errors: {errors + seq_err}")
    print(f"  latency p50 {_pct(lat, 50):.2f} s, p99 {_pct(lat, 99):.2f} s; time to first token p50 "
          f"{_pct(ttft, 50):.2f} s, p99 {_pct(ttft, 99):.2f} s (concurrent rounds)")
    print(f"  aggregate tokens/s: concurrent {conc_tps:.1f} vs one at a time {seq_tps:.1f} -> "
          f"{conc_tps / seq_tps:.2f}x")
    print(f"  server RSS per round (MiB): {', '.join(f'{x:.0f}' for x in rss)}; last - first {rss[-1] - rss[0]:+.0f} MiB")
    await client.close()


def run(model: str, clients: int, tokens: int, rounds: int, policy: str, threads: int | None,
        wait_ms: tuple[float, float]) -> None:
    print(f"== model {model}: {clients} concurrent streaming clients x {tokens} tokens, policy {policy}, "
          f"{rounds} rounds, batch_wait_ms {wait_ms[0]:g} (max {wait_ms[1]:g}), torch threads {threads or 'default'}")
    port = _free_port()
    ctx = mp.get_context("spawn")
    server = ctx.Process(target=_serve, args=(model, port, clients, policy, threads, wait_ms), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if not server.is_alive() or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.2)
    try:
        asyncio.run(_bench(url + "/v1", server.pid, clients, tokens, rounds))
    finally:
        server.terminate()
        server.join(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["tiny", "default"], default=None, help="one model (default: both)")
    ap.add_argument("--clients", type=int, default=None, help="default: 32 on tiny, 8 on SmolLM2")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--policy", choices=["low", "medium"], default="medium")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in the server (default: torch's)")
    ap.add_argument("--batch-wait-ms", type=float, default=None, help="the server's batch_wait_ms (default: its own)")
    ap.add_argument("--batch-wait-max-ms", type=float, default=None, help="the server's batch_wait_max_ms")
    args = ap.parse_args()
    from safecls.serve.settings import ServeSettings

    d = ServeSettings()
    waits = (args.batch_wait_ms if args.batch_wait_ms is not None else d.batch_wait_ms,
             args.batch_wait_max_ms if args.batch_wait_max_ms is not None else d.batch_wait_max_ms)
    for model, default_clients in (("tiny", 32), ("default", 8)):
        if args.only in (None, model):
            run(model, args.clients or default_clients, args.tokens, args.rounds, args.policy, args.threads, waits)


if __name__ == "__main__":
    main()
