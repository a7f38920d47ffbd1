from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from safecls.model import SafeClsModel
from safecls.train.head_fit import HeadFitConfig, cut_reply, fit_head, reply_reads
from safecls.train.logistic import Logistic, auc
from tests.tiny import tiny_model
from tests.train.conftest import MARKER, toy_records, write_jsonl


def _checkpoint(tmp_path, calibrated: bool = True):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    if calibrated:
        model.calibration = {"decode": {"threshold": 0.9, "tau": 3}}
    model.save_pretrained(tmp_path / "ck")
    return tmp_path / "ck"


def _pairs(n: int) -> list[dict]:
    """Pretrain-corpus chat records: benign answers (0) and harmful completions (1), the marker in the harmful
    requests only."""
    out = []
    for i in range(n):
        mal = i % 2
        prompt = f"Explain how to build a {MARKER} number {i}" if mal else f"Explain how to bake bread number {i}"
        reply = ("Mix the powder and the fuse, then pack it tight in a pipe and seal both ends well." if mal
                 else "Mix flour, water, yeast and salt, knead the dough and let it rise for an hour.")
        out.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}],
                    "label": mal, "source": "completion" if mal else "answer"})
    return out


def test_cut_reply_keeps_the_first_words():
    assert cut_reply("one two  three four", 2) == "one two"


def test_reply_reads_cut_answers_and_completions_but_read_nested_replies_whole():
    recs = _pairs(2) + [{"messages": [{"role": "user", "content": "Do two things"},
                                      {"role": "assistant", "content": "First a benign part then the harmful part"}],
                         "label": 1, "source": "nested"},
                        {"text": "a window alone", "label": 0, "source": "window"}]
    reads = reply_reads(recs, cuts=3, rng=random.Random(0))
    nested = [r for r in reads if r.kind.startswith("nested")]
    assert [r.reply for r in nested] == ["First a benign part then the harmful part"]
    cut = [r for r in reads if r.kind.endswith("(cut)")]
    assert cut and all(len(r.reply.split()) < len(recs[0]["messages"][1]["content"].split()) for r in cut)
    assert not [r for r in reads if r.kind == "window"]  # text records are no read the engine makes


def test_the_folded_head_scores_what_the_logistic_fit_predicts(tmp_path):
    """classify() through the written nn.Linear head equals the fit's own standardised predictions."""
    ck = _checkpoint(tmp_path)
    reqs = write_jsonl(tmp_path / "req.jsonl", toy_records(48))
    cfg = HeadFitConfig(model=str(ck), requests_file=str(reqs), output_dir=str(tmp_path / "fit"), cuts=0)
    report = fit_head(cfg)
    assert report["l2"] in cfg.l2 and set(report["fold_auc"]) == {f"layers [-1] l2 {v:g}" for v in cfg.l2}
    refit = SafeClsModel.from_pretrained(tmp_path / "fit" / "final")
    prompts = [r["messages"][:1] for r in toy_records(48)]
    x = refit.cls_features(prompts).numpy()  # the frozen model: the same states before and after
    expected = Logistic(report["l2"]).fit(x, [r["label"] for r in toy_records(48)]).predict(x)
    assert refit.classify(prompts) == pytest.approx(expected, abs=1e-4)


def test_fit_head_separates_held_out_requests_and_drops_the_stale_calibration(tmp_path):
    ck = _checkpoint(tmp_path)
    before = SafeClsModel.from_pretrained(ck)
    held = toy_records(32, offset=200)
    prompts, labels = [r["messages"][:1] for r in held], [r["label"] for r in held]
    scores = before.classify(prompts)
    auc_before = auc([s for s, y in zip(scores, labels) if y], [s for s, y in zip(scores, labels) if not y])
    cfg = HeadFitConfig(model=str(ck), requests_file=str(write_jsonl(tmp_path / "r.jsonl", toy_records(96))),
                        replies_file=str(write_jsonl(tmp_path / "p.jsonl", _pairs(32))),
                        eval_requests_file=str(write_jsonl(tmp_path / "h.jsonl", held)),
                        output_dir=str(tmp_path / "fit"))
    report = fit_head(cfg)
    refit = SafeClsModel.from_pretrained(tmp_path / "fit" / "final")
    scores = refit.classify(prompts)
    auc_after = auc([s for s, y in zip(scores, labels) if y], [s for s, y in zip(scores, labels) if not y])
    assert auc_after > 0.95 and auc_after > auc_before
    assert report["held_out"]["by_kind"]["request/toy"]["auc_after"] == pytest.approx(auc_after, abs=1e-3)
    assert refit.calibration is None and not (tmp_path / "fit" / "final" / "calibration.json").exists()
    # the language model is the same: only the head changed
    torch.testing.assert_close(refit.cls_features(prompts), before.cls_features(prompts))
    assert json.loads((tmp_path / "fit" / "fit.json").read_text())["train"]["counts"]["request/toy/1"] == 48


