"""The main job end to end on a tiny random model (the real run is `safecls demo`; see docs/RESULTS.md)."""

from __future__ import annotations

import json

import pytest

from safecls.demo import DemoConfig, run_demo, summary_table
from tests.tiny import tiny_model

SMALL = dict(n_per_label=6, eval_limit=3, max_steps=2, batch_size=4, max_new_tokens=6, max_length=96)


@pytest.fixture()
def tiny_dir(tmp_path):
    model, tok = tiny_model("llama")
    d = tmp_path / "base"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _check(out):
    metrics = json.loads((out / "metrics.json").read_text())
    cells = {(a["model"], a["attack"]) for a in metrics["asr"]}
    assert cells == {(m, a) for m in ("base", "plain-sft", "safecls") for a in ("direct", "prefill", "decoding")}
    assert all(0 <= a["lo"] <= a["rate"] <= a["hi"] <= 1 for a in metrics["asr"])
    assert {o["model"] for o in metrics["over_refusal"]} == {"base", "plain-sft", "safecls"}
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "safecls" in html
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["attack"] for r in records} == {"direct", "prefill", "decoding"}
    assert all(r["prefill"] for r in records if r["attack"] == "prefill")
    assert "plain-sft" in summary_table(metrics)


def test_demo_runs_offline_on_the_starter_set(tiny_dir, tmp_path):
    _check(run_demo(DemoConfig(model=str(tiny_dir), out=str(tmp_path / "run"), **SMALL)))


def test_demo_uses_shared_data_when_given(tiny_dir, tmp_path, shared_data):
    out = run_demo(DemoConfig(model=str(tiny_dir), out=str(tmp_path / "run"), data_dir=str(shared_data), **SMALL))
    _check(out)
    ids = {json.loads(line)["id"] for line in (out / "records.jsonl").read_text().splitlines()}
    assert all(i.startswith("advbench/") for i in ids)
