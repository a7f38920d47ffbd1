from __future__ import annotations

import json

import pytest

from safecls.errors import DataError
from safecls.model.encoding import encode_prompt
from safecls.model.routing import Kind
from safecls.train.dataset import ExampleOrder, read_records, tokenize
from tests.tiny import tiny_tokenizer
from tests.train.conftest import toy_records, write_jsonl


def _chat(user: str, reply: str, label=0) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}],
            "label": label, "source": "t"}


def test_malformed_line_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [_chat("a", "b"), _chat("c", "d"), '{"messages": [oops'])
    with pytest.raises(DataError, match=r"d\.jsonl:3: not valid JSON"):
        read_records(path, "sft")


def test_missing_label_names_line(tmp_path):
    row = _chat("a", "b")
    del row["label"]
    path = write_jsonl(tmp_path / "d.jsonl", [_chat("x", "y"), row])
    with pytest.raises(DataError, match=r"d\.jsonl:2: field 'label' is missing"):
        read_records(path, "sft")


def test_empty_response_names_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [_chat("a", "   ")])
    with pytest.raises(DataError, match=r"d\.jsonl:1: the assistant response is empty"):
        read_records(path, "sft")


def test_text_record_needs_label_and_is_pretrain_only(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "plain text", "label": 1}])
    assert read_records(path, "pretrain")[0].label == 1
    with pytest.raises(DataError, match=r"d\.jsonl:1: .*sft stage"):
        read_records(path, "sft")
    bad = write_jsonl(tmp_path / "e.jsonl", [{"text": "plain text"}])
    with pytest.raises(DataError, match=r"e\.jsonl:1: field 'label' is missing"):
        read_records(bad, "pretrain")


def test_planted_cls_token_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [_chat("hi <|safety_cls|> there", "ok")])
    with pytest.raises(DataError, match=r"d\.jsonl:1: .*reserved token"):
        read_records(path, "sft")


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match="no records"):
        read_records(path, "sft")


def test_tokenize_cuts_long_responses_and_drops_long_prompts(tmp_path):
    tok = tiny_tokenizer()
    path = write_jsonl(tmp_path / "d.jsonl", [_chat("short", "word " * 100), _chat("word " * 100, "ok")])
    items = tokenize(read_records(path, "sft"), tok, max_length=40)
    assert len(items) == 1  # the second prompt alone is longer than 40 tokens
    assert len(items[0].enc) == 39  # + [CLS] = max_length
    assert items[0].enc.kinds[-1] == Kind.RESPONSE


def test_masked_prefix_is_routed_as_response_but_never_a_target(tmp_path):
    from safecls.model.encoding import collate
    from safecls.model.safecls_model import lm_target_positions

    tok = tiny_tokenizer()
    reply = "Mix flour and water. Sorry, I cannot fulfill your request."
    row = {**_chat("bake", reply, 1), "masked_prefix_chars": len("Mix flour and water. ")}
    item = tokenize(read_records(write_jsonl(tmp_path / "d.jsonl", [row]), "sft"), tok, 256)[0]
    n_prompt = len(encode_prompt(tok, [{"role": "user", "content": "bake"}]))
    tail = item.enc.ids[n_prompt:]
    assert all(k == Kind.RESPONSE for k in item.enc.kinds[n_prompt:])  # routed as at inference: it reads [CLS]
    skipped = tok.decode([t for t, u in zip(tail, item.enc.untargeted[n_prompt:]) if u])
    assert skipped.strip() == "Mix flour and water."
    # the LM targets are exactly the refusal (and eos): none of the harmful prefix
    batch = collate([item.enc], cls_token_id=0, pad_token_id=tok.pad_token_id, side="right")
    _, targets = lm_target_positions(batch, "response")
    trained = tok.decode(targets.tolist(), skip_special_tokens=True)
    assert trained.startswith("Sorry") and "flour" not in trained and trained.endswith("request.")
    # without the mask every response token is a target
    plain = collate([type(item.enc)(item.enc.ids, item.enc.kinds)], 0, tok.pad_token_id, side="right")
    assert "flour" in tok.decode(lm_target_positions(plain, "response")[1].tolist())


def test_order_resumes_exactly_and_covers_each_epoch():
    a = ExampleOrder(7, seed=3)
    first = a.take(10)
    b = ExampleOrder.from_state(json.loads(json.dumps(a.state_dict())))
    assert a.take(12) == b.take(12)
    assert sorted(ExampleOrder(7, seed=3).take(7)) == list(range(7))
    assert ExampleOrder(7, seed=4).take(7) != first[:7]


def test_grouped_order_sorts_each_run_by_length_and_resumes_exactly():
    lengths = [(i * 37) % 50 for i in range(40)]
    a = ExampleOrder(40, seed=1, lengths=lengths, group=8)
    epoch = a.take(40)
    assert sorted(epoch) == list(range(40))  # still every example once per epoch
    runs = [epoch[i:i + 8] for i in range(0, 40, 8)]
    assert all([lengths[i] for i in r] == sorted(lengths[i] for i in r) for r in runs)
    assert set(epoch[:8]) == set(ExampleOrder(40, seed=1).take(8))  # the same shuffle, only sorted within runs
    a.take(13)
    b = ExampleOrder.from_state(json.loads(json.dumps(a.state_dict())), lengths=lengths)
    assert a.take(50) == b.take(50)


def test_toy_records_validate(tmp_path):
    recs = read_records(write_jsonl(tmp_path / "d.jsonl", toy_records(6)), "sft")
    assert [r.label for r in recs] == [0, 1, 0, 1, 0, 1]
