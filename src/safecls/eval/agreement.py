"""Agreement between judges: Cohen's kappa and pairwise matrices. Pure functions over label sequences."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict


def percent_agreement(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    _check(a, b)
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """(p_o - p_e) / (1 - p_e). NaN when p_e == 1 (both raters gave one and the same label to everything:
    kappa is undefined there, and reporting 1.0 or 0.0 would each claim something the data cannot show)."""
    _check(a, b)
    n = len(a)
    po = percent_agreement(a, b)
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[label] * cb[label] for label in ca) / (n * n)
    if math.isclose(pe, 1.0):
        return math.nan
    return (po - pe) / (1 - pe)


def _check(a: Sequence[Hashable], b: Sequence[Hashable]) -> None:
    if len(a) != len(b):
        raise ValueError(f"label sequences differ in length ({len(a)} vs {len(b)}); pair the same items")
    if not a:
        raise ValueError("agreement of empty label sequences is undefined")


class AgreementMatrix(BaseModel):
    """Symmetric matrices indexed like `judges`; `kappa` holds None where kappa is undefined (JSON has no NaN)."""

    model_config = ConfigDict(frozen=True)

    judges: list[str]
    n: int
    kappa: list[list[float | None]]
    agreement: list[list[float]]


def agreement_matrix(labels: Mapping[str, Sequence[Hashable]]) -> AgreementMatrix:
    """Pairwise kappa and raw agreement between judges; `labels[judge][i]` is that judge's verdict on item i."""
    judges = list(labels)
    if not judges:
        raise ValueError("agreement_matrix needs at least one judge")
    n = len(labels[judges[0]])
    kappa: list[list[float | None]] = []
    agree: list[list[float]] = []
    for j1 in judges:
        k_row, a_row = [], []
        for j2 in judges:
            k = cohen_kappa(labels[j1], labels[j2])
            k_row.append(None if math.isnan(k) else k)
            a_row.append(percent_agreement(labels[j1], labels[j2]))
        kappa.append(k_row)
        agree.append(a_row)
    return AgreementMatrix(judges=judges, n=n, kappa=kappa, agreement=agree)


def judge_agreement(records: Iterable[Any], judges: Sequence[str] | None = None) -> AgreementMatrix:
    """`agreement_matrix` over judged records (see safecls.eval.rates): the verdicts of `judges` (default: every
    judge that read all records) on the records that every one of them judged."""
    from safecls.eval.rates import as_records  # metrics imports nothing from here; keeps this module standalone

    recs = as_records(records)
    if judges is None:
        common = set.intersection(*(set(r.verdicts) for r in recs)) if recs else set()
        judges = sorted(common)
    both = [r for r in recs if all(j in r.verdicts for j in judges)]
    if not both or not judges:
        raise ValueError(f"no record was judged by all of {list(judges)}; nothing to compare")
    return agreement_matrix({j: [r.verdicts[j] for r in both] for j in judges})
