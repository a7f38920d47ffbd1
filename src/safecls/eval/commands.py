"""CLI sub-commands of the eval room that need no model: `safecls report RUN_DIR`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from safecls.errors import DataError

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write report.md and report.html from RUN_DIR/metrics.json",
                       description="Build the evaluation report of a run directory from its metrics.json.")
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="run directory holding metrics.json")
    p.add_argument("--title", default=None, help="report heading (default: the title in metrics.json)")
    p.add_argument("--no-plots", action="store_true", help="tables only; does not need matplotlib")
    p.set_defaults(func=_report)


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
