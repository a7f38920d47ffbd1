"""`TrainConfig`: every knob of the two training stages. `Field(description=)` is the only documentation of a field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from safecls.config import StrictModel
from safecls.model.safecls_model import LoraOptions

# L_cls weights of the paper: pretrain L_lm + 0.01 L_cls; sft L_sft + 0.1 L_cls (0.01 was their other setting).
DEFAULT_LAMBDA_CLS = {"pretrain": 0.01, "sft": 0.1}

# Fields that shape the trajectory: a resumed run must match the checkpoint's values on all of them.
TRAJECTORY_FIELDS = ("model", "stage", "with_cls", "lambda_cls", "train_file", "max_length", "lora", "lr", "head_lr",
                     "weight_decay", "warmup_steps", "schedule", "batch_size", "grad_accum", "group_by_length",
                     "max_steps", "seed", "max_grad_norm", "dtype", "attention")


class TrainConfig(StrictModel):
    model: str = Field("base", description="Where training starts: 'base' (the embedded SmolLM2-135M-Instruct), a "
                                           "local HF folder or hub id, or a safecls checkpoint to continue ('default': "
                                           "the shipped defended model; or e.g. the sft stage from a pretrain-stage "
                                           "run's final/: its head, [CLS] row and adapters train on).")
    stage: Literal["pretrain", "sft"] = Field("sft", description="pretrain: L_lm + λ·L_cls over all tokens ([CLS] sees "
                                                                 "everything, nobody sees [CLS]); sft: L_sft on response "
                                                                 "tokens + λ·L_cls ([CLS] sees the query only).")
    with_cls: bool = Field(True, description="False: plain SFT/LM training on the same data and code path, no [CLS] in "
                                             "the batch and no head loss (the same-data baseline). Needs lambda_cls: 0.")
    lambda_cls: float = Field(None, ge=0, validate_default=False,  # type: ignore[arg-type]
                              description="Weight of the head's cross-entropy. Default per stage, the paper's: 0.01 "
                                          "pretrain, 0.1 sft (0 with with_cls: false).")
    train_file: str = Field(description="JSONL training records: {'messages': [...user..., assistant], 'label': 0|1, "
                                        "'source'} (sft or pretrain) or {'text', 'label'} (pretrain only).")
    eval_file: str | None = Field(None, description="Held-out JSONL in the same format; evaluated at the end (and every "
                                                    "eval_every steps): LM loss, head loss and head accuracy.")
    max_length: int = Field(512, gt=8, description="Tokens per example including [CLS]. Longer responses/texts are cut "
                                                   "at the end; an example whose prompt alone does not fit is dropped "
                                                   "(logged).")
    lora: LoraOptions | None = Field(None, description="LoRA adapters (the head and the [CLS] embedding row train too); "
                                                       "null: full fine-tune.")
    lr: float = Field(2e-5, gt=0, description="Peak learning rate of the language model parameters (LoRA or full).")
    head_lr: float = Field(1e-3, gt=0, description="Peak learning rate of the classification head.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay, applied to matrices only (not to biases or "
                                                       "norm weights).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm to this; null: no clipping.")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup from 0 to the peak learning rates, in optimizer steps.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warmup: cosine or "
                                                                                    "linear to 0 at max_steps, or constant.")
    batch_size: int = Field(8, gt=0, description="Examples per micro-batch per process. Global batch = batch_size x "
                                                 "grad_accum x number of processes.")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step (per process).")
    group_by_length: int | None = Field(None, gt=1, description="Sort each run of group_by_length x batch_size "
                                                                "shuffled examples by length, so a micro-batch pads "
                                                                "little (about 2-3x faster on CPU for mixed lengths); "
                                                                "null: plain shuffling.")
    max_steps: int = Field(gt=0, description="Optimizer steps. The data is cycled in a fresh seeded order per epoch.")
    seed: int = Field(0, description="Seeds the head init, the data order and every RNG (python, numpy, torch).")
    output_dir: str = Field(description="Run folder: checkpoint-<step>/, final/, metrics.jsonl, config.yaml.")
    checkpoint_every: int | None = Field(None, gt=0, description="Save a resumable checkpoint every N optimizer steps; "
                                                                 "null: only the final model.")
    keep_checkpoints: int | None = Field(2, gt=0, description="Keep only the newest N checkpoints; null: keep all.")
    resume: bool = Field(False, description="Continue from the newest complete checkpoint in output_dir (start fresh "
                                            "if there is none). Without it, an output_dir holding checkpoints is an "
                                            "error.")
    log_every: int = Field(10, gt=0, description="Append a metrics.jsonl record every N optimizer steps.")
    eval_every: int | None = Field(None, gt=0, description="Evaluate eval_file every N steps; null: at the end only.")
    dtype: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: fp32 on CPU (faster on few cores), bf16 "
                                                                       "mixed precision on CUDA. bf16 keeps fp32 "
                                                                       "master weights.")
    attention: Literal["dense", "flex"] = Field("dense", description="dense: additive routing masks (any device). "
                                                                     "flex: FlexAttention block masks (CUDA only: no "
                                                                     "block-sparse backward on CPU; Llama-family "
                                                                     "models, not GPT-2).")

    @model_validator(mode="before")
    @classmethod
    def _stage_default_lambda(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("lambda_cls") is None:
            stage = data.get("stage", "sft")
            with_cls = data.get("with_cls", True)
            data = {**data, "lambda_cls": DEFAULT_LAMBDA_CLS.get(stage, 0.0) if with_cls is not False else 0.0}
        return data

    @model_validator(mode="after")
    def _checks(self) -> TrainConfig:
        if not self.with_cls and self.lambda_cls != 0:
            raise ValueError(f"with_cls: false trains without a [CLS] token, so lambda_cls must be 0 "
                             f"(got {self.lambda_cls}). Fix: set lambda_cls: 0, or with_cls: true")
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps}). "
                             "Fix: lower warmup_steps")
        return self

    @property
    def trains_head(self) -> bool:
        return self.with_cls
