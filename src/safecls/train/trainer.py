"""`train(cfg) -> TrainResult`: one loop for both stages, full or LoRA, single process or `accelerate launch`.

Order of work: validate the config and read every record (errors name file and line), check the resume point,
then load the model. Each optimizer step consumes `batch_size x grad_accum x processes` examples from a seeded
order; micro-batch a of process r is chunk `a * processes + r`, so 2 processes x grad_accum 1 see exactly the
chunks that 1 process x grad_accum 2 sees. Only the main process writes files.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn
from tqdm.auto import tqdm

from safecls.config import dump_config
from safecls.errors import ConfigError
from safecls.io import ResultLog, atomic_write
from safecls.model.encoding import Batch
from safecls.model.routing import Kind
from safecls.train.config import TrainConfig
from safecls.train.dataset import ExampleOrder, Item, fingerprint, make_batch, read_records, tokenize
from safecls.train.state import find_resume_point, load_checkpoint, rng_state, save_checkpoint, set_rng_state

logger = logging.getLogger(__name__)


class StepMetrics(BaseModel):
    """One metrics.jsonl line: means over the optimizer steps since the previous line, all processes."""

    step: int
    epoch: int
    loss: float
    lm: float
    cls: float | None
    head_acc: float | None
    lr: float
    head_lr: float
    grad_norm: float | None
    tokens_per_s: float
    tokens: int
    elapsed_s: float

    @property
    def key(self) -> str:
        return str(self.step)


@dataclass(slots=True)
class TrainResult:
    output_dir: Path
    final_dir: Path
    steps: int
    resumed_from: int | None
    losses: list[float] = field(default_factory=list)  # global mean loss per optimizer step run in this call
    metrics: list[StepMetrics] = field(default_factory=list)  # the metrics.jsonl lines written in this call
    eval: dict[str, float] | None = None  # loss, lm, cls, head_acc on eval_file at the end
    tokens: int = 0
    wall_s: float = 0.0
    model: Any = None  # the trained SafeClsModel (unwrapped; under FSDP a full copy on the main process, None elsewhere)


class _Objective(nn.Module):
    """What DDP/FSDP wrap: its forward is `SafeClsModel.losses`, plus the head's logits for accuracy."""

    def __init__(self, model: nn.Module, stage: str, lambda_cls: float):
        super().__init__()
        self.model, self.stage, self.lambda_cls = model, stage, lambda_cls

    def forward(self, input_ids: torch.Tensor, kinds: torch.Tensor, labels: torch.Tensor,
                untargeted: torch.Tensor | None = None) -> dict[str, Any]:
        tapped: list[torch.Tensor] = []
        hook = self.model.head.register_forward_hook(lambda _m, _i, out: tapped.append(out.detach()))
        try:
            out = self.model.losses(Batch(input_ids, kinds, labels, untargeted), self.stage, self.lambda_cls)
        finally:
            hook.remove()
        out["cls_logits"] = tapped[-1] if tapped else None
        return out


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak learning rates after `step` optimizer steps: linear warmup, then the schedule."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    if cfg.schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _check_attention(cfg: TrainConfig) -> None:
    if cfg.attention == "flex" and not torch.cuda.is_available():
        raise ConfigError("attention: flex needs a CUDA device (PyTorch's FlexAttention has no backward pass on CPU); "
                          "this machine has none. Fix: set attention: dense (the same routing as additive masks)")


def _mixed_precision(cfg: TrainConfig) -> str:
    cuda = torch.cuda.is_available()
    if cfg.dtype == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if cfg.dtype == "bf16" and not cuda:
        logger.warning("dtype: bf16 on CPU is usually slower than fp32 on few cores")
    return "bf16" if cfg.dtype == "bf16" else "no"


