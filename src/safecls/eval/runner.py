"""`run_eval(cfg) -> run_dir`: the evaluation matrix, resumable and shardable.

    cfg = load_config("configs/eval_smoke.yaml", EvalConfig)
    run_dir = run_eval(cfg)          # runs/<name>/{config.yaml, records.jsonl, metrics.json, report.md, report.html}

For every model x benchmark x attack (x sample) the attack runs through the decode engine (a LocalTarget), every
judge reads each (request, response) pair, and one `EvalRecord` per generation is appended to records.jsonl as soon as
its judges have spoken. Its key, `model|attack|benchmark|item id|variant#sample`, is stable, so a rerun skips the keys
already written and continues where a killed run stopped; it first adds the verdicts that earlier runs lack (a judge
that failed then, or one added to the config since) without regenerating anything. Under `accelerate launch` each process takes the items
with index % world_size == rank and writes records-rank<k>.jsonl; after a barrier rank 0 merges them into
records.jsonl and writes metrics.json (safecls.eval.summary), config.yaml and the report. Without accelerate (or a
single process) it is one process writing records.jsonl directly.

Attacks come from the ATTACKS registry (safecls.attacks; "direct" is no attack, the baseline row). A model's `decode` settings (the defence) are the base of
every attack config that has a `decode` section; the attack entry's own `decode` params override them.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from safecls.attacks.base import ATTACKS, Attack, AttackItem, AttackRecord
from safecls.config import dump_config, validate
from safecls.data.benchmarks import BENCHMARKS, BenchmarkItem, load_benchmark
from safecls.errors import ConfigError, DataError, UnknownNameError
from safecls.eval.config import AttackSpec, BenchmarkSpec, EvalConfig, ModelSpec
from safecls.eval.judges import JUDGES, Judge
from safecls.eval.run_records import DoneKeys, EvalRecord, judge_into, merge_logs, read_records, record_key, rejudge
from safecls.io import ResultLog, atomic_write, atomic_write_json
from safecls.model.resolve import BASE, PLAIN, check_model_ref

logger = logging.getLogger(__name__)

# Records are judged and written in batches, but no record waits for its batch longer than this, and a record that
# took this long to make is written at once: a search attack (GCG: minutes per record) would otherwise lose up to
# batch_size - 1 records to a kill, while fast attacks still fill whole batches.
FLUSH_AFTER_S = 60.0


# ---------------------------------------------------------------- names -> implementations


def load_attack_registry() -> None:
    importlib.import_module("safecls.attacks")  # the package imports every attack module, registering it



def make_attack(spec: AttackSpec, helper: Any = None) -> Attack:
    """The attack, with `helper` (a loaded Target for spec.helper) where it takes one. Raises UnknownNameError listing
    the valid names."""
    load_attack_registry()
    cls = ATTACKS.get(spec.name)
    return cls(**{cls.helper_arg: helper}) if helper is not None and cls.helper_arg else cls()


def _helper_problem(spec: AttackSpec, attack: Attack) -> str | None:
    if spec.helper is None:
        return None
    if attack.helper_arg is None:
        return f"attacks.{spec.key}.helper: the {spec.name} attack takes no helper model. Fix: remove helper"
    try:
        if isinstance(spec.helper, str):
            check_model_ref(spec.helper, f"attacks.{spec.key}.helper")
        else:
            spec.helper.api_key()
    except ConfigError as e:
        return str(e)
    return None


def load_helpers(cfg: EvalConfig) -> dict[str, Any]:
    """One loaded Target per distinct helper model the attacks name, shared by the attacks that name it."""
    from safecls.attacks.target import LocalTarget

    out: dict[str, Any] = {}
    for a in cfg.attacks:
        if a.helper is None or a.helper_key in out:
            continue
        out[a.helper_key] = (LocalTarget.load(a.helper, batch_size=cfg.batch_size) if isinstance(a.helper, str) else
                             a.helper.target())
    return out


def attack_config(attack: Attack, spec: AttackSpec, model: ModelSpec, seed: int) -> Any:
    """The attack's config: the entry's params on top of the model's decode settings, with the sample's seed."""
    params = dict(spec.params)
    fields = attack.config_cls.model_fields
    if "decode" in fields:
        decode = {**model.decode.model_dump(), **params.get("decode", {})}
        decode["seed"] = (decode.get("seed") or 0) + seed
        params["decode"] = decode
    else:
        logger.warning("attack %s has no decode section: model %s's decode settings do not reach it", spec.key,
                       model.name)
    if "seed" in fields:  # attacks that seed their own sampling (decoding grid, GCG) get the sample's offset too
        own = params.get("seed", fields["seed"].default)
        params["seed"] = seed if own is None else own + seed
    return validate(attack.config_cls, params, source=f"attacks.{spec.key}.params")


def make_judges(cfg: EvalConfig) -> dict[str, Judge]:
    out = {}
    for j in cfg.judges:
        cls = JUDGES.get(j.name)
        try:
            out[j.name] = cls(**j.params)
        except TypeError as e:
            raise ConfigError(f"judges.{j.name}.params: {e}") from e
    return out


def _model_problem(spec: ModelSpec) -> str | None:
    try:
        check_model_ref(spec.path, f"models.{spec.name}.path")
    except ConfigError as e:
        return str(e)
    return None


def _judge_problem(spec: Any) -> str | None:
    cls = JUDGES.get(spec.name)
    try:
        inspect.signature(cls).bind(**spec.params)
    except TypeError as e:
        return f"judges.{spec.name}.params: {e}. Fix: see the {cls.__name__} docstring"
    ck = spec.params.get("checkpoint")
    if ck is None:
        return None
    where = f"judges.{spec.name}.params.checkpoint"
    try:
        check_model_ref(str(ck), where=where)
    except ConfigError as e:
        return str(e)
    if str(ck) == BASE or str(ck).startswith(PLAIN):
        return f"{where}: {ck!r} has no safety head. Fix: pass default, untrained or a safecls checkpoint folder"
    return None


@dataclass(slots=True)
class Plan:
    cells: list[tuple[str, str, str, int]]  # (model, benchmark, attack, items)
    problems: list[str]  # each with its fix; empty: the run can start
    data: dict[str, list[BenchmarkItem]]  # the benchmarks, read once


def plan(cfg: EvalConfig) -> Plan:
    """Every model x benchmark x attack cell with its item count, and every problem found, before any model loads:
    unknown names, model and judge paths, unreadable benchmarks, attack params, and attacks that cannot run on a
    benchmark's items (e.g. a target prefill on a set without targets). Each problem says its fix."""
    problems: list[str] = []
    load_attack_registry()
    for what, names, reg in (("benchmarks", [b.name for b in cfg.benchmarks], BENCHMARKS),
                             ("judges", [j.name for j in cfg.judges], JUDGES)):
        for n in names:
            try:
                reg.get(n)
            except UnknownNameError as e:
                problems.append(f"{what}: {e}")
    attacks: dict[str, Attack] = {}
    for a in cfg.attacks:
        try:
            attacks[a.key] = make_attack(a)
        except UnknownNameError as e:
            problems.append(f"attacks: {e}")
            continue
        if p := _helper_problem(a, attacks[a.key]):
            problems.append(p)
    problems += [p for m in cfg.models if (p := _model_problem(m))]
    problems += [p for j in cfg.judges if j.name in JUDGES and (p := _judge_problem(j))]
    data = {}
    for b in cfg.benchmarks:
        if b.name not in BENCHMARKS:
            continue
        try:
            items = load_benchmark(b.name, b.path, limit=b.limit, seed=b.seed, categories=b.categories, **b.options)
            data[b.key] = [it.model_copy(update={"benchmark": b.key}) for it in items] if b.label else items
        except (DataError, ConfigError) as e:
            problems.append(f"benchmarks.{b.key}: {e}")
    cells = []
    for b in cfg.benchmarks:
        if b.key not in data:
            continue
        items = [_to_attack_item(it) for it in data[b.key]]
        for aspec in cfg.attacks_for(b):
            attack = attacks.get(aspec.key) or (make_attack(aspec) if aspec.name == "direct" else None)
            if attack is None:
                continue
            try:
                acfg = attack_config(attack, aspec, cfg.models[0], cfg.seed)
            except ConfigError as e:
                problems.append(f"attacks.{aspec.key}: {e}")
                continue
            problems += [f"benchmarks.{b.key} x attacks.{aspec.key}: {p}" for p in attack.check_items(items, acfg)]
            cells += [(m.name, b.key, aspec.key, len(items)) for m in cfg.models]
    return Plan(cells, list(dict.fromkeys(problems)), data)


