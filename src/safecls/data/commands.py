"""`safecls data ...`: build the SFT mixture, label a pretrain-stage corpus, show the starter set. Thin:
parse, load the config, call the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from safecls.config import load_config

logger = logging.getLogger(__name__)


def register(sub) -> None:
    data = sub.add_parser("data", help="build SFT mixtures and label pretrain-stage corpora")
    dsub = data.add_subparsers(dest="data_command", required=True)

    p = dsub.add_parser("build-sft", help="benign + malicious sources -> train/heldout JSONL (configs/data_sft.yaml)")
    p.add_argument("--config", required=True, help="YAML with SFTMixtureConfig keys")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set n_per_label=500")
    p.set_defaults(func=_build_sft)

    p = dsub.add_parser("label", help="chunk and label a pretrain-stage corpus (configs/data_label.yaml)")
    p.add_argument("--config", required=True, help="YAML with PretrainCorpusConfig keys")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_label)

    p = dsub.add_parser("starter", help="print the embedded starter set's counts per kind and split")
    p.set_defaults(func=_starter)


def _build_sft(args: argparse.Namespace) -> int:
    from safecls.data.mixture import SFTMixtureConfig, build_sft_mixture

    cfg = load_config(args.config, SFTMixtureConfig, args.overrides)
    if cfg.output_dir is None:
        from safecls.errors import ConfigError

        raise ConfigError(f"{args.config}: output_dir: required for build-sft; set output_dir: runs/sft-data")
    mixture = build_sft_mixture(cfg)
    sys.stdout.write(json.dumps({"paths": {k: str(v) for k, v in mixture.paths.items()}, **mixture.stats}, indent=2) + "\n")
    return 0


def _label(args: argparse.Namespace) -> int:
    from safecls.data.corpus import PretrainCorpusConfig, build_pretrain_corpus

    cfg = load_config(args.config, PretrainCorpusConfig, args.overrides)
    if cfg.labeler.name == "safecls-head":
        from safecls.errors import ConfigError

        raise ConfigError(f"{args.config}: labeler.name: safecls-head needs a model object; use it from Python "
                          "(build_pretrain_corpus(cfg, classifier=model))")
    pairs = build_pretrain_corpus(cfg)
    n_bad = sum(lab.label for _, lab in pairs)
    sys.stdout.write(json.dumps({"chunks": len(pairs), "malicious": n_bad, "output": cfg.output}) + "\n")
    return 0


def _starter(args: argparse.Namespace) -> int:
    from safecls.data.starter import load_starter

    s = load_starter()
    counts = {kind: {split: sum(p.split == split for p in getattr(s, kind)) for split in ("train", "eval")}
              for kind in ("harmful", "benign", "over_refusal")}
    sys.stdout.write(json.dumps(counts) + "\n")
    return 0
