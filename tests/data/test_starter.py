import csv
import json

from safecls.data.categories import Category
from safecls.data.mixture import normalise
from safecls.data.refusals import REFUSAL_PREFIX
from safecls.data.starter import load_starter


def test_counts_and_labels():
    s = load_starter()
    assert (len(s.harmful), len(s.benign), len(s.over_refusal)) == (150, 150, 60)
    assert {p.label for p in s.harmful} == {1} and {p.label for p in s.benign + s.over_refusal} == {0}


def test_ids_and_prompts_are_unique():
    items = load_starter().all()
    assert len({p.id for p in items}) == len(items)
    assert len({normalise(p.prompt) for p in items}) == len(items)


def test_splits_are_about_two_thirds_train_and_disjoint():
    s = load_starter()
    for kind in (s.harmful, s.benign, s.over_refusal):
        train = [p for p in kind if p.split == "train"]
        assert {p.split for p in kind} == {"train", "eval"}
        assert 0.6 <= len(train) / len(kind) <= 0.75
    assert (len(s.split("train")), len(s.split("eval"))) == (246, 114)
    assert not {normalise(p.prompt) for p in s.split("train")} & {normalise(p.prompt) for p in s.split("eval")}


def test_harmful_categories_are_ours_and_all_appear():
    s = load_starter()
    assert {p.category for p in s.harmful} == {c.value for c in Category}


def test_harmful_examples_get_reasoned_refusals_at_build_time():
    s = load_starter()
    ex = s.harmful_sft_examples("eval", seed=1)
    assert len(ex) == sum(p.split == "eval" for p in s.harmful)
    assert all(e.response.startswith(REFUSAL_PREFIX) and e.label == 1 for e in ex)
    assert ex == s.harmful_sft_examples("eval", seed=1)


def test_no_exact_overlap_with_public_benchmarks(shared_data):
    public = set()
    with open(shared_data / "advbench" / "harmful_behaviors.csv", newline="", encoding="utf-8") as f:
        public |= {normalise(r["goal"]) for r in csv.DictReader(f)}
    with open(shared_data / "xstest" / "xstest_prompts.csv", newline="", encoding="utf-8") as f:
        public |= {normalise(r["prompt"]) for r in csv.DictReader(f)}
    public |= {normalise(x) for x in (shared_data / "maliciousinstruct" / "MaliciousInstruct.txt").read_text().splitlines()}
    sft = json.loads((shared_data / "safety-sft" / "safety_only_data_Instructions.json").read_text())
    public |= {normalise(r["instruction"]) for r in sft}
    assert len(public) > 3000
    assert not {normalise(p.prompt) for p in load_starter().all()} & public
