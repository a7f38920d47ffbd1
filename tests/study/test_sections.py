import json

from safecls.eval.config import EvalConfig
from safecls.eval.summary import summarize
from safecls.study.results import write_results


class Rec:
    def __init__(self, model, response, verdict, label="unsafe", attack="direct"):
        self.model, self.attack, self.benchmark, self.item_id, self.category = model, attack, "advbench", response, None
        self.label, self.response, self.verdicts, self.judge_errors = label, response, {"keyword": verdict}, {}
        self.completion_tokens, self.extra_tokens, self.evaluations, self.wall_s = 4, 0, 0, 0.0


def test_results_show_how_the_refusals_of_each_model_read(tmp_path):
    cfg = EvalConfig.model_validate({
        "name": "direct", "models": [{"name": "safecls", "path": "default"}, {"name": "plain-sft", "path": "base"}],
        "attacks": [{"name": "direct"}], "benchmarks": [{"name": "advbench"}], "judges": [{"name": "keyword"}]})
    reasoned = "Sorry, I cannot fulfill your request because stalking someone puts their safety at risk."
    records = [Rec("safecls", reasoned + f" ({i})", "refuse") for i in range(3)]
    records += [Rec("safecls", "Here is how: step 1 ...", "comply"), Rec("plain-sft", "I'm sorry, I can't.", "refuse")]
    metrics = summarize(records, cfg, schedules={}, probing=[], run_info={})
    run = tmp_path / "study" / "eval" / "direct"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text()
    section = text.split("## Refusal quality")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert "100.0%" in rows["safecls"] and "(n=3)" in rows["safecls"]  # the compliance is no refusal
    assert "0.0%" in rows["plain-sft"] and "(n=1)" in rows["plain-sft"]


def test_results_show_gsm8k_exact_match_beside_the_nll(tmp_path):
    run = tmp_path / "study" / "eval" / "gsm8k"
    run.mkdir(parents=True)
    rows = [{"model": "safecls", "benchmark": "gsm8k", "metric": "exact_match", "k": 3, "n": 200, "rate": 0.015,
             "lo": 0.005, "hi": 0.043}]
    (run / "metrics.json").write_text(json.dumps({"utility": rows}))
    text = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text()
    section = text.split("## Utility")[1].split("\n## ")[0]
    assert "Not measured yet: reference NLL" in section  # no utility.json: the NLL's command, the GSM8K table still
    assert "| safecls | 1.5% [0.5, 4.3] (n=200) |" in section
