"""The strategic-attention state machine and the schedules, rule by rule (pure: no model)."""

import pytest

from safecls.inference import schedules, strategic
from safecls.inference.config import DecodeConfig
from safecls.inference.strategic import Action

CFG = DecodeConfig(r2=15, r3=10, tau=3, threshold=0.5, policy="medium")


def test_initially_malicious_acts_at_once_and_medium_keeps_reading_the_refusal():
    st, act = strategic.initial(CFG, 0.9)
    assert (st.rule, act) == ("R2", Action.INSERT_PREFIX)
    assert strategic.wants_read(st, scheduled=True, ending=False)  # a refusal can drift back into the answer
    high, act = strategic.initial(CFG.model_copy(update={"policy": "high"}), 0.9)
    assert (high.rule, act) == ("DONE", Action.FIXED_REFUSAL)
    assert not strategic.wants_read(high, scheduled=True, ending=True)
    assert strategic.initial(CFG.model_copy(update={"policy": "low"}), 0.9) == (strategic.RowState("DONE"), Action.NONE)


def test_the_request_read_has_its_own_threshold_where_one_is_set():
    own = CFG.model_copy(update={"request_threshold": 0.8})
    assert strategic.initial(own, 0.7)[1] == Action.NONE and strategic.initial(CFG, 0.7)[1] == Action.INSERT_PREFIX
    st = strategic.initial(own, 0.1)[0]
    assert strategic.after_read(st, own, 5, 0.6, 6) == (Action.NONE, -1) and st.rule == "R3"  # later reads: 0.5


def test_r1_is_deprecated_and_has_no_effect():
    with pytest.warns(FutureWarning, match="r1 has no effect"):
        cfg = DecodeConfig(r1=5).resolved()
    assert strategic.initial(cfg, 0.9) == strategic.initial(DecodeConfig().resolved(), 0.9)


def test_benign_window_is_the_latest_r2_tokens_widened_back_to_the_previous_read():
    st, act = strategic.initial(CFG, 0.1)
    assert (st.rule, act) == ("R2", Action.NONE)
    assert strategic.span(st, CFG, 3) == (3 + 1 - 15, 4)  # negative steps: the end of a prefill, if any
    strategic.after_read(st, CFG, 3, 0.1, hi=4)
    assert strategic.span(st, CFG, 30) == (4, 31)  # 27 tokens since the last read: all of them, not the latest 15
    strategic.after_read(st, CFG, 30, 0.1, hi=31)
    assert strategic.span(st, CFG, 40) == (26, 41)  # a short gap: the latest r2


def test_tau_consecutive_malicious_confirms_and_rolls_back_to_trigger():
    st, _ = strategic.initial(CFG, 0.1)
    assert strategic.after_read(st, CFG, 20, 0.9, hi=21) == (Action.NONE, -1)
    assert (st.rule, st.s_t, st.consecutive) == ("R3", 20, 1)
    assert strategic.span(st, CFG, 21) == (5, 22)  # [S_t - r2, min(t, S_t + r3)]
    assert strategic.span(st, CFG, 40) == (5, 31)
    assert strategic.after_read(st, CFG, 21, 0.8, hi=22) == (Action.NONE, -1)
    assert strategic.after_read(st, CFG, 22, 0.7, hi=23) == (Action.INSERT_PREFIX, 20)
    assert (st.rule, st.consecutive) == ("R2", 0)  # reading goes on; a new trigger counts from one


def test_false_trigger_returns_to_r2_without_action():
    st, _ = strategic.initial(CFG, 0.1)
    strategic.after_read(st, CFG, 10, 0.9, hi=11)
    strategic.after_read(st, CFG, 11, 0.9, hi=12)
    assert strategic.after_read(st, CFG, 12, 0.2, hi=13) == (Action.NONE, -1)
    assert (st.rule, st.consecutive) == ("R2", 0)
    strategic.after_read(st, CFG, 13, 0.9, hi=14)  # a new trigger counts from one again
    assert st.consecutive == 1 and st.s_t == 13


def test_a_pending_trigger_is_confirmed_when_the_reply_ends():
    st, _ = strategic.initial(CFG, 0.1)
    strategic.after_read(st, CFG, 10, 0.9, hi=11)
    assert strategic.at_end(st, CFG) == (Action.INSERT_PREFIX, 10)
    benign, _ = strategic.initial(CFG, 0.1)
    assert strategic.at_end(benign, CFG) == (Action.NONE, -1)


def test_high_acts_on_the_first_malicious_read_without_waiting_for_tau():
    cfg = CFG.model_copy(update={"policy": "high", "tau": 5})
    st, _ = strategic.initial(cfg, 0.1)
    assert strategic.after_read(st, cfg, 7, 0.9, hi=8) == (Action.FIXED_REFUSAL, 7)
    assert st.rule == "DONE"


def test_a_pending_trigger_is_read_every_step_whatever_the_schedule():
    cfg = CFG.model_copy(update={"schedule": "periodic", "period": 8})
    st, _ = strategic.initial(cfg, 0.1)
    assert not strategic.wants_read(st, schedules.should_read(cfg, 3), ending=False)
    assert strategic.wants_read(st, schedules.should_read(cfg, 7), ending=False)
    strategic.after_read(st, cfg, 7, 0.9, hi=8)
    assert strategic.wants_read(st, schedules.should_read(cfg, 8), ending=False)


def test_schedules():
    def steps(**kw):
        cfg = DecodeConfig(**kw)
        return [t for t in range(200) if schedules.should_read(cfg, t)]

    assert steps(schedule="first") == []
    assert steps(schedule="every") == list(range(200))
    assert DecodeConfig().period == 10  # the paper's
    assert steps(schedule="periodic", period=32) == [31, 63, 95, 127, 159, 191]
    ann = steps(schedule="annealing", anneal_dense=8, anneal_growth=2.0, anneal_stop=128)
    assert ann[:8] == list(range(8)) and ann[8:] == [9, 13, 21, 37, 69, 127]  # closing read at anneal_stop - 1
    assert len(ann) < 128 * 0.12  # sparse: the point of annealing
    cfg = DecodeConfig(schedule="annealing", anneal_stop=128)
    assert schedules.active(cfg, 127) and not schedules.active(cfg, 128)
    assert not schedules.active(DecodeConfig(schedule="first"), 0)


def test_unset_threshold_and_tau_take_the_checkpoints_calibrated_values():
    cfg = DecodeConfig(policy="medium")
    assert (cfg.threshold, cfg.tau) == (None, None)
    assert (cfg.resolved().threshold, cfg.resolved().tau) == (0.5, 3)  # uncalibrated
    assert cfg.resolved({"threshold": 0.8, "tau": 2}).model_dump(include={"threshold", "tau"}) == {"threshold": 0.8,
                                                                                                 "tau": 2}
    own = DecodeConfig(threshold=0.6).resolved({"threshold": 0.8, "tau": 2})
    assert (own.threshold, own.tau) == (0.6, 2)  # a value the caller set wins
