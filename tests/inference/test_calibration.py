"""`calibrate` on a tiny model whose head and reads are scripted: the lowest threshold whose benign flags (at the
start and mid-reply) stay within the target wins, then the most reactive tau that still does."""

from __future__ import annotations

import json

import pytest

from safecls.inference import Engine
from safecls.inference.calibration import CalibrationConfig, calibrate, request_curve
from safecls.model import SafeClsModel
from tests.inference.scripted import ScriptedHead
from tests.tiny import tiny_model


def test_request_curve_by_hand():
    curve = request_curve([0.1, 0.2, 0.9], [0.4, 0.95], grid=3)  # thresholds 0.25, 0.5, 0.75
    assert [(c.threshold, c.benign_flagged, c.harmful_missed) for c in curve] == [
        (0.25, pytest.approx(1 / 3), 0.0), (0.5, pytest.approx(1 / 3), 0.5), (0.75, pytest.approx(1 / 3), 0.5)]


@pytest.fixture
def model():
    return SafeClsModel.from_base(*tiny_model("llama"))


def test_the_lowest_threshold_within_the_target_wins_then_the_most_reactive_tau(model, monkeypatch, tmp_path):
    benign = [f"benign request {i}" for i in range(20)]
    harmful = [f"harmful request {i}" for i in range(10)]
    p0 = {**{b: 0.05 * (i % 10) for i, b in enumerate(benign)}, **{h: 0.97 for h in harmful}}  # benign max 0.45
    monkeypatch.setattr(model, "classify", lambda prompts, batch_size=16: [p0[p] for p in prompts])
    eng = Engine(model)
    # mid-reply reads: P = 0.42 on every read. Above a threshold below 0.42 every benign reply gets flagged.
    monkeypatch.setattr(eng, "_head_p", ScriptedHead(eng, [0.42]))
    cfg = CalibrationConfig(max_benign_flagged=0.1, taus=[1, 3], candidates=10, grid=19,
                            decode={"max_new_tokens": 6, "min_new_tokens": 6, "schedule": "every"})
    cal = calibrate(model, benign + harmful, [0] * 20 + [1] * 10, cfg, engine=eng)
    # at 0.40: 2 benign flagged at the start (0.45 twice) = 10%, but every reply is flagged mid-reply (0.42 > 0.40)
    # at 0.45: none at the start, and 0.42 reads never trigger: 0%; tau 1 then keeps it at 0%
    assert cal.met_target and cal.threshold == pytest.approx(0.45) and cal.tau == 1
    # a bisection of the 12 feasible thresholds 0.40..0.95, the top first: 0.95 ok, 0.65 ok, 0.50 ok, 0.45 ok,
    # 0.40 over (every reply flagged mid-reply); then tau 1 at 0.45
    assert [(t.threshold, t.tau) for t in cal.trials] == [(pytest.approx(x), tau) for x, tau in (
        (0.95, 3), (0.65, 3), (0.50, 3), (0.45, 3), (0.40, 3), (0.45, 1))]
    assert cal.trials[4].flagged_mid_reply == 18 and cal.harmful_missed == 0.0
    saved = cal.for_checkpoint()
    assert saved["decode"] == {"threshold": cal.threshold, "tau": 1}
    # moderation reads requests only: at 0.40 the two 0.45 benign requests are 10% of 20, within; at 0.35 20%
    assert saved["moderation"] == {"threshold": pytest.approx(0.40)}
    model.calibration = json.loads(json.dumps(saved))
    model.save_pretrained(tmp_path / "ck")
    loaded = SafeClsModel.from_pretrained(tmp_path / "ck")
    assert loaded.calibrated == {"threshold": cal.threshold, "tau": 1}
    assert loaded.moderation_threshold == pytest.approx(0.40)
    assert Engine(loaded).resolve([cfg.decode])[0].threshold == cal.threshold  # unset -> the calibrated value


def test_the_report_draws_a_calibrated_models_trade_off(model, tmp_path):
    import re

    from safecls.eval.report import write_report
    from safecls.eval.runner import tradeoff_of

    curve = request_curve([0.1, 0.2, 0.9], [0.4, 0.95], grid=3)
    model.calibration = {"decode": {"threshold": 0.5, "tau": 2}, "threshold": 0.5, "tau": 2, "target": 0.03,
                         "benign_flagged": 1 / 3, "harmful_missed": 0.5, "n_benign": 3, "n_harmful": 2,
                         "curve": [c.model_dump() for c in curve]}
    assert tradeoff_of("plain", SafeClsModel.from_base(*tiny_model("llama"))) is None  # uncalibrated: no entry
    entry = tradeoff_of("safecls", model)
    md, page = write_report(tmp_path, {"tradeoff": [entry]})
    assert "| safecls | 0.500 | 2 | 3.0% | 33.3% | 50.0% | 3 / 2 |" in md.read_text()
    assert re.findall(r'<img alt="([^"]+)"', page.read_text()) == ["calibration trade-off"]


def test_ending_a_refusal_that_drifted_is_not_a_benign_request_flagged():
    """A benign request the language model refused by itself was not refused by the head; ending that refusal after
    its reason changes no verdict the calibration counts."""
    from safecls.inference.trace import END_REFUSAL, Intervention, SafetyTrace

    assert not SafetyTrace(interventions=[Intervention(END_REFUSAL, 12, 14)]).steered_to_refusal
    assert SafetyTrace(interventions=[Intervention("insert_prefix", 3, 5)]).steered_to_refusal
    assert SafetyTrace(interventions=[Intervention("insert_prefix", 0, -1), Intervention(END_REFUSAL, 20, 22)]
                       ).steered_to_refusal
    assert not SafetyTrace().steered_to_refusal


