import json

import yaml

from safecls.eval.config import EvalConfig
from safecls.eval.judges.base import Verdict
from safecls.eval.summary import summarize
from safecls.study.results import write_results


def results_with(tmp_path, name: str, metrics: dict) -> str:
    """docs/RESULTS.md rendered from a study/ holding one run, study/eval/<name>, with these metrics."""
    run = tmp_path / "study" / "eval" / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(metrics))
    return write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text()


class Rec:
    def __init__(self, model, response, verdict, label="unsafe", attack="direct", variant="", item=None, category=None):
        self.model, self.attack, self.benchmark, self.category = model, attack, "advbench", category
        self.item_id, self.variant = item or response, variant
        self.label, self.response, self.verdicts, self.judge_errors = label, response, {"keyword": Verdict(verdict)}, {}
        self.completion_tokens, self.extra_tokens, self.evaluations, self.wall_s = 4, 0, 0, 0.0


def test_results_show_how_the_refusals_of_each_model_read(tmp_path):
    cfg = EvalConfig.model_validate({
        "name": "direct", "models": [{"name": "safecls", "path": "default"}, {"name": "plain-sft", "path": "base"}],
        "attacks": [{"name": "direct"}], "benchmarks": [{"name": "advbench"}], "judges": [{"name": "keyword"}]})
    reasoned = "Sorry, I cannot fulfill your request because stalking someone puts their safety at risk."
    records = [Rec("safecls", reasoned + f" ({i})", "refuse") for i in range(3)]
    records += [Rec("safecls", "Here is how: step 1 ...", "comply"), Rec("plain-sft", "I'm sorry, I can't.", "refuse")]
    text = results_with(tmp_path, "direct", summarize(records, cfg, schedules={}, probing=[], run_info={}))
    section = text.split("## Refusal quality")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert "100.0%" in rows["safecls"] and "(n=3)" in rows["safecls"]  # the compliance is no refusal
    assert "0.0%" in rows["plain-sft"] and "(n=1)" in rows["plain-sft"]


def test_results_show_gsm8k_exact_match_beside_the_nll(tmp_path):
    rows = [{"model": "safecls", "benchmark": "gsm8k", "metric": "exact_match", "k": 3, "n": 200, "rate": 0.015,
             "lo": 0.005, "hi": 0.043}]
    text = results_with(tmp_path, "gsm8k", {"utility": rows})
    section = text.split("## Utility")[1].split("\n## ")[0]
    assert "Not measured yet: reference NLL" in section  # no utility.json: the NLL's command, the GSM8K table still
    assert "| safecls | 1.5% [0.5, 4.3] (n=200) |" in section


def test_each_nll_is_compared_with_the_base_model_on_the_same_answers(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "utility.json").write_text(json.dumps({
        "base": {"mean": 2.0, "tokens": 100, "answers": 10}, "old": {"mean": 2.2, "tokens": 100, "answers": 10}}))
    (study / "utility-recipe.json").write_text(json.dumps({
        "base": {"mean": 2.5, "tokens": 300, "answers": 30}, "new": {"mean": 3.0, "tokens": 300, "answers": 30},
        "other-answers": {"mean": 2.0, "tokens": 120, "answers": 12}}))
    text = write_results(study, tmp_path / "RESULTS.md").read_text()
    section = text.split("## Utility")[1].split("\n## ")[0]
    assert "| old | 2.2000 | 10 | 100 | 1.100x |" in section  # 2.2 / 2.0, its own file's base
    assert "| new | 3.0000 | 30 | 300 | 1.200x |" in section  # 3.0 / 2.5, not / 2.0
    assert "| other-answers | 2.0000 | 12 | 120 | — |" in section  # other answers than the base's: no ratio


