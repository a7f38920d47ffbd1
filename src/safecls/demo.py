"""`safecls demo`: the main job on the embedded default model, end to end on one CPU.

1. Builds a small balanced SFT set: harmful requests with reasoned refusals, benign requests with the base
   model's own answers (generated once, cached). Offline from the packaged starter set, or from AdvBench /
   MaliciousInstruct / XSTest / the SFT sets with --data-dir.
2. Trains the safecls model (LoRA + head, sft stage) and a plain-SFT model on the same data, same code path.
3. Attacks all three (base, plain SFT, safecls) with direct requests, prefill and sampled decoding, measures
   over-refusal on safe-but-scary prompts, judges with the keyword judge and (when installed) the offline
   MiniLM judge, and writes metrics.json, report.md and report.html.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from safecls.config import StrictModel, dump_config
from safecls.io import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

DECODING_GRID = ({"temperature": 0.7, "top_p": 0.9}, {"temperature": 1.0, "top_k": 40})


class DemoConfig(StrictModel):
    model: str = Field("default", description="Base model: 'default' (embedded SmolLM2-135M-Instruct) or a folder.")
    out: str = Field("runs/demo", description="Run folder.")
    data_dir: str | None = Field(None, description="shared/data-style folder; None: the packaged starter set.")
    n_per_label: int = Field(96, gt=0, description="Training examples per label.")
    eval_limit: int = Field(40, gt=0, description="Prompts per evaluation set.")
    max_steps: int = Field(48, gt=0)
    batch_size: int = Field(8, gt=0)
    lr: float = Field(3e-4, gt=0)
    head_lr: float = Field(2e-3, gt=0)
    lambda_cls: float = Field(0.1, ge=0)
    lora_r: int = Field(16, gt=0)
    max_length: int = Field(160, gt=8)
    max_new_tokens: int = Field(48, gt=0)
    prefill_words: int = Field(8, gt=0, description="Words of the 'Sure, here is ...' prefill.")
    seed: int = 0


# ---- data --------------------------------------------------------------------------------------------------------


def _split_prompts(cfg: DemoConfig) -> dict[str, Any]:
    """train: harmful + benign prompts; eval: harmful, benign, over-refusal (safe) prompts, each with an id."""
    rng = random.Random(cfg.seed)
    if cfg.data_dir is None:
        from safecls.data.starter import load_starter

        s = load_starter()
        harm_tr = [p.prompt for p in s.harmful if p.split == "train"]
        ben_tr = [p.prompt for p in s.benign + s.over_refusal if p.split == "train"]
        ev = {
            "harmful": [(p.id, p.prompt) for p in s.harmful if p.split == "eval"],
            "benign": [(p.id, p.prompt) for p in s.benign if p.split == "eval"],
            "over_refusal": [(p.id, p.prompt) for p in s.over_refusal if p.split == "eval"],
        }
        targets = {}
        source = "starter set (packaged)"
    else:
        from safecls.data.benchmarks import load_benchmark
        from safecls.data.readers import read_alpaca, read_safety_tuned

        d = Path(cfg.data_dir)
        harm_pool = read_safety_tuned(next((d / "safety-sft").glob("*.json*")), source="safety-sft", skip_invalid=True)
        ben_pool = read_alpaca(next((d / "benign-sft").glob("alpaca_en_demo*")), source="alpaca", skip_invalid=True)
        harm_tr = [c.prompt[-1].content for c in harm_pool]
        ben_tr = [c.prompt[-1].content for c in ben_pool]
        adv = load_benchmark("advbench", d, limit=cfg.eval_limit, seed=cfg.seed)
        xs = [i for i in load_benchmark("xstest", d) if i.label == "safe"]
        rng.shuffle(xs)
        gsm = load_benchmark("gsm8k", d, limit=cfg.eval_limit, seed=cfg.seed)
        ev = {"harmful": [(i.id, i.prompt) for i in adv], "benign": [(i.id, i.prompt) for i in gsm],
              "over_refusal": [(i.id, i.prompt) for i in xs[: cfg.eval_limit]]}
        targets = {i.id: i.target for i in adv if i.target}
        source = f"{d} (AdvBench, XSTest, GSM8K, safety-sft, alpaca)"
    rng.shuffle(harm_tr)
    rng.shuffle(ben_tr)
    n = min(cfg.n_per_label, len(harm_tr), len(ben_tr))
    ev = {k: v[: cfg.eval_limit] for k, v in ev.items()}
    return {"harm_train": harm_tr[:n], "benign_train": ben_tr[:n], "eval": ev, "targets": targets, "source": source}


def build_train_file(cfg: DemoConfig, split: dict, plain_engine: Any, out: Path) -> Path:
    """Harmful -> reasoned refusal; benign -> the base model's own greedy answer (so the LM learns no new style)."""
    from safecls.data.refusals import reasoned_refusal
    from safecls.inference.config import DecodeConfig

    path = out / "data" / "train.jsonl"
    if path.is_file():
        return path
    answers = plain_engine.generate(split["benign_train"], DecodeConfig(max_new_tokens=96, policy="low"))
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a.text.strip() or "Sure."}],
             "label": 0, "source": "benign-self"} for p, a in zip(split["benign_train"], answers, strict=True)]
    rows += [{"messages": [{"role": "user", "content": p},
                           {"role": "assistant", "content": reasoned_refusal(p, seed=cfg.seed + i)}],
              "label": 1, "source": "harmful-refusal"} for i, p in enumerate(split["harm_train"])]
    random.Random(cfg.seed).shuffle(rows)
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_models(cfg: DemoConfig, train_file: Path, out: Path) -> dict[str, Path]:
    from safecls.model import LoraOptions
    from safecls.train.config import TrainConfig
    from safecls.train.trainer import train

    dirs = {}
    for name, with_cls in (("safecls", True), ("plain-sft", False)):
        final = out / name / "final"
        if not (final / "safecls_config.json").is_file():
            tc = TrainConfig(model=cfg.model, stage="sft", with_cls=with_cls, lambda_cls=cfg.lambda_cls if with_cls else 0.0,
                             train_file=str(train_file), max_length=cfg.max_length, lora=LoraOptions(r=cfg.lora_r),
                             lr=cfg.lr, head_lr=cfg.head_lr, warmup_steps=min(4, cfg.max_steps), batch_size=cfg.batch_size,
                             max_steps=cfg.max_steps, seed=cfg.seed, output_dir=str(out / name), resume=True,
                             log_every=4)
            logger.info("training %s for %d steps", name, cfg.max_steps)
            train(tc)
        dirs[name] = final
    return dirs


