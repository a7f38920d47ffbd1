"""`safecls judge <sub-command>`: reproduce the shipped minilm judge (docs/judge_labelling_guide.md).

Paths default to a checkout's layout, relative to the working directory: the shared data beside it (--data-dir,
../shared/data), the fixture (--fixture, tests/fixtures/judge_labels.jsonl), scratch files (--work-dir, runs/judge);
the hand labels and the weights default to the packaged ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from safecls.errors import DataError
from safecls.eval.judges.training.fit import JudgeTrainConfig
from safecls.eval.judges.training.generate import GenerationConfig
from safecls.eval.judges.training.overlap import NEAR_COSINE
from safecls.eval.judges.training.sources import DEFAULT_DATA_DIR, DEFAULT_FIXTURE, DEFAULT_WORK_DIR

TRAIN, GEN = JudgeTrainConfig(), GenerationConfig()  # the CLI's defaults are the configs' own


def _head_dir() -> Path:
    from safecls.eval.judges.minilm import default_head_dir

    return default_head_dir()


def _synthetic(text: str) -> int | None:
    return None if text == "all" else int(text)


def _common() -> argparse.ArgumentParser:
    c = argparse.ArgumentParser(add_help=False)
    c.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="shared data folder with safety-sft/, benign-sft/, advbench/, maliciousinstruct/ "
                        "(default: ../shared/data)")
    c.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                   help="replies to label, embedding cache, suspects (default: runs/judge)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=int, default=None, help="torch CPU threads (fewer than cores on a shared machine)")
    return c


def _gen_options(p: argparse.ArgumentParser, *, engine: bool = False) -> None:
    p.add_argument("--max-new-tokens", type=int, default=GEN.max_new_tokens)
    p.add_argument("--batch-size", type=int, default=GEN.batch_size)
    if engine:
        p.add_argument("--policy", default=GEN.policy, help="decode policy of a safecls checkpoint")
        p.add_argument("--schedule", default=GEN.schedule, help="re-classification schedule of a safecls checkpoint")


def _overlap_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fixture", type=Path, default=DEFAULT_FIXTURE, help="the labelled fixture (its held-out split "
                   "is what training rows must not copy)")
    p.add_argument("--near-cosine", type=float, default=NEAR_COSINE,
                   help=f"replies this close (MiniLM cosine) are copies (default: {NEAR_COSINE})")
    p.add_argument("--any-prompt", action="store_true",
                   help="also drop a reply shared with a held-out row under a different prompt")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("judge", help="reproduce the minilm judge: replies to label, train, calibrate, evaluate",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    js = p.add_subparsers(dest="judge_command", metavar="SUBCOMMAND", required=True)
    common = [_common()]

    c = js.add_parser("completions", parents=common, help="base-model greedy replies to safety-sft prompts (training)")
    c.add_argument("--n", type=int, default=240)
    _gen_options(c)
    c.add_argument("--out", type=Path, help="default: WORK_DIR/completions.jsonl (resumable)")
    c.set_defaults(func=_completions)

    e = js.add_parser("eval-responses", parents=common, help="base-model replies to the fixture's prompts (unlabelled)")
    _gen_options(e)
    e.add_argument("--blocks", type=int, nargs="*", help="only these EVAL_PLAN blocks (0-based), appended to --out")
    e.add_argument("--out", type=Path, help="default: WORK_DIR/eval_unlabelled.jsonl")
    e.set_defaults(func=_eval_responses)

    m = js.add_parser("model-responses", parents=common, help="a checkpoint's replies (eval: fixture; train: training)")
    m.add_argument("--checkpoint", required=True, help="a safecls checkpoint folder, or 'base' for the base model")
    m.add_argument("--name", required=True, help="the model's name in the rows, e.g. demo-safecls")
    m.add_argument("--prompts", choices=("eval", "train"), required=True)
    m.add_argument("--n", type=int, default=150, help="train: safety-sft prompts")
    m.add_argument("--exclude", type=Path, nargs="*", default=[],
                   help="train: files whose safety-sft ids are not asked again")
    m.add_argument("--completions", type=Path, help="default: WORK_DIR/completions.jsonl (train: not asked again)")
    _gen_options(m, engine=True)
    m.add_argument("--out", type=Path, help="default: WORK_DIR/<name>_<prompts>.jsonl")
    m.set_defaults(func=_model_responses)

    y = js.add_parser("styled-completions", parents=common, help="replies to safety-sft topics in the evaluation style")
    y.add_argument("--plan", choices=("styled", "wide", "model"), default="styled",
                   help="attack blocks (generate.PLANS)")
    y.add_argument("--include-used", action="store_true", help="also restyle rows whose original form was asked")
    y.add_argument("--exclude", type=Path, nargs="*", default=[], help="earlier rounds: their topics are not asked")
    y.add_argument("--new-styles", action="store_true", help="with --exclude: their topics again, in new styles")
    y.add_argument("--reuse-topics", action="store_true", help="ask a topic again in other styles within this round")
    y.add_argument("--max-similarity", type=float, default=0.8, help="drop prompts this close to an evaluation prompt")
    y.add_argument("--checkpoint", default="base", help="a safecls checkpoint folder, or 'base' (base model)")
    y.add_argument("--name", default="smollm2-135m-instruct", help="the model's name in the rows")
    y.add_argument("--completions", type=Path, help="default: WORK_DIR/completions.jsonl (its rows count as used)")
    y.add_argument("--train-labels", type=Path,
                   help="default: the packaged train_labels.jsonl (its unstyled rows count as used)")
    _gen_options(y, engine=True)
    y.add_argument("--out", type=Path, help="default: WORK_DIR/styled.jsonl")
    y.set_defaults(func=_styled_completions)

    x = js.add_parser("fixture", parents=common, help="join replies with hand labels ('<line> <C|R|O>' files)")
    x.add_argument("--responses", type=Path, nargs="+", required=True)
    x.add_argument("--labels", type=Path, nargs="+", required=True, help="one per --responses file, in order")
    x.add_argument("--out", type=Path, default=DEFAULT_FIXTURE)
    x.add_argument("--training", action="store_true", help="training labels: rows get no split")
    x.set_defaults(func=_fixture)

    t = js.add_parser("train", parents=common, help="build the training set, drop held-out copies, fine-tune")
    t.add_argument("--completions", type=Path, help="default: WORK_DIR/completions.jsonl (`safecls judge completions`)")
    t.add_argument("--train-labels", type=Path, help="default: the packaged train_labels.jsonl")
    t.add_argument("--base-labels", type=Path, help="default: the packaged base_completion_labels.jsonl")
    _overlap_options(t)
    t.add_argument("--epochs", type=int, default=TRAIN.epochs)
    t.add_argument("--lr", type=float, default=TRAIN.lr)
    t.add_argument("--batch-size", type=int, default=TRAIN.batch_size)
    t.add_argument("--lora-r", type=int, default=TRAIN.lora_r, help="LoRA rank (alpha: twice it)")
    t.add_argument("--synthetic", type=_synthetic, default=TRAIN.synthetic,
                   help=f"constructed rows to sample, or 'all' (default: {TRAIN.synthetic})")
    t.add_argument("--real-weight", type=int, default=TRAIN.real_weight,
                   help=f"times each hand-read reply is seen per epoch (default: {TRAIN.real_weight})")
    t.add_argument("--out", type=Path, help="default: the packaged judge folder")
    t.set_defaults(func=_train)

    k = js.add_parser("calibrate", parents=common, help="logit offsets chosen on the fixture's dev split")
    k.add_argument("--head", type=Path, help="default: the packaged judge folder (rewritten)")
    _overlap_options(k)
    k.add_argument("--max-asr-bias", type=float, default=0.03,
                   help="largest |judge COMPLY rate - labelled COMPLY rate| on dev the offsets may give")
    k.add_argument("--fit-refuse", action="store_true", help="also fit REFUSE's offset (default: OFF_TOPIC's only)")
    k.set_defaults(func=_calibrate)

    u = js.add_parser("suspects", parents=common, help="training rows the judge fits worst, for a blind re-reading")
    u.add_argument("--head", type=Path, help="default: the packaged judge folder")
    u.add_argument("--train-labels", type=Path, help="default: the packaged train_labels.jsonl")
    u.add_argument("--below", type=float, default=0.2, help="the judge's probability of the row's own label")
    u.add_argument("--out", type=Path, help="default: WORK_DIR/suspects.jsonl")
    u.set_defaults(func=_suspects)

    v = js.add_parser("evaluate", parents=common, help="each judge's agreement with the fixture (dev and held-out)")
    v.add_argument("--fixture", type=Path, default=DEFAULT_FIXTURE)
    v.add_argument("--head", type=Path, help="default: the packaged judge folder")
    v.add_argument("--verbose", action="store_true", help="print the minilm judge's confusion and disagreements")
    v.add_argument("--write", type=Path, nargs="?", const=True, default=None,
                   help="write the held-out numbers (default path: the judge folder's validation.json)")
    v.add_argument("--second-reading", type=Path, help="'<line> <C|R|O>' labels of the fixture by a second reader")
    v.set_defaults(func=_evaluate)

    o = js.add_parser("overlap", parents=common, help="count training and dev rows that copy a held-out row")
    o.add_argument("--completions", type=Path, help="default: WORK_DIR/completions.jsonl (left out when missing)")
    o.add_argument("--train-labels", type=Path)
    o.add_argument("--base-labels", type=Path)
    _overlap_options(o)
    o.set_defaults(func=_overlap)


def _setup(args: argparse.Namespace) -> None:
    if args.threads:  # fewer threads than cores avoids OpenMP spin contention when the machine is shared
        import torch

        torch.set_num_threads(args.threads)


def _gen_cfg(args: argparse.Namespace) -> GenerationConfig:
    from safecls.config import validate

    engine = {"policy": args.policy, "schedule": args.schedule} if hasattr(args, "policy") else {}
    return validate(GenerationConfig, {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                                       "seed": args.seed, **engine}, source="command line")


def _completions_path(args: argparse.Namespace) -> Path:
    return args.completions or args.work_dir / "completions.jsonl"


def _completions(args: argparse.Namespace) -> int:
    from safecls.eval.judges.training import generate

    _setup(args)
    out = args.out or args.work_dir / "completions.jsonl"
    n = generate.completions(args.data_dir, out, n=args.n, cfg=_gen_cfg(args))
    print(f"{out}: {n} completions")
    return 0


def _eval_responses(args: argparse.Namespace) -> int:
    from safecls.eval.judges.training import generate

    _setup(args)
    out = args.out or args.work_dir / "eval_unlabelled.jsonl"
    generate.eval_responses(args.data_dir, out, blocks=args.blocks, cfg=_gen_cfg(args))
    print(out)
    return 0


def _model_responses(args: argparse.Namespace) -> int:
    from safecls.eval.judges.training import generate

    _setup(args)
    out = args.out or args.work_dir / f"{args.name}_{args.prompts}.jsonl"
    generate.model_responses(args.checkpoint, args.name, args.prompts, args.data_dir, out,
                             completions_file=_completions_path(args), n=args.n, exclude=args.exclude,
                             cfg=_gen_cfg(args))
    print(out)
    return 0


def _styled_completions(args: argparse.Namespace) -> int:
    from safecls.eval.judges.training import generate
    from safecls.eval.judges.training.sources import default_train_labels

    _setup(args)
    out = args.out or args.work_dir / "styled.jsonl"
    used = set() if args.include_used else generate.used_safety_rows(
        _completions_path(args), args.work_dir, args.train_labels or default_train_labels())
    n = generate.styled_completions(args.data_dir, out, used=used, plan=args.plan, exclude=args.exclude,
                                    new_styles=args.new_styles, reuse_topics=args.reuse_topics,
                                    max_similarity=args.max_similarity, checkpoint=args.checkpoint, name=args.name,
                                    cfg=_gen_cfg(args))
    print(f"{out}: {n} replies")
    return 0


def _fixture(args: argparse.Namespace) -> int:
    from safecls.eval.judges.training.sources import join_labels

    n = join_labels(args.responses, args.labels, args.out, with_split=not args.training)
    print(f"{args.out}: {n} labelled rows")
    return 0


def _print_dropped(what: str, dropped: dict[str, dict[str, int]]) -> None:
    total = {k: sum(d[k] for d in dropped.values()) for k in ("exact", "near")}
    print(f"{what} dropped for copying a held-out row: {total['exact']} exact, {total['near']} near"
          + (f" ({json.dumps(dropped)})" if dropped else ""))


def _train(args: argparse.Namespace) -> int:
    from safecls.config import validate
    from safecls.eval.judges.training import builder, fit, overlap
    from safecls.eval.judges.training.evaluate import TABLE_HEADER, agreement_line

    _setup(args)
    cfg = validate(JudgeTrainConfig, {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                                          "lora_r": args.lora_r, "synthetic": args.synthetic,
                                          "real_weight": args.real_weight, "seed": args.seed}, source="command line")
    completions = _completions_path(args)
    if not completions.is_file():
        raise DataError(completions, "not found", fix="run `safecls judge completions` first (the base model's "
                        "replies that base_completion_labels.jsonl labels), or pass --completions")
    embed = builder.cached_embed(args.work_dir / "sentence_embed.npz")
    rule = {"embed": embed, "threshold": args.near_cosine, "same_prompt": not args.any_prompt}
    ts = builder.training_rows(args.data_dir, completions=completions, train_labels=args.train_labels,
                               base_labels=args.base_labels, heldout=overlap.heldout_pairs(args.fixture, args.data_dir),
                               seed=cfg.seed, synthetic=cfg.synthetic, real_weight=cfg.real_weight,
                               near_cosine=args.near_cosine, same_prompt=not args.any_prompt, embed=embed)
    _print_dropped("training rows", ts.dropped)
    dev, found = overlap.dev_rows(args.fixture, args.data_dir, **rule)
    print(f"dev rows dropped for copying a held-out row: {len(found)}")
    print(TABLE_HEADER)

    def on_dev(encoder: Any, head: Any, tok: Any) -> None:
        print(agreement_line("minilm", "dev", [r["label"] for r in dev], fit.judge_rows(encoder, head, tok, dev)),
              flush=True)

    synthetic = "all" if cfg.synthetic is None else cfg.synthetic
    command = (f"safecls judge train --seed {cfg.seed} --epochs {cfg.epochs} --lr {cfg.lr} --batch-size "
               f"{cfg.batch_size} --lora-r {cfg.lora_r} --synthetic {synthetic} --real-weight {cfg.real_weight}"
               + (" --any-prompt" if args.any_prompt else ""))
    out = fit.train(ts.rows, cfg, args.out or _head_dir(), eval_fn=on_dev, command=command, dropped=ts.dropped)
    print(f"wrote {out.out / 'head.safetensors'}: {out.label_counts}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from safecls.eval.judges.training import builder, overlap
    from safecls.eval.judges.training import calibrate as cal

    _setup(args)
    embed = builder.cached_embed(args.work_dir / "sentence_embed.npz")
    dev, found = overlap.dev_rows(args.fixture, args.data_dir, embed=embed, threshold=args.near_cosine,
                                  same_prompt=not args.any_prompt)
    print(f"dev rows: {len(dev)} ({len(found)} dropped for copying a held-out row)")
    command = (f"safecls judge calibrate --max-asr-bias {args.max_asr_bias}" + (" --fit-refuse" * args.fit_refuse)
               + (" --any-prompt" * args.any_prompt))
    r = cal.calibrate(args.head or _head_dir(), dev, max_asr_bias=args.max_asr_bias, fit_refuse=args.fit_refuse,
                      command=command)
    print(f"dev kappa {r.kappa_before:.3f} (ASR bias {r.asr_bias_before:+.3f}) without offsets, {r.kappa_after:.3f} "
          f"({r.asr_bias_after:+.3f}) with {r.offsets} (comply, refuse, off_topic)")
    return 0


def _suspects(args: argparse.Namespace) -> int:
    from safecls.eval.judges.training.evaluate import suspects

    _setup(args)
    rows = suspects(args.head or _head_dir(), args.data_dir, args.train_labels, below=args.below)
    out = args.out or args.work_dir / "suspects.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{out}: {len(rows)} training rows below {args.below} for their own label")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from safecls.eval.judges.training.evaluate import TABLE_HEADER, evaluate, write_validation

    _setup(args)
    head = args.head or _head_dir()
    result = evaluate(args.fixture, args.data_dir, head, second_reading=args.second_reading)
    print(TABLE_HEADER)
    print("\n".join(result.table))
    if args.verbose:
        print("\n".join(result.details))
    print("fixture:", result.fixture_counts)
    if args.write is not None:
        path = Path(head) / "validation.json" if args.write is True else args.write
        write_validation(result.document, path)
        print(f"wrote {path}")
    return 0


def _overlap(args: argparse.Namespace) -> int:
    from safecls.eval.judges.training import builder, overlap
    from safecls.eval.judges.training.sources import fixture_rows, labelled_model_rows, read_base_labels

    _setup(args)
    completions = _completions_path(args)
    embed = builder.cached_embed(args.work_dir / "sentence_embed.npz")
    built = builder.build_training_set(args.data_dir, completions if completions.is_file() else None,
                                       read_base_labels(args.base_labels), args.seed, embed)
    built += labelled_model_rows(args.data_dir, args.train_labels)
    dev = fixture_rows(args.fixture, args.data_dir, "dev")
    heldout = overlap.heldout_pairs(args.fixture, args.data_dir)
    candidates = [*built, *dev]
    groups = [_group(r.source) for r in built] + ["dev split"] * len(dev)
    rules = [("same prompt", True)] + ([("any prompt", False)] if args.any_prompt else [])
    for name, same_prompt in rules:
        rule = {"embed": embed, "threshold": args.near_cosine, "same_prompt": same_prompt}
        found = overlap.find_overlap(candidates, heldout, **rule)
        # the relation is symmetric: held-out rows with a copy among the candidates
        copied = overlap.find_overlap(heldout, [overlap.as_pair(c) for c in candidates], **rule)
        print(f"{name}: {len(found)} of {len(candidates)} rows copy a held-out row; {len(copied)} of {len(heldout)} "
              "held-out rows are copied")
        for group, n in overlap.count_overlap(found, groups).items():
            print(f"  {group:24s} exact {n['exact']:5d}  near {n['near']:5d}")
    return 0


def _group(source: str) -> str:
    """Training rows by where their label comes from: hand-labelled model replies, base completions, constructed."""
    if source.startswith("labelled-"):
        return source.removeprefix("labelled-")
    return "base completions" if source.startswith("base-completion") else "constructed"