def test_each_prefill_length_has_its_own_asr_beside_the_best_try(tmp_path):
    cfg = EvalConfig.model_validate({
        "name": "prefill", "models": [{"name": "plain-sft", "path": "base"}],
        "attacks": [{"name": "prefill", "params": {"num_tokens": [5, 40]}}],
        "benchmarks": [{"name": "advbench"}], "judges": [{"name": "keyword"}]})
    # 4 items: k=5 breaks items 0 and 1, k=40 breaks items 1, 2 and 3; the best try breaks all 4
    hits = {"k=5": {0, 1}, "k=40": {1, 2, 3}}
    records = [Rec("plain-sft", f"reply {k} {i}", "comply" if i in hits[k] else "refuse", attack="prefill", variant=k,
                   item=f"advbench/{i}", category="cyber") for k in hits for i in range(4)]
    metrics = summarize(records, cfg, schedules={}, probing=[], run_info={})
    asr = {r["attack"]: (r["k"], r["n"]) for r in metrics["asr"] if r["category"] == "all"}
    cats = {(r["attack"], r["category"]) for r in metrics["asr"]}
    assert ("prefill", "cyber") in cats and ("prefill k=5", "cyber") not in cats  # variants: overall rows only
    assert asr == {"prefill": (4, 4), "prefill k=5": (2, 4), "prefill k=40": (3, 4)}
    run = tmp_path / "study" / "eval" / "prefill"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text()
    section = text.split("### Prefill attack")[1].split("\n### ")[0]
    assert section.index("prefill k=5:") < section.index("prefill k=40:") < section.index("any k breaks it")
    assert "50.0% [" in section and "75.0% [" in section and "100.0% [" in section
    assert "Run settings" not in section  # no config.yaml in the run folder: nothing claimed about its settings
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    text = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text()
    assert "Run settings (study/eval/prefill/config.yaml): models plain-sft; advbench; prefill, num_tokens [5, 40]" in text


def test_over_refusal_leaves_out_the_models_own_head():
    """The head judges harm, not refusal: on benign prompts its "not harmful" is no refusal, so it has no over-refusal
    row (it read 86% of a benign set's helpful answers as "refused")."""
    cfg = EvalConfig.model_validate({
        "name": "direct", "models": [{"name": "safecls", "path": "default"}], "attacks": [{"name": "direct"}],
        "benchmarks": [{"name": "advbench"}],
        "judges": [{"name": "keyword"}, {"name": "safecls-head", "params": {"checkpoint": "default"}}]})
    records = [Rec("safecls", "Bread: mix flour and water.", "comply", label="safe"),
               Rec("safecls", "Sorry, I cannot fulfill your request because it is dangerous.", "refuse", label="safe")]
    for r in records:
        r.verdicts["safecls-head"] = Verdict("refuse")
    metrics = summarize(records, cfg, schedules={}, probing=[], run_info={})
    rows = {r["judge"]: r for r in metrics["over_refusal"]}
    assert set(rows) == {"keyword"} and rows["keyword"]["safe_refused"]["k"] == 1


def test_a_companion_run_adds_its_models_rows_with_its_own_settings(tmp_path):
    """study/eval/prefill-<x> holds more models measured with the prefill run's settings: the prefill tables show
    them beside the prefill run's, each run's settings named; a run whose name only starts the same is not one."""
    def run(name: str, model: str, broken: set[int]) -> None:
        cfg = EvalConfig.model_validate({
            "name": name, "models": [{"name": model, "path": "base"}],
            "attacks": [{"name": "prefill", "params": {"num_tokens": [5]}}],
            "benchmarks": [{"name": "advbench", "limit": 4}], "judges": [{"name": "keyword"}]})
        records = [Rec(model, f"reply {i}", "comply" if i in broken else "refuse", attack="prefill", variant="k=5",
                       item=f"advbench/{i}") for i in range(4)]
        d = tmp_path / "study" / "eval" / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(summarize(records, cfg, schedules={}, probing=[], run_info={})))
        (d / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))

    run("prefill", "plain-sft", {0, 1, 2})
    run("prefill-refit", "refit", {0})
    run("prefillish", "other", {0, 1, 2, 3})
    section = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text().split("### Prefill attack")[1]
    section = section.split("\n### ")[0]
    assert "study/eval/prefill/config.yaml): models plain-sft" in section
    assert "study/eval/prefill-refit/config.yaml): models refit" in section
    assert "| plain-sft | 75.0% [" in section and "| refit | 25.0% [" in section
    assert "other" not in section and "prefillish" not in section


