"""Evaluation report: `write_report(run_dir, metrics)` writes report.md and a self-contained report.html.

The eval runner fills `RUN_DIR/metrics.json` with this schema (every section optional; unknown top-level keys are
warned about and ignored, so an older safecls can read a newer file):

    {
      "schema_version": 1,
      "title": "safecls evaluation",                    # report heading
      "run": {"name": "sft-annealing", "seed": 0, ...},  # free-form key/values shown first (config, versions)
      "judge": "minilm",                                # the headline judge (rows exist for every judge)
      "diagnostic_judges": ["safecls-head"],            # shown apart, never as headline numbers
      "asr": [                                          # rates.asr_table(): one row per model x benchmark x attack
        {"model": "sft", "benchmark": "advbench",       #   x judge with category "all", plus one per category
         "attack": "prefill", "category": "all", "judge": "minilm",
         "k": 12, "n": 520, "rate": 0.023, "lo": 0.013, "hi": 0.040,          # k/n COMPLY; Wilson 95% [lo, hi]
         "corrected": {"rate": 0.02, "lo": 0.0, "hi": 0.05, "below_false_rate": false}}],   # eval/correction.py
      "over_refusal": [                                 # rates.over_refusal(), per set with safe-labelled requests
        {"model": "sft", "attack": "direct", "judge": "minilm", "benchmark": "xstest",
         "safe_refused": {"k": 5, "n": 250, "rate": 0.02, "lo": ..., "hi": ...},
         "unsafe_complied": {"k": 30, "n": 200, "rate": 0.15, "lo": ..., "hi": ...}}],
      "refusal_quality": [                              # rates.refusal_quality(): harmful requests refused
        {"model": "sft", "attack": "direct", "judge": "minilm",
         "reasoned": {"k": 90, "n": 100, ...}, "loop_free": {"k": 97, "n": 100, ...}}],
      "utility": [                                      # GSM8K exact match (rates.gsm8k_accuracy)
        {"model": "sft", "benchmark": "gsm8k", "metric": "exact_match",
         "k": 40, "n": 100, "rate": 0.4, "lo": ..., "hi": ...}],
      "scores": [                                       # non-rate scores, e.g. an MT-Bench judge's mean 1..10
        {"model": "sft", "benchmark": "mt-bench", "metric": "mean_score", "value": 4.2, "n": 80}],
      "agreement": {"judges": ["keyword", "x"], "n": 300,               # agreement.agreement_matrix()
                    "kappa": [[1.0, 0.41], [0.41, 1.0]],                # None where undefined
                    "agreement": [[1.0, 0.8], [0.8, 1.0]]},
      "probing": [                                      # top-K entropy / sharpness per response position
        {"model": "sft", "setting": "prefill", "metric": "entropy", "values": [2.1, 1.7, ...]}],
      "cost": [                                         # re-classification schedules
        {"model": "sft", "schedule": "annealing", "cost": 0.18, "unit": "x plain decode", "asr": 0.02}]
    }

Plots (PNG, base64 data URIs inside the HTML, no external assets): ASR bars with Wilson error bars per benchmark
(model x attack), probing curves per metric, cost per schedule. report.md has the same tables and points at the
HTML for the plots.
"""

from __future__ import annotations

import base64
import html
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safecls.errors import DataError
from safecls.eval import plots
from safecls.eval.agreement import AgreementMatrix
from safecls.eval.judges.validation import VALIDATION_HEADERS, validation_line
from safecls.eval.rates import ALL, AsrRow, OverRefusalRow, RefusalQualityRow
from safecls.eval.wilson import Rate
from safecls.io import atomic_write

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class UtilityRow(Rate):
    model: str
    benchmark: str
    metric: str = "exact_match"


class ScoreRow(BaseModel):
    model: str
    benchmark: str
    metric: str
    value: float
    n: int | None = None


class ProbingCurve(BaseModel):
    model: str
    setting: str = Field(description="direct, prefill, nested, ...")
    metric: Literal["entropy", "sharpness"]
    values: list[float]


class CostRow(BaseModel):
    model: str = ""
    schedule: str
    cost: float = Field(description="extra cost of the re-classification, e.g. 0.18 = +18% of plain decoding")
    unit: str = "x plain decode"
    asr: float | None = Field(None, description="ASR under this schedule, shown beside the cost")