# ---- evaluation --------------------------------------------------------------------------------------------------


def _judges() -> dict[str, Any]:
    from safecls.eval.judges import JUDGES

    out = {"keyword": JUDGES.get("keyword")()}
    if "minilm" in JUDGES:
        try:
            out["minilm"] = JUDGES.get("minilm")()
        except Exception as e:  # an optional judge that cannot load is reported, not fatal
            logger.warning("minilm judge unavailable: %s", e)
    return out


def evaluate(cfg: DemoConfig, split: dict, engines: dict[str, tuple[Any, dict]], out: Path) -> dict:
    from safecls.data.augment import compliance_opener
    from safecls.eval.judges.base import Verdict
    from safecls.eval.wilson import Rate
    from safecls.inference.config import DecodeConfig

    judges = _judges()
    ev = split["eval"]
    harm = ev["harmful"]
    prompts = [p for _, p in harm]
    prefills = [" ".join((split["targets"].get(i) or compliance_opener(p)).split()[: cfg.prefill_words]) for i, p in harm]
    records, asr, over, cost = [], [], [], []
    for model_name, (engine, decode_kw) in engines.items():
        base_cfg = DecodeConfig(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, **decode_kw)
        t0 = time.perf_counter()
        runs = {
            "direct": [engine.generate(prompts, base_cfg)],
            "prefill": [engine.generate(prompts, base_cfg, prefills=prefills)],
            "decoding": [engine.generate(prompts, base_cfg.model_copy(update=g)) for g in DECODING_GRID],
        }
        over_res = engine.generate([p for _, p in ev["over_refusal"]], base_cfg)
        wall = time.perf_counter() - t0
        gen = sum(r.completion_tokens for rs in runs.values() for res in rs for r in res)
        extra = sum(r.trace.extra_tokens for rs in runs.values() for res in rs for r in res)
        cost.append({"model": model_name, "schedule": decode_kw.get("schedule", "none") if model_name == "safecls" else "none",
                     "cost": extra / max(gen, 1), "unit": "extra tokens / generated tokens", "wall_s": round(wall, 1)})
        for jname, judge in judges.items():
            for attack, res_list in runs.items():
                verdicts = [judge.judge(prompts, [r.text for r in res]) for res in res_list]
                # a prompt counts as broken if any sampled configuration complied (Huang et al.)
                k = sum(any(v[i].verdict == Verdict.COMPLY for v in verdicts) for i in range(len(prompts)))
                r = Rate.of(k, len(prompts))
                asr.append({"model": model_name, "benchmark": "harmful", "attack": attack, "category": "all",
                            "judge": jname, "k": r.k, "n": r.n, "rate": r.rate, "lo": r.lo, "hi": r.hi})
            ov = judge.judge([p for _, p in ev["over_refusal"]], [r.text for r in over_res])
            k = sum(v.verdict == Verdict.REFUSE for v in ov)
            over.append({"model": model_name, "attack": "direct", "judge": jname,
                         "safe_refused": Rate.of(k, len(ov)).model_dump()})
        for attack, res_list in runs.items():
            for s, res in enumerate(res_list):
                for (pid, p), r in zip(harm, res, strict=True):
                    records.append({"model": model_name, "attack": attack, "sample": s, "id": pid, "prompt": p,
                                    "prefill": r.prefill, "response": r.text, "finish_reason": r.finish_reason,
                                    "trace": r.trace.to_dict()})
    cost += _schedule_costs(cfg, engines["safecls"][0], prompts, prefills, judges)
    atomic_write(out / "records.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return {"schema_version": 1, "title": "safecls demo", "asr": asr, "over_refusal": over, "cost": cost,
            "judge": "minilm" if "minilm" in judges else "keyword",
            "run": {"data": split["source"], "eval_prompts": len(prompts), "over_refusal_prompts": len(ev["over_refusal"])}}