def _continue_from(cfg: TrainConfig):
    """A safecls checkpoint as the starting point (an sft stage after a pretrain stage): its head, [CLS] row and
    weights or LoRA adapters train on; nothing is re-initialised."""
    from safecls.model import SafeClsModel
    from safecls.model.checkpoint import read_config
    from safecls.model.shipped import is_shipped, require_shipped

    start = require_shipped() if is_shipped(cfg.model) else cfg.model
    saved = read_config(start)
    if (saved["format"] == "lora") != (cfg.lora is not None):
        have = "LoRA adapters" if saved["format"] == "lora" else "full weights"
        raise ConfigError(f"model: {cfg.model} holds {have}, but lora is {'unset' if cfg.lora is None else 'set'}. "
                          "Fix: continue a LoRA checkpoint with the same lora options, a full one with lora: null")
    model = SafeClsModel.from_pretrained(start, trainable=True)
    if cfg.lora is not None:
        peft_cfg = model.base.peft_config["default"]
        if (peft_cfg.r, peft_cfg.lora_alpha) != (cfg.lora.r, cfg.lora.alpha):
            raise ConfigError(f"lora: r={cfg.lora.r}, alpha={cfg.lora.alpha}, but {cfg.model} was trained with "
                              f"r={peft_cfg.r}, alpha={peft_cfg.lora_alpha}. Fix: set lora.r and lora.alpha to match")
    model.stage = cfg.stage
    return model


def _build_model(cfg: TrainConfig):
    from safecls.model import SafeClsModel, load_base
    from safecls.model.checkpoint import is_checkpoint
    from safecls.model.shipped import is_shipped

    if is_shipped(cfg.model) or is_checkpoint(cfg.model):
        model = _continue_from(cfg)
    else:
        model = SafeClsModel.from_base(*load_base(cfg.model), lora=cfg.lora, stage=cfg.stage, seed=cfg.seed)
    model.use_attention(cfg.attention)
    model.with_cls = cfg.with_cls
    if not cfg.with_cls:
        # plain SFT: no [CLS] ever appears, so the head and the [CLS] row get no gradient; freeze them
        model.head.requires_grad_(False)
        for n, p in model.named_parameters():
            if "trainable_tokens" in n:
                p.requires_grad_(False)
    model.train()
    return model


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((n.startswith("head."), p.ndim >= 2), []).append(p)
    params = [{"params": ps, "lr": cfg.head_lr if head else cfg.lr, "weight_decay": cfg.weight_decay if matrix else 0.0,
               "is_head": head}
              for (head, matrix), ps in sorted(groups.items())]
    return torch.optim.AdamW(params, lr=cfg.lr)


def _evaluate(objective: nn.Module, model: Any, items: list[Item], cfg: TrainConfig, device: Any) -> dict[str, float]:
    """Mean LM loss, head loss and head accuracy over `items` (eval mode, no dropout). Every process runs it through
    the prepared objective (FSDP forwards are collective); each sees all items, so all get the same numbers."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64)  # n, lm*n, cls*n, correct, loss*n
    with torch.no_grad():
        for i in range(0, len(items), cfg.batch_size):
            chunk = items[i:i + cfg.batch_size]
            b = make_batch(chunk, model.cls_token_id, model.tokenizer.pad_token_id, cfg.with_cls).to(device)
            out = objective(b.input_ids, b.kinds, b.labels, b.untargeted)
            n = len(chunk)
            totals[0] += n
            totals[1] += out["lm"].item() * n
            totals[4] += out["loss"].item() * n
            if "cls" in out:
                totals[2] += out["cls"].item() * n
                totals[3] += (out["cls_logits"].argmax(-1) == b.labels).sum().item()
    model.train(was_training)
    n = totals[0].item()
    res = {"loss": totals[4].item() / n, "lm": totals[1].item() / n, "n": n}
    if cfg.with_cls:
        res.update(cls=totals[2].item() / n, head_acc=totals[3].item() / n)
    return res


def _check_distributed(accelerator: Any, cfg: TrainConfig) -> None:
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if sharded and (cfg.checkpoint_every or cfg.resume):
        raise ConfigError(f"checkpoint_every/resume under {accelerator.distributed_type.value}: resumable checkpoints "
                          "need the optimizer state of every process, which this trainer saves for single-process and "
                          "DDP runs only. Fix: set checkpoint_every: null and resume: false (final/ is still saved), "
                          "or train with DDP")


def _final_model(accelerator: Any, objective: nn.Module, model: Any, cfg: TrainConfig) -> Any:
    """The trained model with full weights on the main process (None elsewhere under FSDP)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return model
    state = accelerator.get_state_dict(objective)  # collective; full tensors on the main process only
    if not accelerator.is_main_process:
        return None
    full = _build_model(cfg)
    full.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    return full


