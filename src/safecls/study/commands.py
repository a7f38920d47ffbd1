"""`safecls study head|utility|collect|report`: the measurements beside the attack tables, the committed run folders
(study/), and docs/RESULTS.md made from them.

    safecls study head    --model safecls=default --model sft-only=runs/recipe/sft-only/final   -> study/head.json
    safecls study utility --model base=base --model safecls=default ...                         -> study/utility.json
    safecls study collect                      # runs/recipe and runs/study -> study/ (configs, metrics, records.gz)
    safecls study report                       # study/ -> docs/RESULTS.md
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from safecls.errors import ConfigError
from safecls.io import atomic_write

logger = logging.getLogger(__name__)

STUDY = Path("study")


def _models(specs: list[str]) -> list[tuple[str, str]]:

    out = []
    for s in specs:
        name, sep, ref = s.partition("=")
        if not sep or not name or not ref:
            raise ConfigError(f"--model {s!r}: expected NAME=REF (e.g. safecls=default). Fix: name each model")
        out.append((name, ref))
    return out


def _read_jsonl(path: Path) -> list[dict]:
    from safecls.data.files import iter_jsonl

    return [row for _, row in iter_jsonl(path)]


def merged(path: Path, entries: dict[str, Any]) -> dict[str, Any]:
    """What `path` holds ({name: result}) with `entries` put in: a model measured again replaces its own entry, in
    place; the others stay, so models trained at different times share one file."""
    if not path.exists():
        return dict(entries)

    fix = "Fix: delete it or pass another --out"
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not JSON ({e}). {fix}") from e
    if isinstance(old, list):  # study/head.json: a list of results, each naming its model
        if not all(isinstance(row, dict) and "model" in row for row in old):
            raise ConfigError(f"{path}: a list whose entries do not all name their model. {fix}")
        old = {row["model"]: row for row in old}
    if not isinstance(old, dict):
        raise ConfigError(f"{path}: holds {type(old).__name__}, not results by model. {fix}")
    return {**old, **entries}


def _head(args: argparse.Namespace) -> int:
    from safecls.data.benchmarks import load_benchmark
    from safecls.inference.config import DecodeConfig
    from safecls.inference.engine import Engine
    from safecls.model.resolve import resolve_model
    from safecls.study.head import head_study, pair_sets, probe_study, request_sets

    recipe = Path(args.recipe)
    examples = _read_jsonl(recipe / "data" / "examples.jsonl")
    sets = request_sets(examples, load_benchmark("xstest", args.data_dir), load_benchmark("advbench", args.data_dir))
    pairs = pair_sets(_read_jsonl(recipe / "data" / "pretrain_test.jsonl"))
    out = {}
    for name, ref in _models(args.model):
        r = resolve_model(ref)
        decode = Engine(r.model).resolve([DecodeConfig()])[0]
        logger.info("head study: %s (request threshold %.3f, mid-reply %.3f)", name, decode.request_threshold,
                    decode.threshold)
        out[name] = head_study(name, r.model, decode.threshold, sets, pairs, decode.request_threshold).model_dump()
    if args.probe:
        base = resolve_model("base")
        train = [e for e in examples if e["split"] == "train"]
        logger.info("head study: the frozen-base probe floor")
        probe = probe_study(base.model, base.tokenizer, ([e["prompt"] for e in train if e["label"] == 1],
                                                         [e["prompt"] for e in train if e["label"] == 0]), sets)
        out[probe.model] = probe.model_dump()
    atomic_write(Path(args.out), json.dumps(list(merged(Path(args.out), out).values()), indent=1) + "\n")
    return 0


def _utility(args: argparse.Namespace) -> int:
    from safecls.model.resolve import resolve_model
    from safecls.study.utility import reference_nll

    rows = [r for r in _read_jsonl(Path(args.recipe) / "data" / "heldout_benign.jsonl") if r.get("reference")]
    out = {}
    for name, ref in _models(args.model):
        r = resolve_model(ref)
        nll = reference_nll(r.model, r.tokenizer, [x["prompt"] for x in rows], [x["reference"] for x in rows])
        logger.info("utility: %s NLL %.4f over %d tokens", name, nll.mean, nll.tokens)
        out[name] = nll.model_dump()
    atomic_write(Path(args.out), json.dumps(merged(Path(args.out), out), indent=1) + "\n")
    return 0


def collect(runs: Path = Path("runs"), study: Path = STUDY) -> list[Path]:
    """Copy what a reader needs of each training and study run into study/: configs, metrics, held-out eval,
    calibration, and per-prompt records (gzip). Weights stay out."""
    written = [collect_run(run.parent, study) for run in sorted((runs / "recipe").glob("*/config.yaml"))]
    if (runs / "recipe" / "data" / "manifest.json").is_file():
        written.append(keep_manifest(runs / "recipe" / "data" / "manifest.json", study / "data"))
    written += [collect_run(m.parent, study) for m in sorted((runs / "study").glob("*/metrics.json"))]
    return written


def collect_run(run: Path, study: Path = STUDY, name: str | None = None) -> Path:
    """One run into study/eval/<name> (a study run: it has metrics.json) or study/train/<name> (a training run:
    config.yaml); `name` defaults to the run folder's."""
    if (run / "metrics.json").is_file():
        dest = study / "eval" / (name or run.name)
        dest.mkdir(parents=True, exist_ok=True)
        for file in ("config.yaml", "metrics.json", "probing.json"):
            if (run / file).is_file():
                shutil.copy2(run / file, dest / file)
        with (run / "records.jsonl").open("rb") as src, (dest / "records.jsonl.gz").open("wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as g:  # the same bytes on every run
            shutil.copyfileobj(src, g)
        return dest
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run}: neither a study run (metrics.json) nor a training run (config.yaml). Fix: pass a "
                          "run folder, e.g. runs/study/<name> or runs/recipe/<stage>")
    dest = study / "train" / (name or run.name)
    dest.mkdir(parents=True, exist_ok=True)
    for file in ("config.yaml", "metrics.jsonl", "eval.json", "fit.json"):
        if (run / file).is_file():
            shutil.copy2(run / file, dest / file)
    if (run / "final" / "calibration.json").is_file():
        shutil.copy2(run / "final" / "calibration.json", dest / "calibration.json")
    return dest