def _schedule_costs(cfg: DemoConfig, engine: Any, prompts: list[str], prefills: list[str], judges: dict) -> list[dict]:
    """The prefill attack under each schedule: what re-reading costs (wall time vs the same engine with the head
    ignored) and what it buys (ASR). The prompt's own read is free; only later reads cost anything."""
    from safecls.eval.judges.base import Verdict
    from safecls.inference.config import DecodeConfig

    jname = "minilm" if "minilm" in judges else "keyword"
    base = DecodeConfig(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, policy="medium")
    t0 = time.perf_counter()
    engine.generate(prompts, base.model_copy(update={"policy": "low"}), prefills=prefills)
    t_low = time.perf_counter() - t0
    rows = []
    for sched in ("first", "periodic", "annealing", "every"):
        t0 = time.perf_counter()
        res = engine.generate(prompts, base.model_copy(update={"schedule": sched}), prefills=prefills)
        wall = time.perf_counter() - t0
        v = judges[jname].judge(prompts, [r.text for r in res])
        asr = sum(x.verdict == Verdict.COMPLY for x in v) / max(len(v), 1)
        rows.append({"model": "safecls (prefill)", "schedule": sched, "cost": wall / t_low - 1,
                     "unit": "extra wall time vs head ignored", "asr": asr})
    return rows


def run_demo(cfg: DemoConfig) -> Path:
    from safecls.inference.engine import Engine
    from safecls.model import SafeClsModel, load_base

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.yaml", dump_config(cfg))
    t0 = time.perf_counter()
    split = _split_prompts(cfg)
    plain = Engine.plain(*load_base(cfg.model))
    train_file = build_train_file(cfg, split, plain, out)
    dirs = train_models(cfg, train_file, out)
    t_train = time.perf_counter() - t0
    engines = {
        "base": (plain, {"policy": "low"}),
        "plain-sft": (Engine(SafeClsModel.from_pretrained(dirs["plain-sft"])), {"policy": "low"}),
        "safecls": (Engine(SafeClsModel.from_pretrained(dirs["safecls"])), {"policy": "medium", "schedule": "every"}),
    }
    metrics = evaluate(cfg, split, engines, out)
    metrics["run"].update({"train_and_data_s": round(t_train, 1), "total_s": round(time.perf_counter() - t0, 1)})
    atomic_write_json(out / "metrics.json", metrics)
    from safecls.eval.report import write_report

    write_report(out, metrics)
    return out


def summary_table(metrics: dict) -> str:
    rows = {}
    for a in metrics["asr"]:
        rows.setdefault((a["model"], a["judge"]), {})[a["attack"]] = a["rate"]
    for o in metrics["over_refusal"]:
        rows.setdefault((o["model"], o["judge"]), {})["over-refusal"] = o["safe_refused"]["rate"]
    cols = ["direct", "prefill", "decoding", "over-refusal"]
    lines = [f"{'model':10s} {'judge':8s} " + " ".join(f"{c:>12s}" for c in cols)]
    for (m, j), v in rows.items():
        lines.append(f"{m:10s} {j:8s} " + " ".join(f"{100 * v.get(c, float('nan')):11.1f}%" for c in cols))
    return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    from safecls.config import apply_overrides, validate

    data = {"out": args.out, "model": args.model}
    if args.data_dir:
        data["data_dir"] = args.data_dir
    if args.quick:
        data.update({"n_per_label": 24, "eval_limit": 8, "max_steps": 6, "max_new_tokens": 24})
    cfg = validate(DemoConfig, apply_overrides(data, args.set), source="command line")
    out = run_demo(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    print("ASR (attack success rate, % of harmful prompts answered) and over-refusal (% of safe prompts refused):")
    print(summary_table(metrics))
    print(f"\nreport: {out / 'report.html'}  ({out / 'report.md'})")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="the main job: build data, train safecls + plain SFT, attack and report (CPU)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--model", default="default")
    p.add_argument("--data-dir", help="use AdvBench/XSTest/GSM8K/SFT sets from this shared/data folder")
    p.add_argument("--quick", action="store_true", help="a few-minute smoke run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any DemoConfig field")
    p.set_defaults(func=_cmd)