def load_model(spec: ModelSpec, device: Any = None) -> tuple[Any, Any, Any]:
    """(LocalTarget, tokenizer, the SafeClsModel or plain HF model) for what `spec.path` names (model/resolve.py)."""
    import torch

    from safecls.attacks.target import LocalTarget

    check_model_ref(spec.path, f"models.{spec.name}.path")
    target = LocalTarget.load(spec.path, dtype=getattr(torch, spec.dtype), device=None if device is None else str(device))
    return target, target.tokenizer, target.safecls_model or target.causal_lm


# ---------------------------------------------------------------- processes


class _Processes:
    """Rank and world size from accelerate's PartialState when accelerate is importable (1 process otherwise)."""

    def __init__(self) -> None:
        try:
            import torch
            from accelerate import PartialState

            # cpu=True without CUDA: under `accelerate launch --multi_gpu` that selects gloo (as train() does)
            self.state: Any = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = self.state.process_index, self.state.num_processes
            self.device = self.state.device
        except ImportError:
            self.state, self.rank, self.world, self.device = None, 0, 1, None

    def barrier(self) -> None:
        if self.state is not None and self.world > 1:
            self.state.wait_for_everyone()


class _RecordLimit(Exception):
    """max_records reached (tests simulate a killed run with it)."""


