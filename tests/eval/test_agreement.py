from __future__ import annotations

import math

import pytest

from safecls.eval.agreement import agreement_matrix, cohen_kappa, percent_agreement


def test_kappa_textbook_example():
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15.
    # p_o = 35/50 = 0.7; A says yes 25/50, B says yes 30/50; p_e = .5*.6 + .5*.4 = 0.5; kappa = 0.2/0.5 = 0.4.
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert percent_agreement(a, b) == pytest.approx(0.7)
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_kappa_three_labels_and_extremes():
    # Hand count: pairs (c,c) (c,r) (r,r) (o,o) (o,c) (r,r); p_o = 4/6.
    # a: c2 r2 o2; b: c2 r3 o1; p_e = (2*2 + 2*3 + 2*1)/36 = 12/36; kappa = (4/6 - 1/3)/(2/3) = 0.5.
    a = ["c", "c", "r", "o", "o", "r"]
    b = ["c", "r", "r", "o", "c", "r"]
    assert cohen_kappa(a, b) == pytest.approx(0.5)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa(["y", "n"], ["n", "y"]) == pytest.approx(-1.0)
    assert math.isnan(cohen_kappa(["y", "y"], ["y", "y"]))  # p_e = 1: undefined
    with pytest.raises(ValueError, match="differ in length"):
        cohen_kappa(["y"], ["y", "n"])


def test_agreement_matrix_is_symmetric_and_json_safe():
    m = agreement_matrix({"a": ["c", "r", "c", "r"], "b": ["c", "r", "r", "r"], "const": ["c"] * 4})
    assert m.judges == ["a", "b", "const"] and m.n == 4
    assert m.agreement[0][1] == m.agreement[1][0] == 0.75
    # a vs b: p_o = 3/4, p_e = (2*1 + 2*3)/16 = 0.5 -> kappa 0.5
    assert m.kappa[0][1] == m.kappa[1][0] == pytest.approx(0.5)
    assert m.kappa[0][0] == 1.0 and m.kappa[2][2] is None  # a constant judge agrees with itself undefinedly
    assert m.kappa[0][2] == pytest.approx(0.0)  # p_o = p_e = 0.5
    assert "NaN" not in m.model_dump_json()


def test_judge_agreement_from_records_uses_common_judges():
    from safecls.eval.agreement import judge_agreement

    def rec(**v):
        return {"model": "m", "benchmark": "b", "verdicts": v}

    records = [rec(kw="comply", hb="comply", x="refuse"), rec(kw="refuse", hb="comply"),
               rec(kw="refuse", hb="refuse"), rec(kw="comply", hb="comply")]
    m = judge_agreement(records)
    assert m.judges == ["hb", "kw"] and m.n == 4 and m.agreement[0][1] == 0.75
    m2 = judge_agreement(records, ["kw", "x"])
    assert m2.n == 1
    with pytest.raises(ValueError, match="no record was judged by all of"):
        judge_agreement(records, ["nobody"])
