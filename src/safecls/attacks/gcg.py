"""Greedy Coordinate Gradient (Zou et al. 2023), plain and adaptive (against the safety head).

    result = gcg.run(model, tokenizer, [{"role": "user", "content": "Explain how to ... {optim_str}"}],
                     "Sure, here is how to ...", GCGConfig(num_steps=250, search_width=512))
    result.best_suffix, result.best_loss, result.losses

`model` is a plain HF causal LM or a SafeClsModel. Against a SafeClsModel, `head_weight > 0` adds the head's
-log P(benign) (read over the prompt, as the engine reads it first) to the target loss: the adaptive attack.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Self

import torch
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from safecls.attacks.base import ATTACKS, Attack, AttackItem, AttackRecord, make_record, record_key, user_turn
from safecls.attacks.gcg_objective import Objective, PlainObjective, SafeClsObjective, Scores
from safecls.attacks.optim_prompt import build, disallowed_mask
from safecls.attacks.progress import log_search_step
from safecls.config import StrictModel
from safecls.errors import ConfigError
from safecls.inference.config import DecodeConfig
from safecls.model.safecls_model import SafeClsModel

logger = logging.getLogger(__name__)


class GCGConfig(StrictModel):
    """Defaults follow nanoGCG 0.3.0 (itself following the paper), so results compare."""

    num_steps: int = Field(250, gt=0, description="Optimisation steps.")
    optim_str_init: str = Field("x x x x x x x x x x x x x x x x x x x x", min_length=1,
                                description="Initial suffix; its token count is the suffix length.")
    search_width: int = Field(512, gt=0, description="Candidate suffixes scored per step.")
    batch_size: int | None = Field(None, gt=0, description="Candidates per forward; None: the whole width (halves on OOM).")
    topk: int = Field(256, gt=0, description="Token choices per position, from the most negative gradients.")
    n_replace: int = Field(1, gt=0, description="Positions changed per candidate.")
    buffer_size: int = Field(0, ge=0, description="Best suffixes kept; each step starts from the best (0 means 1).")
    use_prefix_cache: bool = Field(True, description="Cache the tokens before the suffix once (they never change).")
    allow_non_ascii: bool = Field(False, description="Allow tokens that do not decode to printable ASCII.")
    filter_ids: bool = Field(True, description="Drop candidates whose ids change when the filled prompt is tokenized "
                             "(the target would read other tokens than those optimised).")
    early_stop: bool = Field(False, description="Stop once greedy decoding emits the target (and, adaptive, the head says benign).")
    head_weight: float = Field(0.0, ge=0, description="> 0: adaptive GCG, adds head_weight * -log P(benign) of the [CLS] head.")
    seed: int | None = Field(None, description="Seeds sampling; also switches on deterministic algorithms during the run.")


@dataclass(slots=True)
class GCGResult:
    best_suffix: str  # the decoded optimised tokens, with the space before the placeholder that they own
    best_loss: float  # the objective (target CE, plus the head term when adaptive)
    losses: list[float]  # best candidate's objective at each step, for the report's curve
    suffixes: list[str]  # best candidate at each step
    best_target_loss: float = float("nan")
    best_p_benign: float | None = None  # the head's P(benign) for best_suffix (SafeClsModel only)
    p_benign: list[float] = field(default_factory=list)  # per step (SafeClsModel only)
    initial_loss: float = float("nan")
    initial_target_loss: float = float("nan")
    initial_p_benign: float | None = None
    stopped_early: bool = False
    adversarial: list[dict[str, str]] | str | None = None  # the prompt with best_suffix filled in, for the target


@contextlib.contextmanager
def _determinism(seed: int | None) -> Iterator[torch.Generator | None]:
    if seed is None:
        yield None
        return
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(before)


def sample_candidates(ids: torch.Tensor, grad: torch.Tensor, bad: torch.Tensor, *, width: int, topk: int,
                      n_replace: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) suffix and its (n, V) gradient -> (width, n) candidates: each changes `n_replace` random positions
    to random picks among that position's `topk` most promising (most negative gradient) allowed tokens."""
    n = ids.shape[0]
    g = grad.detach().float().cpu().clone()
    g[:, bad] = float("inf")
    k = min(topk, int((~bad).sum()))
    top = (-g).topk(k, dim=1).indices  # (n, k)
    n_replace = min(n_replace, n)
    pos = torch.rand(width, n, generator=generator).argsort(dim=1)[:, :n_replace]  # distinct positions per row
    pick = torch.randint(0, k, (width, n_replace), generator=generator)
    vals = top[pos, pick]
    return ids.cpu()[None].repeat(width, 1).scatter(1, pos, vals)


