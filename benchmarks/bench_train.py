"""Training cost of the safety [CLS] on SmolLM2-135M-Instruct (CPU): prints ratios, asserts nothing.

1. `trainer`: training tokens/s of the sft stage (with_cls: true) vs plain SFT (with_cls: false) through
   safecls.train.train, same data, batch and steps (LoRA by default; --full for a full fine-tune).
   Target: ratio <= 1.1. tokens/s counts non-pad tokens ([CLS] included) and skips the first step (warm-up).
2. `fwdbwd`: one forward+backward of B x T tokens, each variant in its own subprocess (peak RSS via
   resource.getrusage): `routed` = SafeClsModel.losses in the sft stage (dense routing mask + [CLS] + head);
   `plain` = the base model with its own causal attention and the LM loss on the same response tokens.
   Target: time ratio <= 1.15.

    python benchmarks/bench_train.py [--steps 6] [--batch 4] [--seq 256] [--repeats 3] [--only trainer|fwdbwd]
Runs are interleaved (routed, plain, routed, plain, ...) so load from other processes hits both alike. On a shared
machine run with OMP_NUM_THREADS=1: OpenMP spin-waits under oversubscription inflated step times 10x (measured).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the quick brown fox jumps over the lazy dog while a small bird sings about bread water and salt").split()


def _text(n_words: int, seed: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(n_words))


def _records(n: int, seq: int) -> list[dict]:
    """Chat records of about `seq` tokens: a quarter prompt, the rest response."""
    return [{"messages": [{"role": "user", "content": _text(seq // 4, i)},
                          {"role": "assistant", "content": _text(seq, i + 1)}], "label": i % 2, "source": "bench"}
            for i in range(n)]


# ---- 1. trainer throughput ------------------------------------------------------------------------------------


def _trainer_child(args: argparse.Namespace, with_cls: bool, workdir: Path) -> dict:
    from safecls.train import TrainConfig, train

    data = workdir / "d.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(r) + "\n" for r in _records(args.batch * args.steps, args.seq)))
    out = workdir / f"out-{with_cls}-{time.time_ns()}"
    cfg = TrainConfig(model="base", stage="sft", with_cls=with_cls, lambda_cls=0.1 if with_cls else 0,
                      train_file=str(data), max_length=args.seq, batch_size=args.batch, max_steps=args.steps,
                      lora=None if args.full else {"r": 16, "alpha": 32, "dropout": 0.05}, lr=1e-4, log_every=1,
                      output_dir=str(out))
    res = train(cfg)
    rates = [m.tokens_per_s for m in res.metrics[1:]]
    return {"tokens_per_s": statistics.median(rates), "per_step_tokens": res.metrics[-1].tokens / res.steps}


# ---- 2. one forward + backward ---------------------------------------------------------------------------------


def _fwdbwd_child(args: argparse.Namespace, variant: str) -> dict:
    import torch
    import torch.nn.functional as F

    from safecls.model import SafeClsModel, load_base
    from safecls.model.encoding import collate, encode_pair
    from safecls.model.safecls_model import lm_target_positions

    torch.manual_seed(0)
    base, tok = load_base("base")
    model = SafeClsModel.from_base(base, tok)
    model.train()
    recs = _records(args.batch, args.seq)
    encs = []
    for r in recs:
        e = encode_pair(tok, r["messages"][:1], r["messages"][1]["content"])
        encs.append(type(e)(e.ids[:args.seq - 1], e.kinds[:args.seq - 1]))
    with_cls = variant == "routed"
    batch = collate(encs, model.cls_token_id, tok.pad_token_id, side="right", labels=[r["label"] for r in recs],
                    with_cls=with_cls)

    def step() -> None:
        if with_cls:
            loss = model.losses(batch, "sft", 0.1)["loss"]
        else:  # the base model's own causal attention (padding mask only), LM loss on the same response tokens
            attn = (batch.kinds != 0).long()
            hidden = model.backbone(input_ids=batch.input_ids, attention_mask=attn, use_cache=False).last_hidden_state
            sel, targets = lm_target_positions(batch, "response")
            loss = F.cross_entropy(model.lm_logits(hidden[sel]).float(), targets)
        loss.backward()
        model.zero_grad(set_to_none=True)

    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu), "peak_rss_mb": peak / 1024, "rss_after_load_mb": rss_loaded / 1024,
            "tokens": int((batch.kinds != 0).sum())}


# ---- driver ----------------------------------------------------------------------------------------------------


def _spawn(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="timed forward+backward passes per child")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per variant")
    ap.add_argument("--full", action="store_true", help="trainer: full fine-tune instead of LoRA")
    ap.add_argument("--only", choices=["trainer", "fwdbwd"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        kind, _, variant = args.child.partition(":")
        out = (_trainer_child(args, variant == "cls", Path(args.workdir)) if kind == "trainer"
               else _fwdbwd_child(args, variant))
        print(json.dumps(out))
        return

    shared = ["--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq),
              "--repeats", str(args.repeats)] + (["--full"] if args.full else [])
    print(f"SmolLM2-135M-Instruct, CPU, batch {args.batch} x {args.seq} tokens, {args.rounds} interleaved rounds")
    if args.only in (None, "trainer"):
        with tempfile.TemporaryDirectory() as d:
            runs: dict[str, list[dict]] = {"cls": [], "plain": []}
            for _ in range(args.rounds):
                for v in runs:
                    runs[v].append(_spawn(shared + ["--child", f"trainer:{v}", "--workdir", d]))
        tps = {v: statistics.median(r["tokens_per_s"] for r in rs) for v, rs in runs.items()}
        mode = "full" if args.full else "LoRA r=16"
        print(f"[trainer, {mode}, {args.steps} steps] sft+[CLS] {tps['cls']:.1f} tok/s, plain SFT {tps['plain']:.1f} "
              f"tok/s; time per token ratio (cls/plain) = {tps['plain'] / tps['cls']:.3f}  (target <= 1.1)")
    if args.only in (None, "fwdbwd"):
        res: dict[str, list[dict]] = {"routed": [], "plain": []}
        for _ in range(args.rounds):
            for v in res:
                res[v].append(_spawn(shared + ["--child", f"fwdbwd:{v}"]))
        sec = {v: statistics.median(r["seconds"] for r in rs) for v, rs in res.items()}
        cpu = {v: statistics.median(r["cpu_seconds"] for r in rs) for v, rs in res.items()}
        peak = {v: max(r["peak_rss_mb"] for r in rs) for v, rs in res.items()}
        load = {v: max(r["rss_after_load_mb"] for r in rs) for v, rs in res.items()}
        print(f"[fwd+bwd, full params] routed {sec['routed']:.3f} s, plain {sec['plain']:.3f} s; "
              f"ratio = {sec['routed'] / sec['plain']:.3f}  (target <= 1.15); CPU time {cpu['routed']:.3f} / "
              f"{cpu['plain']:.3f} s, ratio {cpu['routed'] / cpu['plain']:.3f}")
        print(f"[peak RSS] routed {peak['routed']:.0f} MB, plain {peak['plain']:.0f} MB "
              f"(after load {load['routed']:.0f} / {load['plain']:.0f} MB); "
              f"step increment ratio = {(peak['routed'] - load['routed']) / max(1.0, peak['plain'] - load['plain']):.3f}")


if __name__ == "__main__":
    main()