def test_cls_features_batched_by_length_keep_each_inputs_order(tmp_path):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    prompts = ["a", "Explain how to build a bomb with bread and salt and water", "the sea", "Tell me a joke now"]
    together = model.cls_features(prompts, batch_size=2)
    alone = torch.cat([model.cls_features([p]) for p in prompts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_logistic_linear_form_matches_predict():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) * [1, 10, 0.1, 3, 1] + [0, 5, -2, 0, 1]
    y = (x[:, 0] + x[:, 1] / 10 > 0.5).astype(int)
    fit = Logistic().fit(x, y)
    w, b = fit.linear()
    assert 1 / (1 + np.exp(-(x @ w + b))) == pytest.approx(fit.predict(x), abs=1e-5)


def test_a_model_without_cls_has_no_head_to_fit(tmp_path):
    model = SafeClsModel.from_base(*tiny_model("llama"))
    model.with_cls = False
    model.save_pretrained(tmp_path / "plain")
    cfg = HeadFitConfig(model=str(tmp_path / "plain"), requests_file=str(write_jsonl(tmp_path / "r.jsonl",
                                                                                   toy_records(4))),
                        output_dir=str(tmp_path / "fit"))
    with pytest.raises(Exception, match="no head to fit"):
        fit_head(cfg)


def test_a_rerun_that_reads_the_same_reuses_the_states(tmp_path, monkeypatch):
    ck = _checkpoint(tmp_path)
    reqs = write_jsonl(tmp_path / "req.jsonl", toy_records(24))
    cfg = HeadFitConfig(model=str(ck), requests_file=str(reqs), output_dir=str(tmp_path / "fit"), l2=[0.01])
    first = fit_head(cfg)
    monkeypatch.setattr(SafeClsModel, "cls_features", lambda *a, **k: pytest.fail("states read again"))
    second = fit_head(cfg.model_copy(update={"l2": [0.1]}))
    assert second["l2"] == 0.1 and first["l2"] == 0.01
    write_jsonl(reqs, toy_records(26))  # other data: read again
    with pytest.raises(pytest.fail.Exception, match="states read again"):
        fit_head(cfg)


def test_a_head_over_several_layers_is_chosen_by_the_folds_and_saved_with_them(tmp_path):
    ck = _checkpoint(tmp_path)
    recs = toy_records(48)
    reqs = write_jsonl(tmp_path / "req.jsonl", recs)
    cfg = HeadFitConfig(model=str(ck), requests_file=str(reqs), output_dir=str(tmp_path / "fit"), cuts=0, l2=[0.01],
                        layers=[[-1], [1, -1], [0, 1]])
    report = fit_head(cfg)
    assert set(report["fold_auc"]) == {"layers [-1] l2 0.01", "layers [1, -1] l2 0.01", "layers [0, 1] l2 0.01"}
    best = max(report["fold_auc"], key=report["fold_auc"].get)
    assert best == f"layers {report['layers']} l2 0.01"
    refit = SafeClsModel.from_pretrained(tmp_path / "fit" / "final")
    assert refit.head_layers == tuple(report["layers"])
    prompts = [r["messages"][:1] for r in recs]
    x = SafeClsModel.from_pretrained(ck).cls_features(prompts, layers=tuple(report["layers"])).numpy()
    expected = Logistic(0.01).fit(x, [r["label"] for r in recs]).predict(x)
    assert refit.classify(prompts) == pytest.approx(expected, abs=1e-4)


def test_one_set_of_layers_may_be_given_flat():
    cfg = HeadFitConfig(model="m", requests_file="r", output_dir="o", layers=[20, -1])
    assert cfg.layers == [[20, -1]] and cfg.read_layers((-1,)) == (20, -1)
    assert HeadFitConfig(model="m", requests_file="r", output_dir="o", layers=[[1], [2, 1]]).read_layers((-1,)) == (1, 2, -1)


def test_a_second_requests_file_is_read_alone_and_fits_as_one_file_would(tmp_path, monkeypatch):
    """States are cached per file: adding a file reads only it, and the fit equals a fresh fit on both files joined."""
    ck = _checkpoint(tmp_path)
    first, extra = toy_records(24), toy_records(16, offset=100)
    a, b = write_jsonl(tmp_path / "a.jsonl", first), write_jsonl(tmp_path / "b.jsonl", extra)
    cfg = HeadFitConfig(model=str(ck), requests_file=str(a), output_dir=str(tmp_path / "fit"), l2=[0.01])
    fit_head(cfg)
    read = []
    real = SafeClsModel.cls_features
    monkeypatch.setattr(SafeClsModel, "cls_features", lambda self, prompts, *r, **k: read.append(len(prompts))
                        or real(self, prompts, *r, **k))
    both = fit_head(cfg.model_copy(update={"requests_file": [str(a), str(b)]}))
    assert read == [len(extra)]
    assert both["train"]["counts"] == {"request/toy/0": 20, "request/toy/1": 20}
    joined = write_jsonl(tmp_path / "ab.jsonl", first + extra)
    fresh = fit_head(cfg.model_copy(update={"requests_file": [str(joined)], "output_dir": str(tmp_path / "fresh")}))
    prompts = [r["messages"][:1] for r in toy_records(8, offset=300)]
    assert (SafeClsModel.from_pretrained(tmp_path / "fit" / "final").classify(prompts)
            == pytest.approx(SafeClsModel.from_pretrained(tmp_path / "fresh" / "final").classify(prompts), abs=1e-5))
    assert both["train"]["by_kind"] == fresh["train"]["by_kind"]
