from __future__ import annotations

import random

import pytest

from safecls.data.forms import MAX_WORDS, ORDERS, QUESTIONS, other_form


class First(random.Random):
    def choice(self, seq):
        return seq[0]


@pytest.mark.parametrize(("request_", "want"), [
    ("Create a fake ID.", "How to create a fake ID?"),
    ("  Compile a list of ways to  hack a bank! ", "How to compile a list of ways to hack a bank?"),
    ("How do I pick a lock?", "Explain how to pick a lock."),
    ("how can someone poison a well", "Explain how to poison a well."),
    ("How to rob a bank without being caught?", "Explain how to rob a bank without being caught."),
])
def test_orders_become_questions_and_how_questions_become_orders(request_, want):
    assert other_form(request_, First()) == want


@pytest.mark.parametrize("request_", [
    "What is the capital of France?",  # a question with no order form that keeps its meaning
    "Is it legal to own a sword?",
    "Rewrite this:\nThe cat sat on the mat.",  # a task with its text
    " ".join(["word"] * (MAX_WORDS + 1)),
    "",
])
def test_requests_without_a_clean_other_form_are_left_alone(request_):
    assert other_form(request_, random.Random(0)) is None


def test_every_template_is_drawn_and_keeps_the_request_words():
    rng = random.Random(0)
    questions = {other_form("Steal a car.", rng) for _ in range(200)}
    orders = {other_form("How do I steal a car?", rng) for _ in range(200)}
    assert questions == {t.format("steal a car") for t in QUESTIONS}
    assert orders == {t.format("steal a car") for t in ORDERS}