def test_the_decoding_attack_shows_each_setting_beside_the_best_try_for_every_run_of_its_family(tmp_path):
    cfg = EvalConfig.model_validate({
        "name": "decoding-x", "models": [{"name": "plain-sft-balanced", "path": "base"}],
        "attacks": [{"name": "decoding"}], "benchmarks": [{"name": "advbench"}], "judges": [{"name": "keyword"}]})
    # 5 items: greedy breaks item 0, temperature 1.0 breaks items 0, 1 and 2; the best try breaks 3 of 5
    hits = {"greedy/no-sys": {0}, "t=1.0/no-sys": {0, 1, 2}}
    records = [Rec("plain-sft-balanced", f"reply {v} {i}", "comply" if i in hits[v] else "refuse", attack="decoding",
                   variant=v, item=f"advbench/{i}") for v in hits for i in range(5)]
    metrics = summarize(records, cfg, schedules={}, probing=[], run_info={})
    run = tmp_path / "study" / "eval" / "decoding-x"  # a companion run: no study/eval/decoding beside it
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text()
    section = text.split("### Decoding-parameter attack")[1].split("\n## ")[0]
    best, per_setting = section.split("advbench, each setting alone:")
    assert "| plain-sft-balanced | 60.0% [" in best and "(n=5)" in best
    assert "| plain-sft-balanced | greedy/no-sys | 20.0% [" in per_setting
    assert "| plain-sft-balanced | t=1.0/no-sys | 60.0% [" in per_setting


def test_each_search_attack_has_its_section_and_gcg_keeps_adaptive_gcg_apart(tmp_path):
    cfg = EvalConfig.model_validate({
        "name": "gcg", "models": [{"name": "plain-sft", "path": "base"}], "attacks": [{"name": "gcg"}],
        "benchmarks": [{"name": "advbench"}], "judges": [{"name": "keyword"}]})
    for run, broken in (("gcg", 3), ("gcg-adaptive", 1)):
        records = [Rec("plain-sft", f"reply {i}", "comply" if i < broken else "refuse", attack="gcg",
                       item=f"advbench/{i}") for i in range(4)]
        d = tmp_path / "study" / "eval" / run
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(summarize(records, cfg, schedules={}, probing=[], run_info={})))
    text = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text()
    gcg = text.split("### GCG (AdvBench)")[1].split("\n### ")[0]
    adaptive = text.split("### Adaptive GCG (AdvBench)")[1].split("\n### ")[0]
    assert "75.0% [" in gcg and "25.0% [" not in gcg
    assert "25.0% [" in adaptive and "75.0% [" not in adaptive
    for title, config in (("AutoDAN", "autodan.yaml"), ("PAP", "pap.yaml")):
        section = text.split(f"### {title} (AdvBench)")[1].split("\n## ")[0].split("\n### ")[0]
        assert f"Not measured yet: {title}. Command: `safecls eval --config configs/study/{config}`" in section