# ---------------------------------------------------------------- the run


def _to_attack_item(it: BenchmarkItem) -> AttackItem:
    return AttackItem(id=it.id, prompt=it.prompt, target=it.target, category=it.category,
                      harmful_prefix=it.extra.get("harmful_prefix") if isinstance(it.extra.get("harmful_prefix"), str) else None)


class _Writer:
    """Judges buffered attack records in batches and appends them; counts toward max_records."""

    def __init__(self, log: ResultLog, judges: dict[str, Judge], tokenizer: Any, batch_size: int,
                 max_records: int | None, bar: Any):
        self.log, self.judges, self.tok, self.batch_size = log, judges, tokenizer, batch_size
        self.max_records, self.written, self.bar = max_records, 0, bar
        self.buffer: list[EvalRecord] = []
        self.started = self.oldest = self.last_add = time.monotonic()

    def add(self, rec: EvalRecord) -> None:
        now = time.monotonic()
        slow, self.last_add = now - self.last_add >= FLUSH_AFTER_S, now
        if not self.buffer:
            self.oldest = now
        self.buffer.append(rec)
        if slow or len(self.buffer) >= self.batch_size or now - self.oldest >= FLUSH_AFTER_S:
            self.flush()

    def flush(self) -> None:
        judge_into(self.buffer, self.judges)
        for r in self.buffer:
            if self.max_records is not None and self.written >= self.max_records:
                raise _RecordLimit
            self.log.append(r)
            self.written += 1
            self.bar.update(1)
        if self.buffer and self.bar.disable:  # no terminal (a piped log): a line per batch instead of the bar
            rate = self.written / max(time.monotonic() - self.started, 1e-9) * 60
            logger.info("%d records written (%s x %s), %.1f a minute", self.written, self.buffer[-1].model,
                        self.buffer[-1].benchmark, rate)
        self.buffer = []