def train(cfg: TrainConfig) -> TrainResult:
    """Run the configured stage; returns losses, metrics and the final model folder (`output_dir/final`).

    Raises:
        DataError: a bad record in train_file/eval_file (file and line named), before any model loads.
        ConfigError: flex attention without CUDA, or a resume that does not match its checkpoint.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    t_start = time.perf_counter()
    records = read_records(cfg.train_file, cfg.stage)
    eval_records = read_records(cfg.eval_file, cfg.stage) if cfg.eval_file else None
    sha = fingerprint(cfg.train_file)
    point = find_resume_point(cfg, sha)
    _check_attention(cfg)
    # cpu=True without CUDA: under torchrun / `accelerate launch --multi_gpu` this selects gloo (MULTI_CPU)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=_mixed_precision(cfg),
                              cpu=not torch.cuda.is_available())
    _check_distributed(accelerator, cfg)
    main, world = accelerator.is_main_process, accelerator.num_processes
    out_dir = Path(cfg.output_dir)

    set_seed(cfg.seed)
    model = _build_model(cfg)
    items = tokenize(records, model.tokenizer, cfg.max_length)
    eval_items = tokenize(eval_records, model.tokenizer, cfg.max_length) if eval_records else None
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    lengths = [len(it.enc) for it in items]
    group = cfg.batch_size * cfg.group_by_length if cfg.group_by_length else 1
    order = ExampleOrder(len(items), cfg.seed, lengths=lengths, group=group)
    start = 0
    if point is not None:
        state = load_checkpoint(point, model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        order = ExampleOrder.from_state(state["order"], lengths=lengths)
        set_rng_state(state["rng"])
        start = point.step
        logger.info("resumed from %s (step %d)", point.directory, start)

    objective = _Objective(model, cfg.stage, cfg.lambda_cls)
    if accelerator.state.deepspeed_plugin is not None:  # no dataloader to infer "auto" from
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
    # the scheduler stays unprepared: accelerate would step it once per process
    objective, optimizer = accelerator.prepare(objective, optimizer)
    log = ResultLog(out_dir / "metrics.jsonl", StepMetrics)
    if main:
        atomic_write(out_dir / "config.yaml", dump_config(cfg))
        kept = [r for r in log.records() if r.step <= start]  # a killed run may have logged past its checkpoint
        atomic_write(log.path, "".join(r.model_dump_json() + "\n" for r in kept))

    result = TrainResult(out_dir, out_dir / "final", start, point.step if point else None)
    pad_id, cls_id, bs = model.tokenizer.pad_token_id, model.cls_token_id, cfg.batch_size
    trainable = [p for p in objective.parameters() if p.requires_grad]
    window = torch.zeros(6, dtype=torch.float64)  # steps, loss, lm, cls, correct, examples (summed over processes)
    win_tokens, win_time = 0, 0.0
    bar = tqdm(total=cfg.max_steps, initial=start, desc=f"train ({cfg.stage})", unit="step",
               disable=None if main else True)
    for step in range(start + 1, cfg.max_steps + 1):
        t0 = time.perf_counter()
        idx = order.take(bs * cfg.grad_accum * world)
        sums, grad_norm = _optimizer_step(accelerator, objective, optimizer, trainable, items, idx, cfg, cls_id, pad_id)
        scheduler.step()
        sums = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
        loss = sums[0].item() / world
        result.losses.append(loss)
        window += torch.tensor([1.0, sums[0].item() / world, sums[1].item() / world, sums[2].item() / world,
                                sums[3].item(), sums[4].item()], dtype=torch.float64)
        win_tokens += int(sums[5])
        win_time += time.perf_counter() - t0
        result.tokens += int(sums[5])
        result.steps = step
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            n = window[0].item()
            rec = StepMetrics(step=step, epoch=order.epoch, loss=window[1].item() / n, lm=window[2].item() / n,
                              cls=window[3].item() / n if cfg.with_cls else None,
                              head_acc=window[4].item() / window[5].item() if cfg.with_cls else None,
                              lr=_group_lr(optimizer, head=False), head_lr=_group_lr(optimizer, head=True),
                              grad_norm=grad_norm, tokens_per_s=win_tokens / max(win_time, 1e-9),
                              tokens=result.tokens,
                              elapsed_s=time.perf_counter() - t_start)
            result.metrics.append(rec)
            if main:
                log.append(rec)
            logger.info("step %d: loss %.4f lm %.4f cls %s acc %s", step, rec.loss, rec.lm, rec.cls, rec.head_acc)
            window.zero_()
            win_tokens, win_time = 0, 0.0
        if cfg.eval_every and eval_items and step % cfg.eval_every == 0 and step < cfg.max_steps:
            logger.info("step %d eval: %s", step, _evaluate(objective, model, eval_items, cfg, accelerator.device))
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
            _checkpoint(accelerator, out_dir, step, model, optimizer, scheduler, order, cfg, sha)
    bar.close()

    if eval_items:
        result.eval = _evaluate(objective, model, eval_items, cfg, accelerator.device)
        logger.info("eval: %s", result.eval)
        if main:
            atomic_write(out_dir / "eval.json", json.dumps({"step": result.steps, **result.eval}, indent=1) + "\n")
    accelerator.wait_for_everyone()
    final = _final_model(accelerator, objective, model, cfg)
    if main:
        final.save_pretrained(result.final_dir)
    accelerator.wait_for_everyone()
    result.wall_s = time.perf_counter() - t_start
    result.model = final.eval() if final is not None else None
    return result


def _optimizer_step(accelerator: Any, objective: nn.Module, optimizer: Any, trainable: list[nn.Parameter],
                    items: list[Item], idx: list[int], cfg: TrainConfig, cls_id: int,
                    pad_id: int) -> tuple[torch.Tensor, float | None]:
    """grad_accum micro-batches, then one optimizer step. Returns this process's sums (mean loss, mean lm, mean cls,
    correct head verdicts, examples, non-pad tokens) and the gradient norm before clipping (None: not clipped).
    Micro-batch a of process r is chunk a * processes + r of `idx`."""
    world, rank, bs = accelerator.num_processes, accelerator.process_index, cfg.batch_size
    sums, grad_norm = torch.zeros(6, dtype=torch.float64), None
    for a in range(cfg.grad_accum):
        chunk = idx[(a * world + rank) * bs:(a * world + rank + 1) * bs]
        b = make_batch([items[i] for i in chunk], cls_id, pad_id, cfg.with_cls).to(accelerator.device)
        with accelerator.accumulate(objective):  # skips the all-reduce and optimizer.step until the last micro-batch
            out = objective(b.input_ids, b.kinds, b.labels, b.untargeted)
            accelerator.backward(out["loss"])  # divides by grad_accum
            if accelerator.sync_gradients and cfg.max_grad_norm is not None:
                norm = accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)  # None under DeepSpeed (it clips)
                grad_norm = None if norm is None else float(norm)
            optimizer.step()
            optimizer.zero_grad()
        sums[0] += out["loss"].item() / cfg.grad_accum
        sums[1] += out["lm"].item() / cfg.grad_accum
        if "cls" in out:
            sums[2] += out["cls"].item() / cfg.grad_accum
            sums[3] += (out["cls_logits"].argmax(-1) == b.labels).sum().item()
        sums[4] += len(chunk)
        sums[5] += int((b.kinds != Kind.PAD).sum())
    return sums, grad_norm


def _group_lr(optimizer: Any, *, head: bool) -> float:
    lrs = [g["lr"] for g in optimizer.param_groups if g.get("is_head", False) == head]
    return lrs[0] if lrs else 0.0


def _checkpoint(accelerator: Any, out_dir: Path, step: int, model: Any, optimizer: Any, scheduler: Any,
                order: ExampleOrder, cfg: TrainConfig, sha: str) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "order": order.state_dict(), "rng": rng_state()}
        save_checkpoint(out_dir, step, model, state, cfg, sha, cfg.keep_checkpoints)
    accelerator.wait_for_everyone()
