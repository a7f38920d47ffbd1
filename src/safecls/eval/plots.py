"""Report plots as PNG bytes, drawn with matplotlib's Agg canvas (no pyplot, no global backend switch, no display).

Each function takes rows of the metrics schema (`safecls.eval.report`) and returns a PNG. PNG metadata carries no
timestamp or version, so the same metrics give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from safecls._optional import require

if TYPE_CHECKING:
    from safecls.eval.rates import AsrRow
    from safecls.eval.report import CostRow, ProbingCurve, TradeoffCurve

_DPI = 100


def _figure(width: float = 7.0, height: float = 3.6) -> Any:
    require("matplotlib", extra="report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _grouped_bars(ax: Any, groups: list[str], series: list[str], value: Any, err: Any = None) -> None:
    """Bars for each (group on the x axis, series in the legend); value(group, series) -> float | None."""
    width = 0.8 / max(1, len(series))
    for s_i, s in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for g_i, g in enumerate(groups):
            v = value(g, s)
            if v is None:
                continue
            xs.append(g_i - 0.4 + width * (s_i + 0.5))
            ys.append(v)
            if err is not None:
                e_lo, e_hi = err(g, s)
                lo.append(v - e_lo)
                hi.append(e_hi - v)
        ax.bar(xs, ys, width=width, label=s, yerr=[lo, hi] if err is not None else None, capsize=3)
    ax.set_xticks(range(len(groups)), groups, rotation=20 if len(groups) > 4 else 0)
    if len(series) > 1:
        ax.legend(fontsize="small")


def asr_bars(rows: Sequence[AsrRow], benchmark: str) -> bytes:
    """ASR (category 'all') per attack (x) and model (bars) for one benchmark, with Wilson 95% error bars."""
    cells = {(r.attack, r.model): r for r in rows if r.benchmark == benchmark and r.category == "all"}
    attacks = sorted({a for a, _ in cells})
    models = sorted({m for _, m in cells})
    fig = _figure()
    ax = fig.add_subplot()

    def value(a: str, m: str) -> float | None:
        r = cells.get((a, m))
        return 100 * r.rate if r is not None and r.rate is not None else None

    def err(a: str, m: str) -> tuple[float, float]:
        r = cells[(a, m)]
        return 100 * r.lo, 100 * r.hi

    _grouped_bars(ax, attacks, models, value, err)
    ax.set_ylim(0, 100)
    ax.set_ylabel("ASR (%)")
    ax.set_title(f"{benchmark}: attack success rate (Wilson 95% CI)")
    return _png(fig)


def probing_curves(curves: Sequence[ProbingCurve], metric: str) -> bytes:
    """One line per (model, setting): the per-position value of `metric` ("entropy" or "sharpness")."""
    fig = _figure()
    ax = fig.add_subplot()
    styles = ["-", "--", ":", "-."]
    settings = list(dict.fromkeys(c.setting for c in curves))
    models = list(dict.fromkeys(c.model for c in curves))
    for c in curves:
        if c.metric == metric:  # colour = model, line style = setting
            ax.plot(range(len(c.values)), c.values, marker=".", color=f"C{models.index(c.model) % 10}",
                    linestyle=styles[settings.index(c.setting) % len(styles)], label=f"{c.model} / {c.setting}")
    ax.set_xlabel("response position (token)")
    ax.set_ylabel(metric)
    ax.set_title(f"Top-K next-token {metric} by position")
    ax.legend(fontsize="small")
    return _png(fig)


def cost_bars(rows: Sequence[CostRow]) -> bytes:
    """Extra cost per re-classification schedule, one bar per model; one panel per unit, so different measures
    (extra tokens per token, extra wall time) never share an axis."""
    units = list(dict.fromkeys(r.unit for r in rows))
    fig = _figure(width=max(7.0, 4.5 * len(units)))
    axes = fig.subplots(1, len(units), squeeze=False)[0]
    for ax, unit in zip(axes, units):
        mine = [r for r in rows if r.unit == unit]
        cells = {(r.schedule, r.model): r.cost for r in mine}
        schedules = list(dict.fromkeys(r.schedule for r in mine))  # the caller's order (first, every, ...)
        models = list(dict.fromkeys(r.model for r in mine))
        _grouped_bars(ax, schedules, models, lambda s, m, cells=cells: cells.get((s, m)))
        ax.set_ylabel(unit)
        if len(models) == 1:  # no legend for a single series: name the model here
            ax.set_title(models[0], fontsize="medium")
    fig.suptitle("Cost per re-classification schedule")
    return _png(fig)


def tradeoff_curves(curves: Sequence[TradeoffCurve]) -> bytes:
    """Harmful requests missed against benign requests flagged along the threshold (first read only), one line per
    model, with the calibrated point (which also counts mid-reply refusals) marked."""
    fig = _figure(width=5.5, height=4.2)
    ax = fig.add_subplot(1, 1, 1)
    for c in curves:
        line, = ax.plot([100 * p["benign_flagged"] for p in c.curve], [100 * p["harmful_missed"] for p in c.curve],
                        label=c.model)
        ax.plot([100 * c.benign_flagged], [100 * c.harmful_missed], "o", color=line.get_color())
        first = "" if c.request_threshold is None else f" (first read {c.request_threshold:.2f})"
        ax.annotate(f"t={c.threshold:.2f}{first}, tau={c.tau}", (100 * c.benign_flagged, 100 * c.harmful_missed),
                    textcoords="offset points", xytext=(6, 6), fontsize="small")
    ax.set_xlabel("benign dev requests refused (%)")
    ax.set_ylabel("harmful dev requests missed (%)")
    ax.set_title("Calibration trade-off along the threshold")
    ax.legend(fontsize="small")
    return _png(fig)