def keep_manifest(manifest: Path, data: Path) -> Path:
    """Copy a recipe data manifest into study/data/. manifest.json describes the data the committed runs were
    trained on, so a manifest of other data (a machine whose runs/recipe holds another version) goes beside it under
    its own digest instead of over it."""
    body = manifest.read_bytes()
    dest = data / "manifest.json"
    if dest.is_file() and dest.read_bytes() != body:
        dest = data / f"manifest-{hashlib.sha256(body).hexdigest()[:12]}.json"
        logger.warning("study collect: %s describes other data than study/data/manifest.json; kept as %s",
                       manifest, dest)
    atomic_write(dest, body)
    return dest


def _collect(args: argparse.Namespace) -> int:
    if args.run:
        named = [(Path(p), n or None) for p, _, n in (r.partition("=") for r in args.run)]
        written = [collect_run(p, Path(args.study), n) for p, n in named]
    else:
        written = collect(Path(args.runs), Path(args.study))
    for d in written:
        print(d)
    return 0


def _report(args: argparse.Namespace) -> int:
    from safecls.study.results import write_results

    print(write_results(Path(args.study), Path(args.out)))
    return 0


def register(sub: Any) -> None:
    st = sub.add_parser("study", help="the study's measurements, its committed run folders, and docs/RESULTS.md")
    ss = st.add_subparsers(dest="study_command", metavar="STEP", required=True)
    h = ss.add_parser("head", help="head AUCs on held-out sets and (prompt, response) pairs; the frozen-base probe")
    u = ss.add_parser("utility", help="NLL of held-out benign reference answers per model")
    for p, out in ((h, "study/head.json"), (u, "study/utility.json")):
        p.add_argument("--model", action="append", default=[], metavar="NAME=REF", help="a model to measure")
        p.add_argument("--recipe", default="runs/recipe", help="the recipe's folder (its data/ holds the splits)")
        p.add_argument("--data-dir", default="../shared/data")
        p.add_argument("--out", default=out, help=f"results file (default {out}); a model measured again replaces "
                                                   "its entry, the others stay")
    h.add_argument("--probe", action="store_true", help="also fit the frozen-base logistic probe (the floor)")
    h.set_defaults(func=_head)
    u.set_defaults(func=_utility)
    c = ss.add_parser("collect", help="copy run configs, metrics and gzipped records into study/")
    c.add_argument("--runs", default="runs")
    c.add_argument("--run", action="append", default=[], metavar="PATH[=NAME]",
                   help="collect only this run folder (repeatable), under NAME in study/; the data manifest stays")
    c.add_argument("--study", default="study")
    c.set_defaults(func=_collect)
    r = ss.add_parser("report", help="write docs/RESULTS.md from study/")
    r.add_argument("--study", default="study")
    r.add_argument("--out", default="docs/RESULTS.md")
    r.set_defaults(func=_report)