class _Buffer:
    """The best `size` suffixes seen, by objective."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self.items: list[tuple[float, torch.Tensor]] = []

    def add(self, loss: float, ids: torch.Tensor) -> None:
        if len(self.items) < self.size:
            self.items.append((loss, ids))
        elif loss < self.items[-1][0]:
            self.items[-1] = (loss, ids)
        self.items.sort(key=lambda x: x[0])

    @property
    def best(self) -> torch.Tensor:
        return self.items[0][1]


def make_objective(model: Any, tokenizer: Any, messages: Any, target: str, config: GCGConfig) -> tuple[Objective, Any, Any]:
    if isinstance(model, SafeClsModel):
        tokenizer = model.tokenizer
        op = build(tokenizer, messages, target)
        return SafeClsObjective(model, op, head_weight=config.head_weight,
                                use_prefix_cache=config.use_prefix_cache), tokenizer, op
    if config.head_weight > 0:
        raise ConfigError(f"head_weight: adaptive GCG needs a SafeClsModel, got a plain {type(model).__name__} "
                          f"(head_weight={config.head_weight}). Fix: set head_weight: 0 or attack a safecls model")
    if tokenizer is None:
        raise ConfigError("tokenizer: a plain HF model needs its tokenizer passed to gcg.run()")
    op = build(tokenizer, messages, target)
    return PlainObjective(model, op, use_prefix_cache=config.use_prefix_cache), tokenizer, op


def run(model: Any, tokenizer: Any, messages: str | list[dict[str, str]], target: str,
        config: GCGConfig | None = None) -> GCGResult:
    """Optimise `{optim_str}` in `messages` so that the reply starts with `target`.

    Gradients are (n_optim, V); candidates are (search_width, n_optim). Candidates never hold special or added
    tokens (the safety [CLS] included) or, by default, non-ASCII ones.

    Raises:
        TemplateError: no message holds `{optim_str}` (or the tokenizer has no chat template).
        DataError: `target` does not re-tokenize stably.
        ConfigError: `head_weight > 0` on a plain model, or the initial suffix holds disallowed tokens.
    """
    cfg = config or GCGConfig()
    objective, tok, op = make_objective(model, tokenizer, messages, target, cfg)
    extra = (model.cls_token_id,) if isinstance(model, SafeClsModel) else ()
    bad = disallowed_mask(tok, objective.vocab_size, extra, ascii_only=not cfg.allow_non_ascii)
    init = torch.tensor(op.ids_of(tok, cfg.optim_str_init), dtype=torch.long)
    if not len(init) or bool(bad[init].any()) or not bool(op.in_context(tok, init[None])[0]):
        raise ConfigError(f"optim_str_init: {cfg.optim_str_init!r} is empty, holds disallowed tokens or merges with the "
                          "prompt around it. Fix: use plain ASCII words such as 'x x x x x'")
    dev = objective.device
    with _determinism(cfg.seed) as gen:
        s0 = objective.scores(init[None].to(dev), 1)
        buffer = _Buffer(cfg.buffer_size)
        buffer.add(float(s0.total[0]), init)
        res = GCGResult(best_suffix=tok.decode(init), best_loss=float(s0.total[0]), losses=[], suffixes=[],
                        best_target_loss=float(s0.target[0]), initial_loss=float(s0.total[0]),
                        initial_target_loss=float(s0.target[0]),
                        best_p_benign=_p(s0, 0), initial_p_benign=_p(s0, 0))
        for step in tqdm(range(cfg.num_steps), desc="GCG", unit="step", disable=None):
            ids = buffer.best
            grad = objective.grad(ids.to(dev))
            cands = sample_candidates(ids, grad, bad, width=cfg.search_width, topk=cfg.topk, n_replace=cfg.n_replace,
                                      generator=gen)
            if cfg.filter_ids:
                cands = cands[op.in_context(tok, cands)]
            cands = torch.unique(cands, dim=0)
            if not len(cands):
                logger.warning("GCG step %d: every candidate changed under re-tokenization; keeping the suffix", step)
                res.losses.append(buffer.items[0][0])
                res.suffixes.append(tok.decode(ids))
                continue
            s = objective.scores(cands.to(dev), cfg.batch_size)
            i = int(s.total.argmin())
            loss = float(s.total[i])
            res.losses.append(loss)
            res.suffixes.append(tok.decode(cands[i]))
            if s.p_benign is not None:
                res.p_benign.append(float(s.p_benign[i]))
            buffer.add(loss, cands[i])
            if loss < res.best_loss:
                res.best_loss, res.best_suffix = loss, res.suffixes[-1]
                res.best_target_loss, res.best_p_benign = float(s.target[i]), _p(s, i)
            logger.debug("GCG step %d: loss %.4f target %.4f suffix %r", step, loss, float(s.target[i]), res.suffixes[-1])
            log_search_step("GCG", step, cfg.num_steps, res.best_loss)
            if cfg.early_stop and bool(s.match[i]) and (s.p_benign is None or cfg.head_weight == 0 or float(s.p_benign[i]) > 0.5):
                res.stopped_early = True
                res.best_loss, res.best_suffix = loss, res.suffixes[-1]
                res.best_target_loss, res.best_p_benign = float(s.target[i]), _p(s, i)
                break
    res.adversarial = op.fill(res.best_suffix)
    return res


def _p(s: Scores, i: int) -> float | None:
    return None if s.p_benign is None else float(s.p_benign[i])


# ---- the registered attack ---------------------------------------------------------------------------------------


class GCGAttackConfig(StrictModel):
    gcg: GCGConfig = Field(default_factory=GCGConfig)
    decode: DecodeConfig = Field(default_factory=lambda: DecodeConfig(max_new_tokens=128),
                                 description="How the target answers the optimised prompt.")
    template: str = Field("{prompt} {optim_str}", description="The user turn; must hold {prompt} and {optim_str}.")
    system_prompt: str | None = Field(None, description="A system turn before the user turn (None: none).")
    default_target: str = Field("Sure, here is", min_length=1, description="Target for items that have none.")

    @model_validator(mode="after")
    def _template(self) -> Self:
        missing = [p for p in ("{prompt}", "{optim_str}") if p not in self.template]
        if missing:
            raise ValueError(f"template must hold {' and '.join(missing)} (got {self.template!r})")
        return self


@ATTACKS.register("gcg")
class GCGAttack(Attack):
    """GCG suffix per request on the local model (adaptive: gcg.head_weight > 0); the target answers it.

    The record keeps the suffix and the loss curve."""

    config_cls = GCGAttackConfig
    black_box = False

    def attack(self, target: Any, items: list[AttackItem], config: GCGAttackConfig, done: set[str]) -> Iterator[AttackRecord]:
        model = target.safecls_model or target.causal_lm
        for item in items:
            if record_key(self.name, item.id) in done:
                continue
            messages = user_turn(config.template.replace("{prompt}", item.prompt), config.system_prompt)
            goal = item.target or config.default_target
            res = run(model, target.tokenizer, messages, goal, config.gcg)
            adv = res.adversarial
            gen = target.generate([adv], config.decode)[0]
            yield make_record(self.name, item, "", adv, gen, seed=config.gcg.seed,
                              parameters={"gcg": config.gcg.model_dump(), "decode": config.decode.model_dump(),
                                          "target": goal},
                              extra={"suffix": res.best_suffix, "best_loss": res.best_loss, "losses": res.losses,
                                     "best_target_loss": res.best_target_loss, "best_p_benign": res.best_p_benign,
                                     "initial_loss": res.initial_loss, "initial_target_loss": res.initial_target_loss,
                                     "initial_p_benign": res.initial_p_benign,
                                     "stopped_early": res.stopped_early})
