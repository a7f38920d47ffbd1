"""The `safecls` command. Thin: parses, builds configs, calls the library. Only this module configures logging."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from safecls.errors import SafeclsError

# Each room adds its sub-commands through `<room>.commands.register(sub)`, in the order --help lists them.
ROOMS = (
    "safecls.train.commands",  # train
    "safecls.inference.commands",  # generate, chat, calibrate
    "safecls.attacks.commands",  # attack
    "safecls.eval.commands",  # eval, report
    "safecls.eval.judges.training.commands",  # judge
    "safecls.recipe.commands",  # recipe
    "safecls.serve.commands",  # serve
    "safecls.demo",  # demo
    "safecls.study.commands",  # study
    "safecls.data.commands",  # data
)


def _info(args: argparse.Namespace) -> int:
    import platform

    import torch
    import transformers

    from safecls.model.default import DEFAULT_NAME, cache_dir, gguf_path
    from safecls.version import __version__

    try:
        gguf = str(gguf_path())
    except SafeclsError as e:
        gguf = f"not installed ({e})"
    cached = cache_dir() / "models" / DEFAULT_NAME
    rows = {
        "safecls": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "default model (GGUF)": gguf,
        "default model (cached safetensors)": str(cached) + ("" if (cached / "config.json").is_file() else " (made on first use)"),
        "cache dir": str(cache_dir()),
    }
    for k, v in rows.items():
        print(f"{k:36s} {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="safecls", description="Explicit safety signals for any Hugging Face causal LM.")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="INFO (default): each stage of a long job, also in a piped log; progress bars on a terminal")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in ROOMS:
        importlib.import_module(mod).register(sub)
    info = sub.add_parser("info", help="versions, device, default model location, cache dir")
    info.set_defaults(func=_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # safecls's own messages at the asked level; other libraries' only from WARNING (or with DEBUG)
    logging.basicConfig(level="DEBUG" if args.log_level == "DEBUG" else "WARNING",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("safecls").setLevel(args.log_level)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except SafeclsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
