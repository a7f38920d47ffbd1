"""The head study flags requests at the request's own threshold and (prompt, reply) reads at the mid-reply one."""

from __future__ import annotations

from safecls.study.head import head_study


class Scripted:
    """A head whose P(malicious) is looked up by text: requests by the prompt, pairs by the reply."""

    def __init__(self, scores: dict[str, float]):
        self.scores = scores

    def classify(self, prompts, responses=None, read_prompt=True):
        keys = prompts if responses is None else responses
        return [self.scores[k] for k in keys]


SCORES = {"bad1": 0.95, "bad2": 0.85, "ok1": 0.80, "ok2": 0.10,  # requests
          "harmful reply": 0.97, "worse reply": 0.99, "answer": 0.90}  # replies


def test_requests_at_the_request_threshold_and_replies_at_the_mid_reply_one():
    sets = {"requests": (["bad1", "bad2"], ["ok1", "ok2"])}
    pairs = {"completion": ([("q", "harmful reply"), ("q", "worse reply")], [("q", "answer")])}
    h = head_study("m", Scripted(SCORES), 0.98, sets, pairs, request_threshold=0.82)
    r = h.sets[0]
    # by hand: 0.95 and 0.85 are over 0.82, 0.80 and 0.10 are not; at 0.98 none would be
    assert (r.flagged_pos, r.flagged_neg, r.threshold, r.auc) == (1.0, 0.0, 0.82, 1.0)
    for p in h.pairs:  # 0.99 only is over 0.98; at 0.82 every reply would be
        assert (p.flagged_pos, p.flagged_neg, p.threshold) == (0.5, 0.0, 0.98)
    assert (h.threshold, h.request_threshold) == (0.98, 0.82)


def test_without_a_request_threshold_every_read_is_flagged_at_the_one_threshold():
    h = head_study("m", Scripted(SCORES), 0.9, {"requests": (["bad1", "bad2"], ["ok1", "ok2"])}, {})
    assert (h.sets[0].flagged_pos, h.sets[0].threshold, h.request_threshold) == (0.5, 0.9, None)