def test_adaptive_gcg_shows_the_gcg_runs_rows_of_the_models_it_did_not_search(tmp_path):
    # gcg: plain-sft broken on 3 of 4, safecls on 2 of 4; gcg-adaptive measures safecls alone, broken on 1 of 4
    for run, broken in (("gcg", {"plain-sft": 3, "safecls": 2}), ("gcg-adaptive", {"safecls": 1})):
        cfg = EvalConfig.model_validate({
            "name": run, "models": [{"name": m, "path": "base"} for m in broken], "attacks": [{"name": "gcg"}],
            "benchmarks": [{"name": "advbench"}], "judges": [{"name": "keyword"}]})
        records = [Rec(m, f"reply {m} {i}", "comply" if i < k else "refuse", attack="gcg", item=f"advbench/{i}")
                   for m, k in broken.items() for i in range(4)]
        d = tmp_path / "study" / "eval" / run
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(summarize(records, cfg, schedules={}, probing=[], run_info={})))
    text = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text()
    adaptive = text.split("### Adaptive GCG (AdvBench)")[1].split("\n### ")[0]
    rows = {line.split("|")[1].strip(): line for line in adaptive.splitlines() if line.startswith("| ")}
    assert set(rows) - {"model", "---"} == {"safecls", "plain-sft (gcg)"}
    assert "| 25.0% [" in rows["safecls"] and "| 75.0% [" in rows["plain-sft (gcg)"]
    assert "Rows marked (gcg) are the gcg run's" in adaptive
    gcg = text.split("### GCG (AdvBench)")[1].split("\n### ")[0]
    assert "(gcg)" not in gcg and "Rows marked" not in gcg


def test_the_ablations_show_each_variants_attack_false_flags_and_cost_against_the_head_ignored(tmp_path):
    cfg = EvalConfig.model_validate({
        "name": "schedules", "models": [{"name": "low", "path": "default"}, {"name": "every", "path": "default"}],
        "attacks": [{"name": "nested"}, {"name": "direct"}], "benchmarks": [{"name": "advbench"}],
        "judges": [{"name": "keyword"}]})
    records = []
    for model, broken, wall in (("low", {0, 1}, 1.0), ("every", {0}, 3.0)):
        for i in range(4):
            r = Rec(model, f"{model} reply {i}", "comply" if i in broken else "refuse", attack="nested",
                    item=f"advbench/{i}")
            r.wall_s, r.evaluations = wall, 0 if model == "low" else 4  # 4 tokens a record, every one read once
            records.append(r)
        records.append(Rec(model, "Sorry, I cannot fulfill your request.", "refuse", label="safe"))
    text = results_with(tmp_path, "schedules", summarize(records, cfg, schedules={}, probing=[], run_info={}))
    section = text.split("## Ablations of the decoding")[1].split("\n## ")[0]
    nested = section.split("Nested requests:")[1].split("Benign requests refused:")[0]
    assert "| low | 50.0% [" in nested and "| every | 25.0% [" in nested
    assert "| every | advbench | keyword | 100.0% [" in section  # its one benign request refused
    cost = {line.split("|")[1].strip(): line for line in section.split("What reading costs")[1].splitlines()
            if line.startswith("| ")}
    # by hand: low 5 s over 20 tokens (4 harmful records and the benign one, 4 tokens each), every 15 s: 3x
    assert "| 3.00x |" in cost["every"] and "| 1.00x |" in cost["low"]
    assert "| 0.800 |" in cost["every"] and "| 0.000 |" in cost["low"]  # 16 reads over 20 generated tokens


def test_a_companion_ablation_run_joins_the_nested_table_but_not_the_cost_table(tmp_path):
    """study/eval/schedules-plain: plain SFT on the same nested requests, beside the variants; it has no head to read,
    so the cost table (the variants against low in one process) leaves it out."""
    def run(name: str, model: str, broken: set[int]) -> None:
        cfg = EvalConfig.model_validate({
            "name": name, "models": [{"name": model, "path": "base"}], "attacks": [{"name": "nested"}],
            "benchmarks": [{"name": "advbench"}], "judges": [{"name": "keyword"}]})
        records = [Rec(model, f"{model} reply {i}", "comply" if i in broken else "refuse", attack="nested",
                       item=f"advbench/{i}") for i in range(4)]
        d = tmp_path / "study" / "eval" / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(summarize(records, cfg, schedules={}, probing=[], run_info={})))
        (d / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))

    run("schedules", "low", {0, 1})
    run("schedules-plain", "plain-sft-balanced", {0, 1, 2})
    section = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text().split("## Ablations")[1]
    nested = section.split("Nested requests:")[1].split("Benign requests refused:")[0]
    assert "| low | 50.0% [" in nested and "| plain-sft-balanced | 75.0% [" in nested
    assert "study/eval/schedules-plain/config.yaml): models plain-sft-balanced" in section
    assert "plain-sft-balanced" not in section.split("What reading costs")[1]


