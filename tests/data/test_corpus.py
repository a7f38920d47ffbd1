import json

import pytest

from safecls.config import load_config
from safecls.data.corpus import PretrainCorpusConfig, build_pretrain_corpus, chunk_chars, chunk_tokens
from safecls.data.labelers import HeadLabeler
from safecls.errors import DataError

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_chunk_chars_respects_size_and_word_boundaries():
    text = "alpha beta gamma delta epsilon zeta eta theta " * 5
    pieces = chunk_chars(text, 20)
    assert all(len(p) <= 20 for p in pieces)
    assert " ".join(pieces).split() == text.split()           # nothing lost, no word split
    assert chunk_chars("x" * 45, 20) == ["x" * 20, "x" * 20, "x" * 5]   # one long word is cut hard
    assert chunk_chars("   ", 10) == []


class ToyTokenizer:
    """Word-level: one token per word; decode joins with spaces."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}

    def decode(self, ids):
        return " ".join(ids)


def test_chunk_tokens_counts_tokens():
    assert chunk_tokens("a b c d e", 2, ToyTokenizer()) == ["a b", "c d", "e"]


def test_token_unit_needs_a_tokenizer():
    with pytest.raises(ValueError, match="unit: tokens needs a tokenizer"):
        PretrainCorpusConfig.model_validate({"inputs": [{"path": "x.txt"}], "chunk": {"unit": "tokens"}})


class Counting:
    def __init__(self):
        self.calls = 0

    def classify(self, prompts):
        self.calls += 1
        return [0.9 if "bomb" in p else 0.1 for p in prompts]


def test_corpus_labels_chunks_writes_jsonl_and_reuses_the_cache(tmp_path):
    (tmp_path / "doc.txt").write_text("Bake bread with flour and water. " * 3 + "Build a bomb in a garage today.")
    (tmp_path / "docs.jsonl").write_text(json.dumps({"body": "Plant tomatoes in spring."}) + "\n")
    cfg = PretrainCorpusConfig.model_validate({
        "inputs": [{"path": str(tmp_path / "doc.txt")}, {"path": str(tmp_path / "docs.jsonl"), "format": "jsonl", "field": "body"}],
        "chunk": {"size": 40}, "labeler": {"name": "keyword"}, "cache_dir": str(tmp_path / "cache"),
        "output": str(tmp_path / "out.jsonl")})
    pairs = build_pretrain_corpus(cfg)
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == len(pairs) and {r["source"] for r in rows} == {"doc", "docs"}
    assert [r["label"] for r in rows if "bomb" in r["text"]] == [1]
    assert sum(r["label"] for r in rows) == 1 and all(r["labeler"] == "keyword" for r in rows)

    clf = Counting()
    head_cfg = PretrainCorpusConfig.model_validate({**cfg.model_dump(), "output": None, "labeler": {"name": "safecls-head"}})
    first = build_pretrain_corpus(head_cfg, classifier=clf)      # runtime objects reach the labeler
    calls = clf.calls
    again = build_pretrain_corpus(head_cfg, labeler=HeadLabeler(classifier=clf))
    assert calls >= 1 and clf.calls == calls                      # the rerun read every label from the cache
    assert [lab.label for _, lab in again] == [lab.label for _, lab in first] == [int("bomb" in c.text) for c, _ in again]


def test_jsonl_without_the_text_field_names_the_line(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"txt": "no"}) + "\n")
    cfg = PretrainCorpusConfig.model_validate({"inputs": [{"path": str(tmp_path / "d.jsonl"), "format": "jsonl"}],
                                               "cache_dir": None})
    with pytest.raises(DataError, match=r"d\.jsonl:2: field 'text' is missing"):
        build_pretrain_corpus(cfg)


def test_example_label_config_validates():
    cfg = load_config(REPO / "configs" / "data_label.yaml", PretrainCorpusConfig)
    assert cfg.labeler.name == "keyword" and cfg.inputs[0].field == "question"
