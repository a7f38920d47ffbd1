"""docs/RESULTS.md from study/: every table with n, Wilson intervals, and each judge's raw and corrected rate.
(Filled in as the study's runs land; a section whose files are absent says which command makes them.)"""

from __future__ import annotations

from pathlib import Path

from safecls.io import atomic_write


def write_results(study: Path, out: Path) -> Path:
    from safecls.study.tables import render

    atomic_write(out, render(study))
    return out
