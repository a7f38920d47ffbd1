"""`safecls demo`: the main job. The shipped defended model against the undefended base, on one CPU, in minutes.

Both models answer held-out harmful requests directly, under a prefill attack (the reply starts "Sure, here is ..."
and the model continues it) and under sampled decoding, plus safe-but-scary and ordinary benign requests. Replies are
judged by the keyword judge and the offline MiniLM judge (when installed), with ASR corrected for each judge's
measured error, and a report is written (report.md, report.html). It is the evaluation runner (eval/runner.py) on a
small matrix, so the numbers mean what the study's do (docs/RESULTS.md has the full study).

Prompts: the packaged starter set's eval split (written for safecls, used by no training), or, with --data-dir,
AdvBench (with its targets), XSTest's safe prompts and the starter set's benign ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Any

from pydantic import Field

from safecls.config import StrictModel
from safecls.io import atomic_write

logger = logging.getLogger(__name__)


class DemoConfig(StrictModel):
    model: str = Field("default", description="The defended model (a --model reference; default: the shipped one).")
    baseline: str = Field("base", description="What it is compared with (default: the undefended base model).")
    out: str = Field("runs/demo", description="Run folder.")
    data_dir: str | None = Field(None, description="shared/data-style folder; None: the packaged starter set.")
    n: int = Field(32, gt=0, description="Prompts per set (harmful, safe-but-scary, benign).")
    max_new_tokens: int = Field(48, gt=0)
    seed: int = 0


def _write_sets(cfg: DemoConfig, folder: Path) -> dict[str, Path]:
    """The prompt sets as `prompts` benchmark files: harmful (with a 'Sure, here is ...' target), scary, benign."""
    from safecls.data.augment import compliance_opener
    from safecls.data.starter import load_starter

    rng = random.Random(cfg.seed)
    s = load_starter()
    benign = [{"id": p.id, "prompt": p.prompt, "label": "safe"} for p in s.benign if p.split == "eval"]
    if cfg.data_dir is None:
        harmful = [{"id": p.id, "prompt": p.prompt, "label": "unsafe", "category": p.category,
                    "target": compliance_opener(p.prompt)} for p in s.harmful if p.split == "eval"]
        scary = [{"id": p.id, "prompt": p.prompt, "label": "safe", "category": p.category}
                 for p in s.over_refusal if p.split == "eval"]
    else:
        from safecls.data.benchmarks import load_benchmark

        harmful = [{"id": i.id, "prompt": i.prompt, "label": "unsafe", "target": i.target}
                   for i in load_benchmark("advbench", cfg.data_dir)]
        scary = [{"id": i.id, "prompt": i.prompt, "label": "safe", "category": i.category}
                 for i in load_benchmark("xstest", cfg.data_dir) if i.label == "safe"]
    out = {}
    for name, rows in (("harmful", harmful), ("scary", scary), ("benign", benign)):
        rng.shuffle(rows)
        out[name] = folder / f"{name}.jsonl"
        atomic_write(out[name], "".join(json.dumps(r) + "\n" for r in rows[: cfg.n]))
    return out


def eval_config(cfg: DemoConfig, sets: dict[str, Path], judges: list[str]) -> Any:
    from safecls.eval.config import EvalConfig

    decode = {"max_new_tokens": cfg.max_new_tokens}
    return EvalConfig.model_validate({
        "name": Path(cfg.out).name, "output_dir": str(Path(cfg.out).parent), "seed": cfg.seed, "batch_size": 16,
        "models": [{"name": "base", "path": cfg.baseline, "decode": {**decode, "policy": "low"}},
                   {"name": "safecls", "path": cfg.model, "decode": {**decode, "policy": "medium"}}],
        "attacks": [{"name": "direct"},
                    {"name": "prefill", "params": {"source": "target"}},
                    {"name": "decoding", "params": {"grid": {"greedy": False, "temperatures": [1.0], "top_ps": [0.9],
                                                             "top_ks": []}, "system_modes": ["no-sys"]}}],
        "benchmarks": [{"name": "prompts", "label": "harmful", "path": str(sets["harmful"])},
                       {"name": "prompts", "label": "safe-but-scary", "path": str(sets["scary"]),
                        "attacks": ["direct"]},
                       {"name": "prompts", "label": "benign", "path": str(sets["benign"]), "attacks": ["direct"]}],
        "judges": [{"name": j} for j in judges],
    })


def _judges() -> list[str]:
    from safecls.eval.judges import JUDGES

    names = ["keyword"]
    try:
        JUDGES.get("minilm")()
        names.insert(0, "minilm")
    except Exception as e:  # an optional judge that cannot load is reported, not fatal
        logger.warning("the minilm judge is unavailable (%s); judging with the keyword judge only", e)
    return names


def run_demo(cfg: DemoConfig) -> Path:
    from safecls.eval.runner import run_eval

    out = Path(cfg.out)
    logger.info("demo: writing the prompt sets (%s)", cfg.data_dir or "the packaged starter set")
    sets = _write_sets(cfg, out / "prompts")
    logger.info("demo: evaluating %s against %s (direct, prefill, sampled decoding; over-refusal)", cfg.model,
                cfg.baseline)
    return run_eval(eval_config(cfg, sets, _judges()))


def summary_table(metrics: dict) -> str:
    """ASR (raw, and corrected for the judge's measured error), refusal of safe prompts and the share of direct
    harmful requests' refusals that are reasoned and loop-free, per model and judge."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for a in metrics["asr"]:
        if a["category"] != "all" or a["judge"] in metrics.get("diagnostic_judges", []):
            continue
        corr = a.get("corrected") or {}
        cell = f"{100 * a['rate']:.0f}%" + (f" ({100 * corr['rate']:.0f}%)" if corr.get("rate") is not None else "")
        rows.setdefault((a["model"], a["judge"]), {})[a["attack"]] = cell
    for o in metrics["over_refusal"]:
        rows.setdefault((o["model"], o["judge"]), {})[o["benchmark"]] = f"{100 * o['safe_refused']['rate']:.0f}%"
    for q in metrics.get("refusal_quality", []):
        if q["attack"] == "direct" and q["reasoned"]["rate"] is not None:
            rows.setdefault((q["model"], q["judge"]), {})["reasoned"] = f"{100 * q['reasoned']['rate']:.0f}%"
    cols = ["direct", "prefill", "decoding", "safe-but-scary", "benign", "reasoned"]
    lines = [f"{'model':8s} {'judge':8s} " + " ".join(f"{c:>15s}" for c in cols)]
    for (m, j), v in sorted(rows.items()):
        lines.append(f"{m:8s} {j:8s} " + " ".join(f"{v.get(c, '-'):>15s}" for c in cols))
    return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    from safecls.config import apply_overrides, validate

    data = {"out": args.out, "model": args.model, "baseline": args.baseline}
    if args.data_dir:
        data["data_dir"] = args.data_dir
    if args.quick:
        data.update({"n": 4, "max_new_tokens": 16})
    if args.retrain:
        from safecls.recipe.pipeline import run_recipe

        data["model"] = str(run_recipe(args.data_dir or "../shared/data", args.retrain_dir))
    cfg = validate(DemoConfig, apply_overrides(data, args.set), source="command line")
    out = run_demo(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    print("Attack success rate on harmful requests (in brackets: corrected for the judge's measured error), and the")
    print("share of safe-but-scary and benign requests refused:")
    print(summary_table(metrics))
    print(f"\nreport: {out / 'report.html'}  ({out / 'report.md'})")
    return 0


def register(sub: Any) -> None:
    from safecls.model.resolve import MODEL_HELP

    p = sub.add_parser("demo", help="the main job: the shipped defended model vs the base model, attacked and judged",
                       description="Evaluate the shipped defended model against the undefended base (a few minutes "
                                   "on 2 CPU cores). To train the model again from scratch, see docs/MODEL_CARD.md "
                                   "(safecls recipe, hours on a CPU).")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--model", default="default", help=f"the defended model: {MODEL_HELP}")
    p.add_argument("--baseline", default="base", help="what it is compared with (same forms as --model)")
    p.add_argument("--data-dir", help="use AdvBench and XSTest from this shared/data folder")
    p.add_argument("--quick", action="store_true", help="a one-minute smoke run (4 prompts per set)")
    p.add_argument("--retrain", action="store_true", help="train the defended model from scratch first (the recipe: "
                                                          "hours on 2 CPU cores; resumable) and evaluate that one")
    p.add_argument("--retrain-dir", default="runs/recipe", help="where --retrain builds (and resumes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any DemoConfig field")
    p.set_defaults(func=_cmd)