def _eval_record(ar: AttackRecord, it: BenchmarkItem, model: str, attack: str, sample: int, tok: Any,
                 wall: float) -> EvalRecord:
    trace = ar.trace or {}
    n_tok = len(tok(ar.response, add_special_tokens=False)["input_ids"]) if ar.response else 0
    return EvalRecord(
        key=record_key(model, attack, it.benchmark, it.id, ar.variant, sample), model=model, attack=attack,
        benchmark=it.benchmark, item_id=it.id, sample=sample, variant=ar.variant, attack_key=ar.key,
        category=it.category, label=it.label, reference=it.reference, prompt=it.prompt,
        adversarial_input=ar.adversarial_input, prefill=ar.prefill, response=ar.response,
        finish_reason=ar.finish_reason, trace=ar.trace, parameters=ar.parameters, seed=ar.seed, error=ar.error,
        extra=ar.extra, completion_tokens=n_tok, extra_tokens=int(trace.get("extra_tokens", 0)),
        evaluations=len(trace.get("evaluations", [])), wall_s=wall)


def _versions(world: int) -> dict[str, Any]:
    import torch
    import transformers

    from safecls.version import __version__

    return {"safecls": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "world_size": world}


def _write_config(run_dir: Path, cfg: EvalConfig, versions: dict[str, Any]) -> None:
    path = run_dir / "config.yaml"
    text = dump_config(cfg)
    if path.is_file():
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        changed = sorted(k for k, v in cfg.model_dump(mode="json").items() if old.get(k) != v)
        if changed:
            logger.warning("%s: resuming with a changed config (%s); records already written keep their settings",
                           path, ", ".join(changed))
    head = "".join(f"# {k}: {v}\n" for k, v in versions.items())
    atomic_write(path, f"# resolved safecls eval config (seed {cfg.seed})\n{head}{text}")


def run_eval(cfg: EvalConfig, *, max_records: int | None = None) -> Path:
    """Run (or resume) the matrix of `cfg`; return the run folder. With `max_records`, stop after writing that many
    new records (metrics are then not written: the run is unfinished and resumes on the next call).

    Raises:
        UnknownNameError: a benchmark, attack or judge name is not registered (lists the valid ones).
        DataError: a benchmark file is missing or malformed (says where to get it).
        ConfigError: a model path or an attack/judge parameter is wrong.
    """
    from safecls.eval.probing import probe_curves
    from safecls.eval.report import write_report
    from safecls.eval.summary import summarize

    # Every benchmark is read and every cell checked before any model loads, so a bad config fails in seconds.
    p = plan(cfg)
    if p.problems:
        raise ConfigError(f"{len(p.problems)} problem(s) in eval config {cfg.name!r}, found before loading any model:\n"
                          + "\n".join(f"- {x}" for x in p.problems))
    data = p.data
    dist = _Processes()
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    versions = _versions(dist.world)
    if dist.rank == 0:
        _write_config(run_dir, cfg, versions)
    helpers = load_helpers(cfg)
    attacks = {a.key: make_attack(a, helpers.get(a.helper_key)) for a in cfg.attacks}
    attacks.setdefault("direct", make_attack(AttackSpec(name="direct")))  # clean-only sets run it even if unlisted
    judges = make_judges(cfg)
    if dist.rank == 0:
        rejudge(run_dir, judges, cfg.batch_size)
    dist.barrier()  # every process reads the merged, re-judged log
    log = ResultLog(run_dir / ("records.jsonl" if dist.world == 1 else f"records-rank{dist.rank}.jsonl"), EvalRecord)
    done = DoneKeys(read_records(run_dir))
    probing_path = run_dir / "probing.json"
    probing = _read_probing(probing_path)
    bar = tqdm(desc=f"eval {cfg.name}", unit="record", disable=None)
    schedules, tradeoff = {}, []
    try:
        for mspec in cfg.models:
            on_gpu = dist.device is not None and getattr(dist.device, "type", "cpu") != "cpu"
            target, tok, model = load_model(mspec, dist.device if on_gpu else None)
            target.batch_size = cfg.batch_size
            schedules[mspec.name] = mspec.decode.schedule if target.safecls_model is not None else "none"
            if target.safecls_model is not None and (t := tradeoff_of(mspec.name, target.safecls_model)):
                tradeoff.append(t)
            writer = _Writer(log, judges, tok, cfg.batch_size, None if max_records is None else max_records, bar)
            for bspec in cfg.benchmarks:
                _run_benchmark(cfg, mspec, bspec, _shard(data[bspec.key], dist), attacks, target, tok, writer, done)
            writer.flush()
            max_records = None if max_records is None else max_records - writer.written
            if cfg.probing is not None and dist.rank == 0 and mspec.name not in {c.model for c in probing}:
                bname = cfg.probing.benchmark or cfg.benchmarks[0].key
                probing += probe_curves(model, data[bname], cfg.probing, name=mspec.name, tokenizer=tok,
                                        decode=mspec.decode, batch_size=cfg.batch_size)
                atomic_write_json(probing_path, [c.model_dump() for c in probing])
            del target, model
    except _RecordLimit:
        logger.warning("stopped after max_records new records; rerun to resume (%s)", log.path)
        bar.close()
        return run_dir
    bar.close()
    dist.barrier()
    if dist.rank != 0:
        return run_dir
    records = merge_logs(run_dir)
    metrics = summarize(records, cfg, schedules=schedules, probing=_read_probing(probing_path),
                        run_info={"name": cfg.name, "seed": cfg.seed, **versions}, tradeoff=tradeoff)
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir, metrics, with_plots=cfg.plots)
    logger.info("eval %s: %d records, metrics and report in %s", cfg.name, len(records), run_dir)
    return run_dir


