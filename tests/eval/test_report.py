from __future__ import annotations

import argparse
import base64
import json
import re

import pytest

from safecls.errors import DataError
from safecls.eval import commands
from safecls.eval.rates import asr_table
from safecls.eval.report import ReportMetrics, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained_with_tables_and_png_plots(tmp_path, example_metrics):
    md, page = write_report(tmp_path, example_metrics)
    text = page.read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', text)
    # ASR per benchmark (advbench, hex-phi), probing entropy and sharpness, cost.
    assert [alt for alt, _ in images] == ["ASR advbench", "ASR hex-phi", "probing entropy", "probing sharpness",
                                          "cost per schedule"]
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for _, data in images)
    assert not re.search(r'(src|href)="(?!data:)', text)  # no external assets
    assert "<h1>Example &lt;report&gt;</h1>" in text  # escaped
    assert text.count("<table>") == 9  # run, ASR, judge validation, ASR by category, XSTest, utility, agreement, probing, cost
    assert "<td>90.0% [82.6, 94.5] (n=100)</td>" in text  # base / none / advbench with its Wilson interval
    assert "<td>Malware</td>" in text and "<td>0.400</td>" in text  # per-category row; kappa above the diagonal
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left nothing behind
    assert "*Plot: ASR advbench (see report.html).*" in md.read_text()


def test_markdown_has_the_same_tables(tmp_path, example_metrics):
    md, _ = write_report(tmp_path, example_metrics, title="Custom", with_plots=False)
    text = md.read_text()
    assert text.startswith("# Custom\n")
    assert "| model | attack | advbench | hex-phi |" in text
    assert "| base | none | 90.0% [82.6, 94.5] (n=100) | — |" in text
    assert "| sft | xstest | none | keyword | 2.0% [0.9, 4.6] (n=250) | 10.0% [6.6, 14.9] (n=200) |" in text
    assert "| sft | mt-bench | mean_score | 4.250 (n=80) |" in text
    assert "| hex-phi | sft | none | Malware | keyword | 10.0%" in text  # a category row names its judge
    assert "Plot:" not in text  # plots off: nothing to point at


def test_report_from_computed_rows_and_without_plots(tmp_path):
    records = [{"model": "m", "benchmark": "advbench", "attack": "none", "verdicts": {"kw": v}}
               for v in ("comply", "refuse", "refuse", "refuse")]
    metrics = ReportMetrics(judge="kw", asr=asr_table(records, "kw"))
    _, page = write_report(tmp_path, metrics.model_dump(), with_plots=False)
    text = page.read_text()
    assert "<td>25.0% [4.6, 69.9] (n=4)</td>" in text and "<img" not in text


def test_empty_metrics_still_render(tmp_path):
    md, page = write_report(tmp_path, {})
    assert md.read_text().startswith("# safecls evaluation") and "<table>" not in page.read_text()


def test_bad_and_unknown_keys(tmp_path, example_metrics):
    example_metrics["asr"][0]["k"] = "many"
    with pytest.raises(DataError, match=r"metrics\.json: asr\.0\.k: Input should be a valid integer"):
        write_report(tmp_path, example_metrics)
    with pytest.warns(UserWarning, match=r"ignoring unknown key\(s\) \['future_section'\]"):
        write_report(tmp_path, {"future_section": [1]})


def _cli(argv):
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_report_command_reads_metrics_json(tmp_path, example_metrics):
    (tmp_path / "metrics.json").write_text(json.dumps(example_metrics))
    assert _cli(["report", str(tmp_path), "--no-plots"]) == 0
    assert "<table>" in (tmp_path / "report.html").read_text()
    assert "<img" not in (tmp_path / "report.html").read_text()


def test_report_command_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"metrics\.json: not found"):
        _cli(["report", str(tmp_path)])
    (tmp_path / "metrics.json").write_text("{\n  bad")
    with pytest.raises(DataError, match=r"metrics\.json:2: invalid JSON"):
        _cli(["report", str(tmp_path)])


def test_every_asr_is_shown_per_judge_side_by_side(tmp_path):
    row = {"model": "m", "benchmark": "advbench", "attack": "direct", "category": "all", "n": 10, "lo": 0.0, "hi": 1.0}
    metrics = {"asr": [{**row, "judge": "keyword", "k": 1, "rate": 0.1}, {**row, "judge": "minilm", "k": 7, "rate": 0.7}]}
    md, _ = write_report(tmp_path, metrics, with_plots=False)
    text = md.read_text()
    assert "| model | attack | advbench [keyword] | advbench [minilm] |" in text
    assert "10.0%" in text and "70.0%" in text


def test_each_judges_agreement_with_the_labelled_set_is_shown_beside_its_asr(tmp_path):
    from safecls.eval.judges.validation import judge_validation

    shipped = judge_validation()
    assert {"minilm", "keyword", "keyword-harmbench"} <= set(shipped)  # written by train_judge.py evaluate --write
    row = {"model": "m", "benchmark": "advbench", "attack": "direct", "category": "all", "n": 10, "lo": 0.0, "hi": 1.0}
    metrics = {"asr": [{**row, "judge": j, "k": 1, "rate": 0.1} for j in ("keyword", "minilm", "my-endpoint")]}
    text = write_report(tmp_path, metrics, with_plots=False)[0].read_text()
    v = shipped["minilm"]
    assert f"| minilm | {v['n']} | {v['acc']:.3f} / {v['kappa']:.3f} |" in text
    # the two error rates that move an ASR, and where the judge is weak (per model of the labelled set)
    assert f"| {100 * v['comply_recall']:.0f}% | {100 * v['false_comply_rate']:.0f}% |" in text
    assert set(v["by_model"]) >= {"smollm2-135m-instruct", "demo-safecls"}
    assert f"demo-safecls {v['by_model']['demo-safecls']['acc']:.2f}" in text
    assert f"| keyword | {shipped['keyword']['n']} | {shipped['keyword']['acc']:.3f}" in text
    assert "| my-endpoint | — | not measured against the labelled set |" in text


def test_corrected_rates_beside_raw_and_the_models_own_head_apart(example_metrics, tmp_path):
    from safecls.eval.correction import JudgeErrors, correct

    m = dict(example_metrics)
    err = JudgeErrors(comply_found=80, comply_n=100, other_called_comply=20, other_n=200)
    m["asr"] = [dict(r, corrected=correct(r["k"], r["n"], err).model_dump()) for r in m["asr"]]
    m["asr"] += [dict(r, judge="safecls-head") for r in example_metrics["asr"]]
    m["diagnostic_judges"] = ["safecls-head"]
    md_path, _ = write_report(tmp_path, m, with_plots=False)
    md = md_path.read_text()
    headline, diagnostic = md.split("## Diagnostic: the model's own head as judge")
    assert "safecls-head" not in headline.split("## Attack success rate")[1].split("##")[0]
    assert "safecls-head" in diagnostic and "Not a headline number" in diagnostic
    assert "corrected 0.0%* [" in headline and "Rogan-Gladen" in headline  # sft: 5% observed < 10% false-COMPLY