def test_calibrate_command_reads_a_config_that_flags_override(tmp_path, monkeypatch):
    import argparse

    from safecls.inference import commands

    seen = []

    def fake_calibrate(model, prompts, labels, cfg):
        seen.append((cfg, labels))
        raise SystemExit(0)

    monkeypatch.setattr("safecls.inference.calibration.calibrate", fake_calibrate)
    monkeypatch.setattr(SafeClsModel, "from_pretrained", staticmethod(lambda path: object()))
    dev = tmp_path / "dev.jsonl"
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    dev.write_text("".join(json.dumps({"messages": turns, "label": i % 2, "source": "t"}) + "\n"
                           for i in range(4)))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_benign_flagged: 0.05\ntaus: [2, 3]\ncandidates: 4\n")
    parser = argparse.ArgumentParser(prog="safecls")
    commands.register(parser.add_subparsers(dest="command"))
    for extra in ([], ["--set", "candidates=2"], ["--max-benign-flagged", "0.01"]):
        args = parser.parse_args(["calibrate", "--model", "m", "--data", str(dev), "--config", str(cfg), *extra])
        with pytest.raises(SystemExit):
            args.func(args)
    args = parser.parse_args(["calibrate", "--model", "m", "--data", str(dev)])  # no config: the class's defaults
    with pytest.raises(SystemExit):
        args.func(args)
    got = [(c.max_benign_flagged, c.taus, c.candidates) for c, _ in seen]
    assert got == [(0.05, [2, 3], 4), (0.05, [2, 3], 2), (0.01, [2, 3], 4), (0.03, [1, 2, 3], 5)]
    assert seen[0][1] == [0, 1, 0, 1]


def test_a_first_read_threshold_of_its_own_takes_its_share_and_the_mid_reply_one_the_rest(model, monkeypatch,
                                                                                          tmp_path):
    benign = [f"benign request {i}" for i in range(20)]
    harmful = [f"harmful request {i}" for i in range(10)]
    # benign first reads 0.00 .. 0.45 (two each); harmful 0.30 (5) and 0.97 (5)
    p0 = {**{b: 0.05 * (i % 10) for i, b in enumerate(benign)}, **{h: 0.30 if i < 5 else 0.97
                                                                    for i, h in enumerate(harmful)}}
    monkeypatch.setattr(model, "classify", lambda prompts, batch_size=16: [p0[p] for p in prompts])
    eng = Engine(model)
    head = ScriptedHead(eng, [0.05, 0.62])  # the request read of the replies generated, then every mid-reply read
    monkeypatch.setattr(eng, "_head_p", head)
    generate = eng.generate

    def each_trial_anew(*args, **kwargs):  # one batch per trial: its first call is the request read
        head.calls = 0
        return generate(*args, **kwargs)

    monkeypatch.setattr(eng, "generate", each_trial_anew)
    cfg = CalibrationConfig(max_benign_flagged=0.2, request_share=0.5, taus=[3], candidates=10, grid=19, batch_size=32,
                            decode={"max_new_tokens": 6, "min_new_tokens": 6, "schedule": "every"})
    cal = calibrate(model, benign + harmful, [0] * 20 + [1] * 10, cfg, engine=eng)
    # the first read's share, 10%: 0.35 flags the two 0.40 and two 0.45 benign requests (20%), 0.40 two (10%)
    assert cal.request_threshold == pytest.approx(0.40)
    # mid-reply: a threshold below 0.62 flags every reply left; 0.65 none. So 2 / 20 at the start, 10%, in all
    assert cal.threshold == pytest.approx(0.65) and cal.met_target and cal.benign_flagged == pytest.approx(0.1)
    assert all(t.flagged_at_start == 2 and t.request_threshold == pytest.approx(0.40) for t in cal.trials)
    assert cal.harmful_missed == 0.5  # at the first read's threshold: the five 0.30 ones
    saved = cal.for_checkpoint()
    assert saved["decode"] == {"threshold": pytest.approx(0.65), "tau": 3, "request_threshold": pytest.approx(0.40)}
    model.calibration = json.loads(json.dumps(saved))
    model.save_pretrained(tmp_path / "ck")
    loaded = Engine(SafeClsModel.from_pretrained(tmp_path / "ck"))
    got = loaded.resolve([cfg.decode])[0]
    assert (got.threshold, got.request_threshold) == (pytest.approx(0.65), pytest.approx(0.40))
    own = loaded.resolve([cfg.decode.model_copy(update={"threshold": 0.8})])[0]
    assert own.request_threshold == 0.8  # a threshold of one's own replaces the calibrated pair


def test_one_threshold_when_no_share_is_given_reads_the_request_at_it(model):
    from safecls.inference.config import DecodeConfig

    cfg = DecodeConfig().resolved({"threshold": 0.7, "tau": 2})
    assert (cfg.threshold, cfg.request_threshold, cfg.tau) == (0.7, 0.7, 2)
    assert DecodeConfig().resolved(None).request_threshold == 0.5
