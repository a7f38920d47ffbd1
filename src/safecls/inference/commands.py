"""`safecls generate` (prompts in, JSONL out), `safecls chat` (interactive, streaming, live safety indicator) and
`safecls calibrate` (a checkpoint's threshold and tau on a dev split)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from safecls.data.files import iter_jsonl
from safecls.errors import DataError

# DecodeConfig fields with their own flag (documented on the field); any other through --set KEY=VALUE
DECODE_FLAGS = ["max_new_tokens", "temperature", "top_p", "top_k", "seed", "policy", "schedule", "threshold", "tau",
                "request_threshold", "read_prompt"]


def add_decode_args(p: argparse.ArgumentParser) -> None:
    from safecls.config import add_field_flags
    from safecls.inference.config import PRESETS, DecodeConfig
    from safecls.model.resolve import MODEL_HELP

    p.add_argument("--model", default="default", help=MODEL_HELP)
    add_field_flags(p, DecodeConfig, DECODE_FLAGS)
    p.add_argument("--preset", default="seed", choices=sorted(PRESETS),
                   help="seed (r2=r3=10, tau=3) | authors (the paper scripts': r2=15, r3=10, tau=3, threshold 0.5)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other DecodeConfig field")


def decode_config(args: argparse.Namespace):
    from safecls.config import apply_overrides, given_fields, validate
    from safecls.inference.config import PRESETS, DecodeConfig

    data = {**PRESETS[args.preset], **given_fields(args, DECODE_FLAGS)}
    return validate(DecodeConfig, apply_overrides(data, args.set), source="command line")


def load_engine(spec: str) -> Any:
    from safecls.inference.engine import Engine

    return Engine.load(spec)


def read_prompts(path: str) -> list[Any]:
    """A .jsonl file (fields 'prompt' or 'messages') or a text file with one prompt per line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "no such file", fix="pass a .txt (one prompt per line) or .jsonl file")
    out = []
    if p.suffix == ".jsonl":
        for n, rec in iter_jsonl(p):
            if "messages" in rec:
                out.append(rec["messages"])
            elif "prompt" in rec:
                out.append(rec["prompt"])
            else:
                raise DataError(p, "needs a 'prompt' or 'messages' field", line=n)
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        else:
            out.append(line)
    return out


def _generate(args: argparse.Namespace) -> int:
    cfg = decode_config(args)
    prompts = list(args.prompt) + (read_prompts(args.file) if args.file else [])
    if not prompts:
        raise DataError("arguments", "no prompts given", fix="pass prompts as arguments or --file FILE")
    engine = load_engine(args.model)
    results = engine.generate(prompts, cfg, batch_size=args.batch_size)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    try:
        for p, r in zip(prompts, results, strict=True):
            out.write(json.dumps({"prompt": p, "response": r.text, "finish_reason": r.finish_reason,
                                  "trace": r.trace.to_dict(), "config": cfg.model_dump()}) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _indicator(p: float | None, threshold: float) -> str:
    if p is None:
        return "[safety: n/a]"
    bar = "#" * int(round(p * 10))
    return f"[safety {'MALICIOUS' if p > threshold else 'benign'} {p:.2f} {bar:<10}]"


def _chat(args: argparse.Namespace) -> int:
    cfg = decode_config(args)
    engine = load_engine(args.model)
    history: list[dict] = []
    print("safecls chat: type a message, /reset to clear, /quit to leave")
    while True:
        try:
            user = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not user:
            continue
        if user in ("/quit", "/exit"):
            return 0
        if user == "/reset":
            history = []
            continue
        history.append({"role": "user", "content": user})
        print("bot> ", end="", flush=True)
        last_p, result = None, None
        for ev in engine.stream([history], cfg):
            print(ev.delta, end="", flush=True)
            last_p = ev.p_malicious if ev.p_malicious is not None else last_p
            if ev.finished:
                result = ev.result
        n_int = len(result.trace.interventions) if result else 0
        threshold = engine.resolve([cfg])[0].threshold
        print(f"\n     {_indicator(last_p, threshold)}" + (f" intervened x{n_int}" if n_int else ""))
        history.append({"role": "assistant", "content": result.text if result else ""})


def _calibrate(args: argparse.Namespace) -> int:
    from safecls.config import apply_overrides, load_config, validate
    from safecls.data.sft_records import read_sft_jsonl
    from safecls.inference.calibration import CalibrationConfig, calibrate
    from safecls.io import atomic_write
    from safecls.model import SafeClsModel
    from safecls.model.checkpoint import CALIBRATION_NAME

    given = [] if args.max_benign_flagged is None else [f"max_benign_flagged={args.max_benign_flagged}"]
    if args.config:
        cfg = load_config(args.config, CalibrationConfig, given + args.set)
    else:
        cfg = validate(CalibrationConfig, apply_overrides({}, given + args.set), source="command line")
    model = SafeClsModel.from_pretrained(args.model)
    records = read_sft_jsonl(args.data)
    prompts = [[m.model_dump() for m in r.prompt_messages] for r in records]
    cal = calibrate(model, prompts, [r.label for r in records], cfg)
    saved = cal.for_checkpoint()
    atomic_write(Path(args.model) / CALIBRATION_NAME, json.dumps(saved, indent=2) + "\n")
    verdict = "meets" if cal.met_target else "MISSES"
    first = "" if cal.request_threshold is None else f" (first read {cal.request_threshold:.3f})"
    print(f"threshold {cal.threshold:.3f}{first}, tau {cal.tau}: {100 * cal.benign_flagged:.1f}% of {cal.n_benign} "
          f"benign dev requests flagged ({verdict} the {100 * cal.target:.1f}% target); {100 * cal.harmful_missed:.1f}% of "
          f"{cal.n_harmful} harmful dev requests not flagged at the start. Moderation (requests only): threshold "
          f"{saved['moderation']['threshold']:.3f}. Written to {args.model}/{CALIBRATION_NAME}")
    return 0


def register(sub: Any) -> None:
    g = sub.add_parser("generate", help="generate with strategic attention/decoding; JSONL out")
    g.add_argument("prompt", nargs="*", help="prompts (or --file)")
    g.add_argument("--file", help=".txt (one per line) or .jsonl ('prompt' or 'messages')")
    g.add_argument("--out", help="JSONL output (default: stdout)")
    g.add_argument("--batch-size", type=int, default=16)
    add_decode_args(g)
    g.set_defaults(func=_generate)
    k = sub.add_parser("calibrate", help="choose a checkpoint's decode threshold and tau on a labelled dev split",
                       description="Writes MODEL/calibration.json: the threshold and tau every decode that leaves them "
                                   "unset takes (generate, chat, serve, eval), and the request-only threshold "
                                   "/v1/moderations flags above.")
    k.add_argument("--model", required=True, help="a safecls checkpoint folder")
    k.add_argument("--data", required=True, help="labelled dev JSONL (messages + label), disjoint from evaluation sets")
    k.add_argument("--config", help="a CalibrationConfig YAML (the recipe's: configs/recipe/calibrate.yaml); --set and "
                                    "--max-benign-flagged override it")
    k.add_argument("--max-benign-flagged", type=float,
                   help="target share of benign dev requests refused (default: the config's, else 0.03)")
    k.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any CalibrationConfig field, e.g. decode.schedule=every or taus=[1,3]")
    k.set_defaults(func=_calibrate)
    c = sub.add_parser("chat", help="interactive terminal chat with a live safety indicator")
    add_decode_args(c)
    c.set_defaults(func=_chat)
