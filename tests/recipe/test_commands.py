"""`safecls recipe answers|data --limit POOL=N`: the pools' draws start from the shipped model's and take overrides."""

from __future__ import annotations

import argparse

import pytest

from safecls.errors import ConfigError
from safecls.recipe import commands
from safecls.recipe.self_answers import LIMITS, pool_prompts


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="safecls")
    commands.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_limits_default_to_the_shipped_models_and_take_overrides():
    args = _parse(["recipe", "data", "--limit", "lima=1029", "--limit", "alpaca=7"])
    assert commands.pool_limits(_parse(["recipe", "answers"]).limit) == LIMITS
    assert commands.pool_limits(args.limit) == {**LIMITS, "lima": 1029, "alpaca": 7}


@pytest.mark.parametrize("bad", ["lima", "lima=0", "lima=many", "safety-sft=10", "gsm8k=5"])
def test_a_bad_limit_names_the_problem_and_the_fix(bad):
    with pytest.raises(ConfigError, match=r"--limit .*Fix: e\.g\. --limit lima=1000"):
        commands.pool_limits([bad])


def test_a_larger_draw_of_a_pool_is_a_seeded_subset_in_file_order(shared_data):
    small = pool_prompts(shared_data, "lima", {"lima": 50})
    large = pool_prompts(shared_data, "lima", {"lima": 400})
    again = pool_prompts(shared_data, "lima", {"lima": 400})
    assert (len(small), len(large)) == (50, 400) and large == again
    order = [int(p.id.rsplit("/", 1)[1]) for p in large]
    assert order == sorted(order)
