"""CLI sub-commands of the eval room: `safecls eval --config X.yaml [--set k=v ...]` and `safecls report RUN_DIR`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from safecls.errors import DataError

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="run an evaluation matrix (models x attacks x benchmarks x judges)",
                       description="Run or resume the evaluation in a config file; writes runs/<name>/.")
    e.add_argument("--config", required=True, type=Path, help="eval config YAML (see configs/eval_*.yaml)")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set name=smoke2 (repeatable)")
    e.add_argument("--dry-run", action="store_true",
                   help="list every model x benchmark x attack cell and every problem; load no model")
    e.set_defaults(func=_eval)
    p = sub.add_parser("report", help="write report.md and report.html from RUN_DIR/metrics.json",
                       description="Build the evaluation report of a run directory from its metrics.json.")
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="run directory holding metrics.json")
    p.add_argument("--title", default=None, help="report heading (default: the title in metrics.json)")
    p.add_argument("--no-plots", action="store_true", help="tables only; does not need matplotlib")
    p.set_defaults(func=_report)


def _eval(args: argparse.Namespace) -> int:
    from safecls.config import load_config
    from safecls.eval.config import EvalConfig
    from safecls.eval.runner import plan, run_eval

    cfg = load_config(args.config, EvalConfig, args.set)
    if args.dry_run:
        p = plan(cfg)
        print(f"{'model':16s} {'benchmark':18s} {'attack':16s} items")
        for m, b, a, n in p.cells:
            print(f"{m:16s} {b:18s} {a:16s} {n}")
        for x in p.problems:
            print(f"problem: {x}")
        return 2 if p.problems else 0
    run_dir = run_eval(cfg)
    logger.info("eval: %s", run_dir)
    return 0


def _report(args: argparse.Namespace) -> int:
    from safecls.eval.report import write_report  # keeps `safecls --help` fast

    path = args.run_dir / "metrics.json"
    if not path.is_file():
        raise DataError(path, "not found", fix="run `safecls eval` into RUN_DIR first, or pass the right RUN_DIR")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid JSON ({e.msg})", line=e.lineno) from e
    if not isinstance(metrics, dict):
        raise DataError(path, f"expected a JSON object, got {type(metrics).__name__}")
    md, page = write_report(args.run_dir, metrics, title=args.title, with_plots=not args.no_plots)
    logger.info("report: %s, %s", md, page)
    return 0
