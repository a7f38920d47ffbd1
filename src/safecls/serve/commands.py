"""`safecls serve`: parse flags, build ServeSettings, load the model, run uvicorn. Thin: the server is create_app.

Environment (the only variable read; flags win):
  SAFECLS_API_KEY   comma-separated Bearer keys, used when no --api-key is given (keeps keys out of `ps` output).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os

logger = logging.getLogger(__name__)

API_KEY_ENV = "SAFECLS_API_KEY"


def register(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (chat, completions, moderations) with safety traces",
                       description="Serve a safecls checkpoint over OpenAI's HTTP API. "
                       f"Bearer keys can also come from ${API_KEY_ENV} (comma-separated) when --api-key is absent.")
    p.add_argument("--model", required=True, metavar="DIR|default",
                   help="a safecls checkpoint folder, or 'default' (embedded SmolLM2 with an UNTRAINED head)")
    p.add_argument("--served-model-name", default=None, help="the id clients send as `model` (default: folder name)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", dest="api_keys", action="append", default=[], metavar="KEY",
                   help="accept this Bearer key on /v1/* (repeatable); none: no auth")
    p.add_argument("--max-batch", type=int, default=16, help="most sequences decoded together")
    p.add_argument("--batch-wait-ms", type=float, default=10.0,
                   help="start a batch once no new request has come for this long ...")
    p.add_argument("--batch-wait-max-ms", type=float, default=100.0,
                   help="... or this long after the oldest waiting request came")
    p.add_argument("--max-queue", type=int, default=256, help="most waiting sequences; beyond it: 429")
    p.add_argument("--max-tokens-cap", type=int, default=2048, help="largest max_tokens a request may ask for")
    p.add_argument("--default-max-tokens", type=int, default=256, help="max_tokens when a request gives none")
    p.add_argument("--max-n", type=int, default=8, help="largest n per request")
    p.add_argument("--max-body-mb", type=float, default=2.0, help="request body limit in MiB (over it: 413)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request, queueing included (then 504)")
    p.add_argument("--policy", choices=["low", "medium", "high"], default=None,
                   help="default strategic-decoding policy (default medium; low for --model default)")
    p.add_argument("--schedule", choices=["first", "every", "periodic", "annealing"], default="annealing")
    p.add_argument("--threshold", type=float, default=0.5, help="P(malicious) above which the head says malicious")
    p.add_argument("--preset", choices=["seed", "authors"], default="seed",
                   help="r2/r3/tau defaults: seed (10/10/3) or the paper scripts' (15/10/3)")
    p.add_argument("--separate-pass", action="store_true", help="evaluate [CLS] in its own pass instead of fused")
    p.add_argument("--no-safety-overrides", action="store_true", help="reject per-request safety_* fields")
    p.add_argument("--min-policy", choices=["low", "medium", "high"], default="low",
                   help="lowest policy a request may ask for")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default torch's). On a shared, busy CPU 1 can be many times faster")
    p.set_defaults(func=_serve)


def settings_from_args(args: argparse.Namespace, *, untrained_head: bool = False):
    from safecls.config import validate
    from safecls.inference.config import PRESETS, DecodeConfig
    from safecls.serve.settings import ServeSettings

    policy = args.policy
    if policy is None:
        policy = "low" if untrained_head else "medium"
    keys = args.api_keys or [k.strip() for k in os.environ.get(API_KEY_ENV, "").split(",") if k.strip()]
    name = args.served_model_name or _default_name(args.model)
    # validate() turns a bad flag value into a ConfigError naming the field (the CLI prints it on one line)
    decode = validate(DecodeConfig, {**PRESETS[args.preset], "policy": policy, "schedule": args.schedule,
                                     "threshold": args.threshold, "fused": not args.separate_pass},
                      source="safecls serve flags")
    return validate(ServeSettings, dict(
        model_name=name, host=args.host, port=args.port, api_keys=keys, max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms, batch_wait_max_ms=args.batch_wait_max_ms, max_queue=args.max_queue, max_tokens_cap=args.max_tokens_cap,
        default_max_tokens=args.default_max_tokens, max_n=args.max_n, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        request_timeout_s=args.timeout, decode_defaults=decode, allow_safety_overrides=not args.no_safety_overrides,
        min_policy=args.min_policy), source="safecls serve flags")


def _default_name(model: str) -> str:
    from pathlib import Path

    return "safecls-default" if model == "default" else Path(model).resolve().name


def _load(args: argparse.Namespace):
    import torch

    from safecls.model import SafeClsModel, load_base

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.model == "default":
        logger.warning("serving the embedded default model with an UNTRAINED safety head: its P(malicious) is noise. "
                       "Train one (safecls train) and pass its folder for a real safety signal")
        return SafeClsModel.from_base(*load_base("default", dtype=dtype)).to(device)
    return SafeClsModel.from_pretrained(args.model, dtype=dtype, device=device)


def _serve(args: argparse.Namespace) -> int:
    from safecls._optional import require

    uvicorn = require("uvicorn", "serve")
    from safecls.serve.app import create_app

    settings = settings_from_args(args, untrained_head=args.model == "default")  # bad flags fail before loading
    model = _load(args)
    if not settings.api_keys and not _is_loopback(settings.host):
        logger.warning("binding %s without --api-key: anyone who can reach this port can use the model", settings.host)
    app = create_app(model, settings)
    logger.info("serving %r on http://%s:%d/v1", settings.model_name, settings.host, settings.port)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    uvicorn.run(app, host=settings.host, port=settings.port,
                log_level=level if level in ("debug", "info", "warning", "error", "critical") else "info")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