class TradeoffCurve(BaseModel):
    """A calibrated model's trade-off on its dev split (calibration.json): along the threshold, benign requests
    flagged at the first read against harmful requests not flagged, and the point calibration chose."""

    model: str
    threshold: float
    tau: int
    request_threshold: float | None = None  # the first read's own, where calibration chose one
    target: float
    benign_flagged: float
    harmful_missed: float
    n_benign: int
    n_harmful: int
    curve: list[dict[str, float]]  # {threshold, benign_flagged, harmful_missed}


class ReportMetrics(BaseModel):
    """The metrics.json schema (see the module docstring)."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    title: str = "safecls evaluation"
    run: dict[str, Any] = Field(default_factory=dict)
    judge: str | None = None
    diagnostic_judges: list[str] = Field(default_factory=list)  # shown apart, never as a headline number
    asr: list[AsrRow] = Field(default_factory=list)
    over_refusal: list[OverRefusalRow] = Field(default_factory=list)
    refusal_quality: list[RefusalQualityRow] = Field(default_factory=list)
    utility: list[UtilityRow] = Field(default_factory=list)
    scores: list[ScoreRow] = Field(default_factory=list)
    agreement: AgreementMatrix | None = None
    probing: list[ProbingCurve] = Field(default_factory=list)
    cost: list[CostRow] = Field(default_factory=list)
    tradeoff: list[TradeoffCurve] = Field(default_factory=list)


def parse_metrics(metrics: dict[str, Any] | ReportMetrics, source: str = "metrics") -> ReportMetrics:
    """Validate a metrics dict; unknown top-level keys get one warning naming them (a newer writer's sections)."""
    if isinstance(metrics, ReportMetrics):
        return metrics
    unknown = sorted(set(metrics) - set(ReportMetrics.model_fields))
    if unknown:
        warnings.warn(f"{source}: ignoring unknown key(s) {unknown}", stacklevel=3)
    try:
        return ReportMetrics.model_validate(metrics)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"]))
        raise DataError(source, f"{where}: {err['msg']} (got {err.get('input')!r:.80})",
                        fix="see the schema in safecls.eval.report") from e


# ---------------------------------------------------------------- document model: blocks rendered twice


class _Table(BaseModel):
    headers: list[str]
    rows: list[list[str]]


Block = tuple[str, Any]  # ("h2", text) | ("p", text) | ("table", _Table) | ("img", (alt, png bytes))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def build_blocks(m: ReportMetrics, *, with_plots: bool = True) -> list[Block]:
    blocks: list[Block] = []
    if m.run:
        blocks += [("h2", "Run"), ("table", _Table(headers=["key", "value"],
                                                   rows=[[str(k), str(v)] for k, v in m.run.items()]))]
    if m.asr:
        diag = set(m.diagnostic_judges)
        blocks += _asr_blocks([r for r in m.asr if r.judge not in diag], m.judge, with_plots)
        if diag & {r.judge for r in m.asr}:
            blocks += _diagnostic_blocks([r for r in m.asr if r.judge in diag])
    if m.over_refusal:
        blocks += [("h2", "Over-refusal (safe prompts refused)"), ("table", _Table(
            headers=["model", "benchmark", "attack", "judge", "safe prompts refused", "unsafe prompts complied"],
            rows=[[r.model, r.benchmark, r.attack, r.judge, r.safe_refused.fmt(),
                   r.unsafe_complied.fmt() if r.unsafe_complied else "—"] for r in m.over_refusal]))]
    if m.refusal_quality:
        blocks += [("h2", "Refusal quality (harmful requests refused)"),
                   ("p", "Of the harmful requests each judge calls refused: the refusals that give a reason (a reason "
                         "clause with words beyond the refusal itself) and do not loop, and those that do not loop "
                         "(no word 6-gram twice); data/text_quality.py."),
                   ("table", _Table(headers=["model", "attack", "judge", "reasoned, loop-free", "loop-free"],
                                    rows=[[r.model, r.attack, r.judge, r.reasoned.fmt(), r.loop_free.fmt()]
                                          for r in m.refusal_quality]))]
    if m.utility or m.scores:
        rows = [[r.model, r.benchmark, r.metric, r.fmt()] for r in m.utility]
        rows += [[r.model, r.benchmark, r.metric, f"{r.value:.3f}" + (f" (n={r.n})" if r.n is not None else "")]
                 for r in m.scores]
        blocks += [("h2", "Utility"), ("table", _Table(headers=["model", "benchmark", "metric", "value"], rows=rows))]
    if m.agreement is not None:
        a = m.agreement
        blocks += [("h2", f"Judge agreement (n={a.n})"),
                   ("p", "Cohen's kappa above the diagonal, raw agreement below; n/a where kappa is undefined."),
                   ("table", _Table(headers=["", *a.judges], rows=[
                       [j1] + [_num(a.kappa[i][j]) if j > i else ("—" if i == j else _pct(a.agreement[i][j]))
                               for j in range(len(a.judges))]
                       for i, j1 in enumerate(a.judges)]))]
    if m.probing:
        blocks.append(("h2", "Probing"))
        blocks.append(("table", _Table(headers=["model", "setting", "metric", "positions", "first", "mean"], rows=[
            [c.model, c.setting, c.metric, str(len(c.values)), _num(c.values[0] if c.values else None),
             _num(sum(c.values) / len(c.values) if c.values else None)] for c in m.probing])))
        if with_plots:
            for metric in sorted({c.metric for c in m.probing}):
                blocks.append(("img", (f"probing {metric}", plots.probing_curves(m.probing, metric))))
    if m.cost:
        blocks += [("h2", "Cost per schedule"), ("table", _Table(
            headers=["model", "schedule", "cost", "unit", "ASR"],
            rows=[[r.model, r.schedule, f"{r.cost:.3f}", r.unit, _pct(r.asr)] for r in m.cost]))]
        if with_plots:
            blocks.append(("img", ("cost per schedule", plots.cost_bars(m.cost))))
    if m.tradeoff:
        blocks += [("h2", "Calibration trade-off (dev split)"),
                   ("p", "Each model's threshold and tau as calibrated on its labelled dev split (disjoint from every "
                         "evaluation set): benign dev requests refused against harmful dev requests let through, "
                         "including refusals mid-reply."),
                   ("table", _Table(headers=["model", "threshold", "tau", "target", "benign refused", "harmful missed",
                                             "n benign / harmful"],
                                    rows=[[t.model, f"{t.threshold:.3f}" + ("" if t.request_threshold is None else
                                                                         f" (first read {t.request_threshold:.3f})"),
                                           str(t.tau), _pct(t.target),
                                           _pct(t.benign_flagged), _pct(t.harmful_missed),
                                           f"{t.n_benign} / {t.n_harmful}"] for t in m.tradeoff]))]
        if with_plots:
            blocks.append(("img", ("calibration trade-off", plots.tradeoff_curves(m.tradeoff))))
    return blocks


def _cell(r: AsrRow) -> str:
    return r.fmt() + (f"; corrected {r.corrected.fmt()}" if r.corrected is not None else "")


CORRECTION_NOTE = ("'corrected': the rate behind the judge's verdicts given its measured recall and false-COMPLY rate "
                   "on the labelled set (Rogan-Gladen), with a 95% interval that carries the labelled set's "
                   "uncertainty too (eval/correction.py). * the observed rate is below the judge's false-COMPLY "
                   "rate: its error rates did not transfer to these replies.")


def _asr_table(rows: Sequence[AsrRow]) -> _Table:
    overall = [r for r in rows if r.category == ALL]
    benchmarks = sorted({r.benchmark for r in overall})
    judges = sorted({r.judge for r in rows})
    cells = {(r.model, r.attack, r.benchmark, r.judge): r for r in overall}
    pairs = sorted({(r.model, r.attack) for r in overall})
    cols = [(b, j) for b in benchmarks for j in judges]
    return _Table(headers=["model", "attack", *(f"{b} [{j}]" if len(judges) > 1 else b for b, j in cols)],
                  rows=[[m, a, *(_cell(cells[(m, a, b, j)]) if (m, a, b, j) in cells else "—" for b, j in cols)]
                        for m, a in pairs])


def _diagnostic_blocks(rows: Sequence[AsrRow]) -> list[Block]:
    judges = ", ".join(sorted({r.judge for r in rows}))
    return [("h2", "Diagnostic: the model's own head as judge"),
            ("p", f"Not a headline number ({judges}): a defended model's head grading its own defence agrees with "
                  "itself by construction. Shown to compare with the independent judges above."),
            ("table", _asr_table(rows))]


def _asr_blocks(rows: Sequence[AsrRow], judge: str | None, with_plots: bool) -> list[Block]:
    """Every ASR is shown once per judge, side by side: a number is only as good as the judge behind it."""
    judges = sorted({r.judge for r in rows})
    benchmarks = sorted({r.benchmark for r in rows if r.category == ALL})
    corrected = any(r.corrected is not None for r in rows)
    blocks: list[Block] = [
        ("h2", "Attack success rate"),
        ("p", f"COMPLY verdicts per judge ({', '.join(judges) or judge}); Wilson 95% intervals in brackets."
              + (" " + CORRECTION_NOTE if corrected else "")),
        ("table", _asr_table(rows)),
        ("p", "How far each judge agrees with responses labelled by reading (held-out split of safecls's labelled set; "
              "docs/judge_labelling_guide.md):"),
        ("table", _Table(headers=VALIDATION_HEADERS, rows=[validation_line(j) for j in judges])),
    ]
    if with_plots:
        main = judge if judge in judges else (judges[0] if judges else None)
        for b in benchmarks:
            sel = [r for r in rows if r.judge == main]
            blocks.append(("img", (f"ASR {b}", plots.asr_bars(sel, b))))
    per_cat = [r for r in rows if r.category != ALL]
    if per_cat:
        blocks += [("h2", "ASR by category"), ("table", _Table(
            headers=["benchmark", "model", "attack", "category", "judge", "ASR"],
            rows=[[r.benchmark, r.model, r.attack, r.category, r.judge, _cell(r)]
                  for r in sorted(per_cat, key=lambda r: (r.benchmark, r.model, r.attack, r.category, r.judge))]))]
    return blocks


def render_markdown(title: str, blocks: list[Block]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    out = [f"# {title}", ""]
    for kind, body in blocks:
        if kind == "h2":
            out += [f"## {body}", ""]
        elif kind == "p":
            out += [body, ""]
        elif kind == "table":
            out.append("| " + " | ".join(map(cell, body.headers)) + " |")
            out.append("|" + "---|" * len(body.headers))
            out += ["| " + " | ".join(map(cell, row)) + " |" for row in body.rows]
            out.append("")
        elif kind == "img":
            out += [f"*Plot: {body[0]} (see report.html).*", ""]
    return "\n".join(out)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "th{background:#f2f2f2}img{max-width:100%;display:block;margin:1em 0}")


def render_html(title: str, blocks: list[Block]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for kind, body in blocks:
        if kind == "h2":
            out.append(f"<h2>{e(body)}</h2>")
        elif kind == "p":
            out.append(f"<p>{e(body)}</p>")
        elif kind == "table":
            out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in body.headers) + "</tr></thead>")
            out.append("<tbody>" + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                                           for row in body.rows) + "</tbody></table>")
        elif kind == "img":
            alt, png = body
            data = base64.b64encode(png).decode("ascii")
            out.append(f'<img alt="{e(alt)}" src="data:image/png;base64,{data}">')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(run_dir: str | Path, metrics: dict[str, Any] | ReportMetrics, *, title: str | None = None,
                 with_plots: bool = True) -> tuple[Path, Path]:
    """Write RUN_DIR/report.md and RUN_DIR/report.html (atomically) from `metrics`; return their paths.
    `with_plots=False` skips matplotlib entirely (tables only)."""
    run_dir = Path(run_dir)
    m = parse_metrics(metrics, source=str(run_dir / "metrics.json"))
    heading = title or m.title
    blocks = build_blocks(m, with_plots=with_plots)
    md, page = run_dir / "report.md", run_dir / "report.html"
    atomic_write(md, render_markdown(heading, blocks))
    atomic_write(page, render_html(heading, blocks))
    logger.info("wrote %s and %s", md, page)
    return md, page
