"""The tables of docs/RESULTS.md, rendered from study/ (see study/commands.py for what writes each file).

Every rate is shown with its n and Wilson 95% interval; every ASR once per judge, raw and corrected for the judge's
measured error (eval/correction.py). A section whose files are missing says which command makes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safecls.eval.wilson import Rate

HEADLINE_JUDGES = ("minilm", "keyword")
MODEL_ORDER = ("base", "plain-sft", "qi", "safecls-sft-only", "safecls")


def _load(path: Path) -> Any | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _rate(row: dict) -> str:
    r = Rate(**{k: row[k] for k in ("k", "n", "rate", "lo", "hi")})
    return r.fmt()


def _corrected(row: dict) -> str:
    c = row.get("corrected")
    if not c or c.get("rate") is None:
        return "—"
    mark = "*" if c.get("below_false_rate") else ""
    return f"{100 * c['rate']:.1f}%{mark} [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}]"


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _models(rows: list[dict]) -> list[str]:
    names = {r["model"] for r in rows}
    return [m for m in MODEL_ORDER if m in names] + sorted(names - set(MODEL_ORDER))


def asr_table(metrics: dict, benchmark: str, attack: str, judges: tuple[str, ...] = HEADLINE_JUDGES) -> str:
    """One row per model: each judge's raw ASR [Wilson] (n) and corrected ASR [interval]. Where several runs measured
    a model on the benchmark (a seeded 100 and all 520, say), the row is its largest sample."""
    rows = [r for r in metrics.get("asr", []) if r["category"] == "all" and r["benchmark"] == benchmark
            and r["attack"] == attack]
    present = [j for j in judges if any(r["judge"] == j for r in rows)]
    cells: dict[tuple[str, str], dict] = {}
    for r in rows:
        if r["n"] > cells.get((r["model"], r["judge"]), {"n": -1})["n"]:
            cells[(r["model"], r["judge"])] = r
    headers = ["model"] + [h for j in present for h in (f"{j}: raw", f"{j}: corrected")]
    body = [[m] + [x for j in present for x in ((_rate(cells[(m, j)]), _corrected(cells[(m, j)]))
                                                   if (m, j) in cells else ("—", "—"))] for m in _models(rows)]
    return table(headers, body)


def variant_table(metrics: dict, benchmark: str, attack: str, judges: tuple[str, ...] = HEADLINE_JUDGES) -> str:
    """One row per model and variant of a multi-variant attack (a decoding setting, a prefill length): each judge's
    raw ASR [Wilson] (n)."""
    rows = [r for r in metrics.get("asr", []) if r["category"] == "all" and r["benchmark"] == benchmark
            and r["attack"].startswith(attack + " ")]
    present = [j for j in judges if any(r["judge"] == j for r in rows)]
    cells = {(r["model"], r["attack"], r["judge"]): r for r in rows}
    variants = sorted({r["attack"] for r in rows})
    body = [[m, v.removeprefix(attack + " ")] + [_rate(cells[(m, v, j)]) if (m, v, j) in cells else "—"
                                                  for j in present]
            for m in _models(rows) for v in variants if any((m, v, j) in cells for j in present)]
    return table(["model", "setting"] + [f"{j}: raw" for j in present], body)


def over_refusal_table(metrics: dict, judges: tuple[str, ...] = HEADLINE_JUDGES) -> str:
    rows = [r for r in metrics.get("over_refusal", []) if r["judge"] in judges]
    body = []
    for m in _models(rows):
        for r in sorted((r for r in rows if r["model"] == m), key=lambda r: (r["benchmark"], r["judge"])):
            body.append([m, r["benchmark"], r["judge"], _rate(r["safe_refused"]),
                         _rate(r["unsafe_complied"]) if r.get("unsafe_complied") else "—"])
    return table(["model", "set", "judge", "safe requests refused", "unsafe requests complied with"], body)


def refusal_quality_table(metrics: dict, judges: tuple[str, ...] = HEADLINE_JUDGES) -> str:
    rows = [r for r in metrics.get("refusal_quality", []) if r["judge"] in judges]
    body = [[m, r["attack"], r["judge"], _rate(r["reasoned"]), _rate(r["loop_free"])] for m in _models(rows)
            for r in sorted((r for r in rows if r["model"] == m), key=lambda r: (r["attack"], r["judge"]))]
    return table(["model", "attack", "judge", "reasoned, loop-free", "loop-free"], body)


def render(study: Path) -> str:
    from safecls.study import sections

    return sections.render_all(study)
