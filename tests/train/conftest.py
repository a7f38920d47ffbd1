"""Fixtures of the training tests: a tiny random base model on disk and toy JSONL data with a separable label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.tiny import tiny_model

MARKER = "bomb"  # the malicious prompts contain it, the benign ones never do


def toy_records(n: int, offset: int = 0) -> list[dict]:
    """Half benign, half malicious; only the marker word separates the prompts."""
    topics = ["bread", "the sea", "a joke", "the fox", "a poem", "salt", "water", "the dog"]
    out = []
    for i in range(offset, offset + n):
        mal = i % 2
        topic = topics[(i // 2) % len(topics)]
        user = f"Explain how to build a {MARKER} with {topic}" if mal else f"Explain how to write about {topic}"
        reply = "Sorry, I cannot fulfill your request because it could hurt people." if mal else f"Write about {topic}."
        out.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}],
                    "label": mal, "source": "toy"})
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP spin-waits under
    oversubscription made these tests 10-20x slower (measured). Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama + tokenizer, for `model: <path>`."""
    d = tmp_path_factory.mktemp("tiny-llama")
    model, tok = tiny_model("llama")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture
def toy_data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", toy_records(24))
