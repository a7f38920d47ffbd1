"""`EvalConfig`: the evaluation matrix (models x attacks x benchmarks x judges) that `run_eval` runs.

    name: smoke
    seed: 0
    models:
      - {name: base, path: base}                          # the embedded SmolLM2, undefended
      - {name: safecls, path: default, decode: {policy: medium, schedule: annealing}}   # the shipped model
      - {name: mine, path: runs/recipe/sft/final}         # a checkpoint folder
      - {name: other, path: "plain:/models/llama"}         # any plain HF causal LM
    attacks:
      - {name: direct}
      - {name: prefill, params: {num_tokens: [20]}}
      - {name: decoding, label: decoding-hot, params: {grid: {temperatures: [0.7, 1.0]}}}
    benchmarks:
      - {name: advbench, path: ../shared/data, limit: 50}
      - {name: xstest, path: ../shared/data}               # utility / over-refusal sets: only the direct attack
      - {name: prompts, label: mine, path: my_prompts.jsonl}  # any JSONL of prompts
    judges: [{name: minilm}, {name: keyword}, {name: safecls-head, params: {checkpoint: default}}]

Names are checked against the registries (BENCHMARKS, JUDGES, ATTACKS) when the run starts, so an unknown name
lists the valid ones before any model loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from safecls.attacks.target import EndpointHelper
from safecls.config import StrictModel
from safecls.inference.config import DecodeConfig
from safecls.model.resolve import MODEL_HELP

# Sets that measure utility or over-refusal, not attack success: attacked only by "direct" unless a benchmark entry
# names its attacks (a prefill "Sure, here is" on a maths question measures nothing).
CLEAN_ONLY = frozenset({"gsm8k", "mt-bench", "xstest"})


class ModelSpec(StrictModel):
    name: str = Field(min_length=1, pattern=r"^[^|]+$", description="Label in records and tables (no '|').")
    path: str = Field("default", description=f"What to evaluate: {MODEL_HELP} (model/resolve.py).")
    decode: DecodeConfig = Field(default_factory=lambda: DecodeConfig(max_new_tokens=64),
                                 description="Decode settings of this model: the defence (policy, schedule, r2, r3, "
                                             "tau, threshold) and the defaults each attack starts from.")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    samples: int = Field(1, gt=0, description="Generations per (attack variant, item); sample s uses seed + s.")


class AttackSpec(StrictModel):
    name: str = Field(min_length=1, description="An ATTACKS name, or one of the runner's built-ins "
                                                "(direct, prefill, decoding) when the registry lacks it.")
    label: str | None = Field(None, pattern=r"^[^|]+$",
                              description="Label in records and tables; default: name. Two entries of one attack "
                                          "with different params need different labels.")
    params: dict[str, Any] = Field(default_factory=dict, description="The attack's config (its config_cls fields). "
                                                                     "A 'decode' section overrides the model's.")
    helper: str | EndpointHelper | None = Field(
        None, description="The model that writes the attack's prompts for every target: PAP's paraphraser, AutoDAN's "
        "mutator; a local model (forms as a model path) or an endpoint {base_url, model, api_key_env}. None: each target "
        "writes its own, so a defended target refuses to attack itself and targets are not compared on the same "
        "prompts.")

    @property
    def helper_key(self) -> str | None:
        return self.helper.key if isinstance(self.helper, EndpointHelper) else self.helper

    @property
    def key(self) -> str:
        return self.label or self.name


class BenchmarkSpec(StrictModel):
    name: str = Field(min_length=1, description="A BENCHMARKS name.")
    label: str | None = Field(None, pattern=r"^[^|]+$", description="Name of this set in records and tables; default: "
                                                                  "name. Needed for two sets of one loader (prompts).")
    path: str | None = Field(None, description="File, folder or data root; None: download the canonical copy.")
    limit: int | None = Field(None, ge=0, description="A seeded random subset of this many items.")
    seed: int = 0
    categories: list[str] | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="Loader options, e.g. fix_targets: false.")
    attacks: list[str] | None = Field(None, description="Attack labels to run here; None: all, except 'direct' only "
                                                        f"for {', '.join(sorted(CLEAN_ONLY))}.")

    @property
    def key(self) -> str:
        return self.label or self.name


class JudgeSpec(StrictModel):
    name: str = Field(min_length=1, description="A JUDGES name.")
    params: dict[str, Any] = Field(default_factory=dict, description="Constructor arguments of the judge.")


class ProbingSpec(StrictModel):
    """Entropy and sharpness of the top-K next-token distribution per response position (see eval/probing.py)."""

    benchmark: str | None = Field(None, description="Benchmark entry whose items are probed; None: the first one.")
    limit: int = Field(20, gt=0, description="Items probed per model and setting.")
    settings: list[Literal["direct", "prefill", "nested"]] = Field(default_factory=lambda: ["direct", "prefill", "nested"])
    top_k: int = Field(10, gt=1)
    positions: int = Field(16, gt=0, description="First N response tokens.")
    nest: str = Field("story", description="Nesting template of the nested setting (attacks/nested.py NEST_TEMPLATES).")


class EvalConfig(StrictModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="Run name: the run folder's name.")
    output_dir: str = Field("runs", description="Parent of the run folder (runs/<name>/).")
    seed: int = Field(0, description="Base seed of every sampled decode (model samples add their index).")
    batch_size: int = Field(16, gt=0, description="Prompts per engine call.")
    models: list[ModelSpec] = Field(min_length=1)
    attacks: list[AttackSpec] = Field(default_factory=lambda: [AttackSpec(name="direct")], min_length=1)
    benchmarks: list[BenchmarkSpec] = Field(min_length=1)
    judges: list[JudgeSpec] = Field(default_factory=lambda: [JudgeSpec(name="keyword")], min_length=1)
    probing: ProbingSpec | None = Field(None, description="None: no probing curves.")
    asr_per: Literal["item", "record"] = Field("item", description="item: an item is broken when any of its variants "
                                                                   "or samples complies; record: every generation counts.")
    plots: bool = Field(True, description="False: the report has tables only (no matplotlib).")

    @model_validator(mode="after")
    def _unique(self) -> Self:
        for what, names in (("models", [m.name for m in self.models]), ("attacks", [a.key for a in self.attacks]),
                            ("judges", [j.name for j in self.judges]),
                            ("benchmarks", [b.key for b in self.benchmarks])):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                hint = "; give them different labels" if what == "attacks" else ""
                raise ValueError(f"{what}: duplicate name(s) {dup}{hint}")
        labels = {a.key for a in self.attacks} | {"direct"}
        for b in self.benchmarks:
            unknown = sorted(set(b.attacks or ()) - labels)
            if unknown:
                raise ValueError(f"benchmarks.{b.key}.attacks: {unknown} not among the attacks; "
                                 f"valid: {', '.join(sorted(labels))}")
        if self.probing is not None and self.probing.benchmark is not None:
            if self.probing.benchmark not in {b.key for b in self.benchmarks}:
                raise ValueError(f"probing.benchmark: {self.probing.benchmark!r} is not one of the benchmarks")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def attacks_for(self, bench: BenchmarkSpec) -> list[AttackSpec]:
        """The attacks that run on `bench` (a 'direct' entry is made up when a clean-only set needs it)."""
        by_key = {a.key: a for a in self.attacks}
        wanted = bench.attacks if bench.attacks is not None else (
            ["direct"] if bench.name in CLEAN_ONLY else list(by_key))
        return [by_key.get(k, AttackSpec(name="direct")) for k in wanted]
