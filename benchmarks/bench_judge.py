"""Judge throughput on CPU: responses per second of the "minilm" judge (target >= 50/s) beside the keyword judge.

    python benchmarks/bench_judge.py [--n 512] [--batch-size 64] [--threads N]

Uses the labelled fixture's responses (real SmolLM2 replies, up to 600 characters) with their prompts from
../shared/data, repeated to --n. The encoder loads (and warms up) before the clock starts: loading is a one-off.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16, help="windows per encoder forward")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args()

    import torch

    from safecls.data.benchmarks import load_benchmark
    from safecls.eval.judges.base import JUDGES
    from safecls.eval.judges.minilm import MiniLMJudge

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in (ROOT / "tests" / "fixtures" / "judge_labels.jsonl").read_text().splitlines()]
    prompts = {}
    for bench in sorted({r["id"].split("/")[0] for r in rows}):
        prompts |= {it.id: it.prompt for it in load_benchmark(bench, args.data / bench)}
    pairs = [(prompts[r["id"]], r["response"]) for r in rows]
    pairs = (pairs * (args.n // len(pairs) + 1))[: args.n]
    ps, rs = [a for a, _ in pairs], [b for _, b in pairs]
    mean_chars = sum(map(len, rs)) / len(rs)

    t = time.perf_counter()
    judge = MiniLMJudge(batch_size=args.batch_size)
    judge.judge(ps[:8], rs[:8])  # loads the embedder; not part of the steady-state rate
    load_s = time.perf_counter() - t
    print(f"device: CPU, {torch.get_num_threads()} torch threads; {len(rs)} responses, mean {mean_chars:.0f} chars")
    print(f"minilm: load + first batch {load_s:.1f} s")
    for name, j in (("minilm", judge), ("keyword", JUDGES.get("keyword")())):
        t = time.perf_counter()
        j.judge(ps, rs)
        dt = time.perf_counter() - t
        print(f"{name:8s} {len(rs) / dt:10.1f} responses/s ({dt:.2f} s for {len(rs)})")


if __name__ == "__main__":
    main()
