"""The strategic-attention state machine, rule by rule (pure: no model)."""

from safecls.inference import schedules, strategic
from safecls.inference.config import DecodeConfig
from safecls.inference.strategic import Action

CFG = DecodeConfig(r1=5, r2=15, r3=10, tau=3, policy="medium")


def test_initially_malicious_starts_r1_and_inserts_prefix():
    st, act = strategic.initial(CFG, 0.9)
    assert (st.rule, act) == ("R1", Action.INSERT_PREFIX)
    assert strategic.span(st, CFG, 2) == (0, 3)
    assert strategic.span(st, CFG, 40) == (0, 5)  # input + first r1 tokens
    assert strategic.initial(CFG.model_copy(update={"policy": "high"}), 0.9)[1] == Action.FIXED_REFUSAL
    assert strategic.initial(CFG.model_copy(update={"policy": "low"}), 0.9) == (strategic.RowState("DONE"), Action.NONE)


def test_benign_window_is_the_latest_r2_tokens():
    st, act = strategic.initial(CFG, 0.1)
    assert (st.rule, act) == ("R2", Action.NONE)
    assert strategic.span(st, CFG, 3) == (0, 4)
    assert strategic.span(st, CFG, 30) == (16, 31)


def test_tau_consecutive_malicious_confirms_and_rolls_back_to_trigger():
    st, _ = strategic.initial(CFG, 0.1)
    assert strategic.after_eval(st, CFG, 20, 0.9) == (Action.NONE, -1)
    assert (st.rule, st.s_t, st.consecutive) == ("R3", 20, 1)
    assert strategic.span(st, CFG, 21) == (5, 22)  # [S_t - r2, min(t, S_t + r3)]
    assert strategic.span(st, CFG, 40) == (5, 31)
    assert strategic.after_eval(st, CFG, 21, 0.8) == (Action.NONE, -1)
    assert strategic.after_eval(st, CFG, 22, 0.7) == (Action.INSERT_PREFIX, 20)
    assert st.rule == "DONE"


def test_false_trigger_returns_to_r2_without_action():
    st, _ = strategic.initial(CFG, 0.1)
    strategic.after_eval(st, CFG, 10, 0.9)
    strategic.after_eval(st, CFG, 11, 0.9)
    assert strategic.after_eval(st, CFG, 12, 0.2) == (Action.NONE, -1)
    assert (st.rule, st.s_t, st.consecutive) == ("R2", -1, 0)
    # a new trigger counts from one again
    strategic.after_eval(st, CFG, 13, 0.9)
    assert st.consecutive == 1 and st.s_t == 13


def test_pending_trigger_is_checked_every_step_whatever_the_schedule():
    cfg = CFG.model_copy(update={"schedule": "periodic", "period": 8})
    st, _ = strategic.initial(cfg, 0.1)
    assert not strategic.wants_eval(st, cfg, 3, schedules.should_evaluate(cfg, 3))
    assert strategic.wants_eval(st, cfg, 7, schedules.should_evaluate(cfg, 7))
    strategic.after_eval(st, cfg, 7, 0.9)
    assert strategic.wants_eval(st, cfg, 8, schedules.should_evaluate(cfg, 8))


def test_schedules():
    def steps(**kw):
        cfg = DecodeConfig(**kw)
        return [t for t in range(128) if schedules.should_evaluate(cfg, t)]

    assert steps(schedule="first") == []
    assert steps(schedule="every") == list(range(128))
    assert steps(schedule="periodic", period=32) == [31, 63, 95, 127]
    ann = steps(schedule="annealing", anneal_dense=8, anneal_growth=2.0, anneal_stop=128)
    assert ann[:8] == list(range(8)) and ann[8:] == [9, 13, 21, 37, 69]
    assert len(ann) < 128 * 0.12  # sparse: the point of annealing
