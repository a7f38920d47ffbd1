"""`safecls attack`: run one attack on a dataset against a local model or an endpoint, into a run directory.

    safecls attack prefill --model runs/sft/final --data advbench --data-root ../shared/data --limit 50 --out runs/prefill
    safecls attack decoding --model base --data prompts.jsonl --out runs/dec
    safecls attack pap --endpoint http://localhost:8000/v1 --endpoint-model safecls --data advbench \
        --set taxonomy_file=../shared/data/attacks/pap/persuasion_taxonomy.jsonl --out runs/pap
    safecls attack --list

RUN_DIR/config.yaml holds the resolved settings; RUN_DIR/records.jsonl one record per attacked generation. A rerun
with the same settings skips the records already there (resume); different settings are refused.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from safecls.errors import ConfigError
from safecls.model.resolve import MODEL_HELP

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="run an attack (prefill, decoding, gcg, gcg-transfer, autodan, pap) into a run dir",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="attack name (see --list)")
    p.add_argument("--list", action="store_true", help="list the attacks and exit")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--endpoint", metavar="URL", help="OpenAI-compatible base URL to attack instead of --model")
    p.add_argument("--endpoint-model", default="default", help="model name sent to the endpoint")
    p.add_argument("--api-key", default="none", help="endpoint API key")
    p.add_argument("--endpoint-prefill", choices=["none", "continue_final_message"], default="none",
                   help="how the endpoint takes a prefilled reply (vLLM/safecls servers: continue_final_message)")
    p.add_argument("--attacker", help="model for PAP paraphrasing / AutoDAN LLM mutation (forms as --model; default: "
                   "the target itself)")
    p.add_argument("--attacker-endpoint", metavar="URL", help="an OpenAI-compatible base URL as the attacker instead "
                   "of --attacker (a capable paraphraser: PAP's paper used GPT-4)")
    p.add_argument("--attacker-endpoint-model", default="default", help="model name sent to the attacker endpoint")
    p.add_argument("--attacker-api-key-env", metavar="VAR", help="environment variable holding the attacker "
                   "endpoint's key (none: an open server)")
    p.add_argument("--data", help="FILE (JSONL/CSV/TXT) or a benchmark name (advbench, maliciousinstruct, hex-phi, ...)")
    p.add_argument("--data-root", type=Path, help="benchmark file or folder (e.g. ../shared/data); default: download")
    p.add_argument("--limit", type=int, help="attack N requests (a file's first N; a benchmark's seeded subset)")
    p.add_argument("--seed", type=int, default=0, help="benchmark subset seed")
    p.add_argument("--config", type=Path, help="YAML attack config (keys of the attack's config class)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. gcg.num_steps=50")
    p.add_argument("--dtype", default=None, help="model dtype (float32, bfloat16, ...)")
    p.add_argument("--batch-size", type=int, default=16, help="local generation batch size")
    p.add_argument("--out", type=Path, help="run directory")
    p.set_defaults(func=_attack)


def _list() -> int:
    from safecls.attacks import ATTACKS

    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        kind = "black box" if cls.black_box else "white box (local model)"
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        sys.stdout.write(f"{name:14s} {kind:24s} {doc}\n")
    return 0


def _local(ref: str, dtype: str | None, batch_size: int) -> Any:
    import torch

    from safecls.attacks.target import LocalTarget

    return LocalTarget.load(ref, dtype=getattr(torch, dtype) if dtype else None, batch_size=batch_size)


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from safecls.version import __version__

    return {"safecls": str(__version__), "torch": str(torch.__version__), "transformers": str(transformers.__version__)}


def _config(attack: Any, args: argparse.Namespace) -> Any:
    from safecls.config import apply_overrides

    data: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            raise ConfigError(f"{args.config}: no such config file")
        try:
            data = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{args.config}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{args.config}: the top level must be a mapping of keys to values")
    data = apply_overrides(data, args.set)
    return attack.make_config(data if (data or args.config) else None)


def _attack(args: argparse.Namespace) -> int:
    from safecls.attacks import ATTACKS
    from safecls.attacks.base import AttackRecord
    from safecls.attacks.items import load_items
    from safecls.attacks.target import EndpointHelper
    from safecls.config import dump_config
    from safecls.io import ResultLog, atomic_write

    if args.list:
        return _list()
    if not args.name:
        raise ConfigError("attack: give an attack name (safecls attack --list shows them)")
    cls = ATTACKS.get(args.name)
    missing = [f for f, v in (("--data", args.data), ("--out", args.out)) if not v]
    if missing:
        raise ConfigError(f"attack {args.name}: {' and '.join(missing)} required")
    if bool(args.model) == bool(args.endpoint):
        raise ConfigError("attack: give exactly one of --model and --endpoint")
    if args.attacker and args.attacker_endpoint:
        raise ConfigError("attack: give at most one of --attacker and --attacker-endpoint")
    if (args.attacker or args.attacker_endpoint) and cls.helper_arg is None:
        raise ConfigError(f"--attacker: the {args.name} attack takes no helper model. Fix: drop --attacker (it is for "
                          f"{', '.join(n for n in ATTACKS.names() if ATTACKS.get(n).helper_arg)})")
    endpoint_helper = EndpointHelper(base_url=args.attacker_endpoint, model=args.attacker_endpoint_model,
                                     api_key_env=args.attacker_api_key_env) if args.attacker_endpoint else None
    if endpoint_helper is not None:
        endpoint_helper.api_key()  # a missing key fails here, before any model loads
    attack = cls()
    config = _config(attack, args)  # config and data errors surface before any model loads
    items = load_items(args.data, data_root=args.data_root, limit=args.limit, seed=args.seed)
    resolved = {"attack": args.name, "target": args.model or f"{args.endpoint} ({args.endpoint_model})",
                "attacker": args.attacker or (endpoint_helper.key if endpoint_helper else None), "data": args.data,
                "data_root": str(args.data_root) if args.data_root else None,
                "limit": args.limit, "seed": args.seed, "config": yaml.safe_load(dump_config(config))}
    text = yaml.safe_dump({**resolved, "versions": _versions()}, sort_keys=False)
    cfg_path = args.out / "config.yaml"
    old = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else None
    if old is not None and {k: v for k, v in old.items() if k != "versions"} != resolved:
        raise ConfigError(f"{cfg_path}: this run directory was made with other settings; resuming would mix them. "
                          "Fix: use a new --out, or the same settings")
    if args.endpoint:
        from safecls.attacks.target import OpenAITarget

        target = OpenAITarget(args.endpoint_model, base_url=args.endpoint, api_key=args.api_key,
                              prefill=args.endpoint_prefill)
    else:
        target = _local(args.model, args.dtype, args.batch_size)
    if args.attacker or endpoint_helper is not None:
        helper = endpoint_helper.target() if endpoint_helper else _local(args.attacker, args.dtype, args.batch_size)
        attack = cls(**{cls.helper_arg: helper})
    atomic_write(cfg_path, text)
    log = ResultLog(args.out / "records.jsonl", AttackRecord)
    new = attack.run(target, items, config, log)
    errors = sum(r.error is not None for r in new)
    logger.info("%s: %d new records (%d without a response) in %s", args.name, len(new), errors, log.path)
    sys.stdout.write(f"{len(new)} new records -> {log.path}\n")
    return 0