def tradeoff_of(name: str, model: Any) -> dict[str, Any] | None:
    """The report's trade-off entry for a calibrated safecls model (its calibration.json), else None."""
    cal = model.calibration or {}
    if not cal.get("curve"):
        return None
    keys = ("threshold", "tau", "target", "benign_flagged", "harmful_missed", "n_benign", "n_harmful", "curve")
    return {"model": name, **{k: cal[k] for k in keys}, "request_threshold": cal.get("request_threshold")}


def _shard(items: list[BenchmarkItem], dist: _Processes) -> list[BenchmarkItem]:
    return [it for i, it in enumerate(items) if i % dist.world == dist.rank]


def _read_probing(path: Path) -> list[Any]:
    import json

    from safecls.eval.report import ProbingCurve

    if not path.is_file():
        return []
    return [ProbingCurve(**c) for c in json.loads(path.read_text(encoding="utf-8"))]


def _run_benchmark(cfg: EvalConfig, mspec: ModelSpec, bspec: BenchmarkSpec, items: list[BenchmarkItem],
                   attacks: dict[str, Attack], target: Any, tok: Any, writer: _Writer, done: DoneKeys) -> None:
    by_id = {it.id: it for it in items}
    aitems = [_to_attack_item(it) for it in items]
    for aspec in cfg.attacks_for(bspec):
        attack = attacks[aspec.key]
        attack.check_target(target)
        logger.info("eval %s: model %s x %s (%d items) x attack %s", cfg.name, mspec.name, bspec.key, len(items),
                    aspec.key)
        for s in range(mspec.samples):
            acfg = attack_config(attack, aspec, mspec, cfg.seed + s)
            t0 = time.perf_counter()
            for ar in attack.attack(target, aitems, acfg, done.attack_keys(mspec.name, aspec.key, bspec.key, s)):
                rec = _eval_record(ar, by_id[ar.prompt_id], mspec.name, aspec.key, s, tok, time.perf_counter() - t0)
                if rec.key not in done.keys:
                    done.add(rec)
                    writer.add(rec)
                t0 = time.perf_counter()  # after add: judging time is not generation time
