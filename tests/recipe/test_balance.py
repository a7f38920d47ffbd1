"""`harmful_per_benign`: sft_train keeps a seeded share of safety-sft's harmful requests; nothing else changes."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from safecls.errors import ConfigError
from safecls.recipe import commands
from safecls.recipe.datasets import balanced, write_datasets
from safecls.recipe.examples import Example


def _example(i: int, pool: str, label: int, split: str) -> Example:
    reply = f"Answer number {i} says a few plain words about the request, in a sentence or two. " * 2
    return Example(f"{pool}/{i}", "harmful" if label else "benign", pool, f"request {i} of {pool}?", label, split,
                   "Sorry, I cannot fulfill your request because it is harmful." if label else reply, reply, None)


def _examples() -> list[Example]:
    out, i = [], 0
    # safety-sft: train 30 harmful / 10 benign, dev and test 5 / 5; another pool's harmful (contrast) and benign
    for pool, label, split, n in [("safety-sft", 1, "train", 30), ("safety-sft", 0, "train", 10),
                                  ("safety-sft", 1, "dev", 5), ("safety-sft", 0, "dev", 5),
                                  ("safety-sft", 1, "test", 5), ("safety-sft", 0, "test", 5),
                                  ("contrast", 1, "train", 8), ("alpaca", 0, "train", 12)]:
        for _ in range(n):
            out.append(_example(i, pool, label, split))
            i += 1
    return out


def _count(rows, **match) -> int:
    return sum(all(getattr(e, k) == v for k, v in match.items()) for e in rows)


def test_only_training_harmful_safety_sft_requests_are_dropped_to_the_ratio():
    ex = _examples()
    kept = balanced(ex, 1.5)
    assert _count(kept, split="train", pool="safety-sft", label=1) == 15  # 1.5 x its 10 benign
    assert Counter((e.split, e.pool, e.label) for e in ex if e not in kept) == {("train", "safety-sft", 1): 15}
    assert [e for e in ex if e in kept] == kept  # the order is kept
    assert balanced(ex, 1.5) == kept and balanced(ex, 1.5, seed=1) != kept  # seeded
    assert balanced(ex, None) is ex and balanced(ex, 5.0) == ex  # off, or a ratio the pool already meets


def test_a_ratio_that_is_not_positive_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="must be positive. Fix: e.g. 1.0"):
        balanced(_examples(), 0)


def test_write_datasets_balances_the_sft_files_but_not_the_pretrain_corpus(tmp_path):
    ex = _examples()
    paths = write_datasets(ex, tmp_path, {}, harmful_per_benign=1.0)
    train = [json.loads(line) for line in paths["sft_train"].read_text().splitlines()]
    assert Counter(r["label"] for r in train) == {1: 10 + 8, 0: 10 + 12}
    dev = [json.loads(line) for line in paths["sft_dev"].read_text().splitlines()]
    assert len(dev) == 10
    pretrain = [json.loads(line) for line in paths["pretrain_train"].read_text().splitlines()]
    assert sum(r["source"] == "completion" for r in pretrain) == 30 + 8  # every harmful completion is still read
    manifest = json.loads(paths["manifest"].read_text())
    assert manifest["harmful_per_benign"] == 1.0
    assert manifest["files"]["sft_train"] == {"harmful/1": 18, "benign/0": 22}


@pytest.mark.parametrize(("given", "want"), [("1", 1.0), ("0.5", 0.5), ("all", None)])
def test_the_cli_value_parses(given, want):
    assert commands.harmful_per_benign(given) == want


@pytest.mark.parametrize("bad", ["0", "-1", "half", "nan", "inf"])
def test_a_bad_cli_value_names_the_problem_and_the_fix(bad):
    with pytest.raises(ConfigError, match=r"--harmful-per-benign .*Fix: e\.g\. --harmful-per-benign 1\.0"):
        commands.harmful_per_benign(bad)


def test_recipe_data_takes_the_flag_and_defaults_to_the_shipped_models_data():
    import argparse

    from safecls.recipe.datasets import HARMFUL_PER_BENIGN

    parser = argparse.ArgumentParser(prog="safecls")
    commands.register(parser.add_subparsers(dest="command"))
    given = parser.parse_args(["recipe", "data", "--harmful-per-benign", "1"]).harmful_per_benign
    unset = parser.parse_args(["recipe", "data"]).harmful_per_benign
    assert commands.harmful_per_benign(given) == 1.0
    assert commands.harmful_per_benign(unset) == HARMFUL_PER_BENIGN
