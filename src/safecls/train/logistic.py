"""A linear classifier on fixed features and its AUC: the frozen-base probe the head has to beat (study/head.py)
and the head re-fit on a trained model's [CLS] states (train/head_fit.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def auc(scores_pos: Sequence[float], scores_neg: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney U / (n_pos n_neg))."""
    pos, neg = np.asarray(scores_pos, float), np.asarray(scores_neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


class Logistic:
    """L2-regularised logistic regression on standardised features (full-batch L-BFGS)."""

    def __init__(self, l2: float = 1e-2, steps: int = 200):
        self.l2, self.steps = l2, steps

    def fit(self, x: np.ndarray, y: Sequence[int]) -> Logistic:
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        X = torch.tensor((x - self.mu) / self.sd, dtype=torch.float32)
        Y = torch.tensor(list(y), dtype=torch.float32)
        self.w = torch.zeros(X.shape[1], requires_grad=True)
        self.b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([self.w, self.b], max_iter=self.steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ self.w + self.b, Y)
            loss = loss + self.l2 * (self.w ** 2).sum() / 2
            loss.backward()
            return loss

        opt.step(closure)
        return self

    def predict(self, x: np.ndarray) -> list[float]:
        X = torch.tensor((x - self.mu) / self.sd, dtype=torch.float32)
        with torch.no_grad():
            return torch.sigmoid(X @ self.w + self.b).tolist()

    def linear(self) -> tuple[np.ndarray, float]:
        """(w, b) on the raw features: sigmoid(x @ w + b) is `predict(x)`."""
        w = self.w.detach().numpy() / self.sd
        return w, float(self.b.detach()) - float(w @ self.mu)