def test_without_the_ablation_run_the_section_names_its_command(tmp_path):
    (tmp_path / "study" / "eval").mkdir(parents=True)
    text = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text()
    assert "Command: `safecls eval --config configs/study/schedules.yaml`" in text.split("## Ablations")[1]


def test_a_model_measured_by_two_runs_shows_its_largest_sample(tmp_path):
    def run(name: str, n: int, broken: int) -> None:
        cfg = EvalConfig.model_validate({
            "name": name, "models": [{"name": "plain-sft", "path": "base"}], "attacks": [{"name": "direct"}],
            "benchmarks": [{"name": "advbench"}], "judges": [{"name": "keyword"}]})
        records = [Rec("plain-sft", f"reply {i}", "comply" if i < broken else "refuse", item=f"advbench/{i}")
                   for i in range(n)]
        d = tmp_path / "study" / "eval" / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(summarize(records, cfg, schedules={}, probing=[], run_info={})))

    run("direct-all", 8, 2)  # read before "direct-some": the larger sample must win on its size, not its order
    run("direct-some", 4, 3)
    section = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text().split("### Direct requests")[1]
    rows = [line for line in section.split("\n### ")[0].splitlines() if line.startswith("| plain-sft |")]
    assert len(rows) == 1 and "25.0% [" in rows[0] and "(n=8)" in rows[0]


def test_probing_shows_each_models_first_token_and_mean_entropy_and_sharpness(tmp_path):
    curves = [{"model": "plain-sft-balanced", "setting": "prefill", "metric": "entropy", "values": [0.5, 1.0, 1.5]},
              {"model": "plain-sft-balanced", "setting": "prefill", "metric": "sharpness", "values": [0.9, 0.6, 0.3]},
              {"model": "safecls", "setting": "prefill", "metric": "entropy", "values": [2.0, 0.1]},
              {"model": "safecls", "setting": "prefill", "metric": "sharpness", "values": [0.2, 0.9]}]
    text = results_with(tmp_path, "probing", {"probing": curves})
    section = text.split("## Probing")[1].split("\n## ")[0]
    # by hand: means 1.0 / 0.6 over three tokens, 1.05 / 0.55 over two; the first 3 tokens at most
    assert "| plain-sft-balanced | prefill | 0.50 | 1.00 | 0.90 | 0.60 |" in section
    assert "| safecls | prefill | 2.00 | 1.05 | 0.20 | 0.55 |" in section
    assert "first 3 tokens" in section


def test_without_a_probing_run_the_section_names_its_command(tmp_path):
    (tmp_path / "study" / "eval").mkdir(parents=True)
    text = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text()
    assert "Command: `safecls eval --config configs/study/probing.yaml`" in text.split("## Probing")[1]


def test_a_search_attacks_settings_name_its_helper_model(tmp_path):
    cfg = EvalConfig.model_validate({
        "name": "pap", "models": [{"name": "plain-sft", "path": "base"}],
        "attacks": [{"name": "pap", "helper": "base", "params": {"taxonomy_file": "t.jsonl"}}],
        "benchmarks": [{"name": "advbench", "limit": 2}], "judges": [{"name": "keyword"}]})
    records = [Rec("plain-sft", f"reply {i}", "comply", attack="pap", item=f"advbench/{i}") for i in range(2)]
    d = tmp_path / "study" / "eval" / "pap"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(summarize(records, cfg, schedules={}, probing=[], run_info={})))
    (d / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    section = write_results(tmp_path / "study", tmp_path / "RESULTS.md").read_text().split("### PAP (AdvBench)")[1]
    assert "pap (helper model: base), taxonomy_file t.jsonl" in section
