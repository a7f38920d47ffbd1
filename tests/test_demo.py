"""The main job end to end on a tiny model (the real run is `safecls demo` on the shipped model; docs/RESULTS.md)."""

from __future__ import annotations

import json

import pytest

from safecls.demo import DemoConfig, run_demo, summary_table
from safecls.model import SafeClsModel, load_base
from tests.tiny import tiny_model


@pytest.fixture()
def tiny_ckpt(tmp_path):
    model, tok = tiny_model("llama")
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    SafeClsModel.from_base(*load_base(tmp_path / "base")).save_pretrained(tmp_path / "ck")
    return tmp_path


def _check(out):
    metrics = json.loads((out / "metrics.json").read_text())
    cells = {(a["model"], a["attack"]) for a in metrics["asr"]}
    assert {c for c in cells if " " not in c[1]} == {(m, a) for m in ("base", "safecls")
                                                     for a in ("direct", "prefill", "decoding")}
    assert {c for c in cells if " " in c[1]} == {(m, f"decoding {v}/no-sys") for m in ("base", "safecls")
                                                for v in ("temperature=1", "top_p=0.9")}  # each sampled setting too
    assert all(0 <= a["lo"] <= a["rate"] <= a["hi"] <= 1 for a in metrics["asr"])
    assert {(o["model"], o["benchmark"]) for o in metrics["over_refusal"]} == {
        (m, b) for m in ("base", "safecls") for b in ("safe-but-scary", "benign")}
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "corrected" in html
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert all(r["prefill"].startswith("Sure, here is") for r in records if r["attack"] == "prefill")
    assert {r["benchmark"] for r in records if r["attack"] != "direct"} == {"harmful"}  # clean sets: direct only
    table = summary_table(metrics)
    assert "safecls" in table and "benign" in table


def test_demo_runs_offline_on_the_starter_set(tiny_ckpt, tmp_path):
    cfg = DemoConfig(model=str(tiny_ckpt / "ck"), baseline=f"plain:{tiny_ckpt / 'base'}", out=str(tmp_path / "run"),
                     n=3, max_new_tokens=6)
    _check(run_demo(cfg))


def test_demo_uses_shared_data_when_given(tiny_ckpt, tmp_path, shared_data):
    cfg = DemoConfig(model=str(tiny_ckpt / "ck"), baseline=f"plain:{tiny_ckpt / 'base'}", out=str(tmp_path / "run"),
                     n=3, max_new_tokens=6, data_dir=str(shared_data))
    out = run_demo(cfg)
    _check(out)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert any(r["item_id"].startswith("prompts/advbench/") for r in records)
