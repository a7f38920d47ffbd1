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


# Flags derived from the settings' and the decode config's own fields (each documented once, on its class).
SETTINGS_FLAGS = ["host", "port", "max_batch", "batch_wait_ms", "batch_wait_max_ms", "max_queue", "max_tokens_cap",
                  "default_max_tokens", "max_n", "request_timeout_s", "allow_safety_overrides", "min_policy",
                  "moderation_threshold"]
DECODE_FLAGS = ["policy", "schedule", "period", "threshold", "request_threshold", "tau", "r2", "r3", "read_prompt", "fused"]


def register(sub) -> None:
    from safecls.config import add_field_flags
    from safecls.inference.config import DecodeConfig
    from safecls.model.resolve import MODEL_HELP
    from safecls.serve.settings import ServeSettings

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (chat, completions, moderations) with safety traces",
                       description="Serve a safecls model over OpenAI's HTTP API. "
                       f"Bearer keys can also come from ${API_KEY_ENV} (comma-separated) when --api-key is absent.")
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--served-model-name", default=None, help="the id clients send as `model` (default: from --model)")
    p.add_argument("--api-key", dest="api_keys", action="append", default=[], metavar="KEY",
                   help="accept this Bearer key on /v1/* (repeatable); none: no auth")
    p.add_argument("--max-body-mb", type=float, default=None, help="request body limit in MiB (over it: 413)")
    add_field_flags(p.add_argument_group("server (ServeSettings)"), ServeSettings, SETTINGS_FLAGS)
    p.add_argument("--preset", choices=["seed", "authors"], default="seed",
                   help="r2/r3/tau defaults: seed (10/10/3) or the paper scripts' (15/10/3)")
    add_field_flags(p.add_argument_group("safety defaults of every request (DecodeConfig)"), DecodeConfig, DECODE_FLAGS,
                    dest_prefix="decode_")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default torch's). On a shared, busy CPU 1 can be many times faster")
    p.set_defaults(func=_serve)


def settings_from_args(args: argparse.Namespace, *, untrained_head: bool = False):
    from safecls.config import given_fields, validate
    from safecls.inference.config import PRESETS, DecodeConfig
    from safecls.serve.settings import ServeSettings

    decode = {**PRESETS[args.preset], **given_fields(args, DECODE_FLAGS, dest_prefix="decode_")}
    if untrained_head and "policy" not in decode:
        decode["policy"] = "low"  # an untrained head's verdicts are noise: no strategic decoding unless asked
    keys = args.api_keys or [k.strip() for k in os.environ.get(API_KEY_ENV, "").split(",") if k.strip()]
    settings = {**given_fields(args, SETTINGS_FLAGS), "model_name": args.served_model_name or _default_name(args.model),
                "api_keys": keys}
    if args.max_body_mb is not None:
        settings["max_body_bytes"] = int(args.max_body_mb * 1024 * 1024)
    # validate() turns a bad flag value into a ConfigError naming the field (the CLI prints it on one line)
    settings["decode_defaults"] = validate(DecodeConfig, decode, source="safecls serve flags")
    return validate(ServeSettings, settings, source="safecls serve flags")


def _default_name(model: str) -> str:
    from safecls.model.resolve import Resolved

    return Resolved(model, None, None, safecls=True).name


def _load(args: argparse.Namespace):
    import torch

    from safecls.model.resolve import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_model(args.model, dtype=dtype, device=device)


def _serve(args: argparse.Namespace) -> int:
    from safecls._optional import require

    uvicorn = require("uvicorn", "serve")
    from safecls.model.resolve import UNTRAINED, check_model_ref
    from safecls.serve.app import create_app

    check_model_ref(args.model)
    settings = settings_from_args(args, untrained_head=args.model == UNTRAINED)  # bad flags fail before loading
    resolved = _load(args)
    model = resolved.model if resolved.safecls else _plain_engine(resolved)
    if not settings.api_keys and not _is_loopback(settings.host):
        logger.warning("binding %s without --api-key: anyone who can reach this port can use the model", settings.host)
    app = create_app(model, settings)
    logger.info("serving %r on http://%s:%d/v1", settings.model_name, settings.host, settings.port)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    uvicorn.run(app, host=settings.host, port=settings.port,
                log_level=level if level in ("debug", "info", "warning", "error", "critical") else "info")
    return 0


def _plain_engine(resolved):
    from safecls.inference.engine import Engine

    return Engine.plain(resolved.model, resolved.tokenizer)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
