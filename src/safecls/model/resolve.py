"""What `--model` (and an eval config's `path`) means, in one place, for generate, chat, attack, eval and serve.

    default      the defended model that ships in the package (docs/MODEL_CARD.md)
    base         the embedded SmolLM2-135M-Instruct, plain: no [CLS], no head (the undefended base)
    untrained    the embedded base with an untrained [CLS] head (its P(malicious) is noise; for development)
    plain:PATH   any HF causal LM folder or hub id, plain
    DIR          a safecls checkpoint folder (one trained with_cls: false decodes as the plain model it is)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safecls.errors import ConfigError
from safecls.model.shipped import SHIPPED_NAME

logger = logging.getLogger(__name__)

BASE, UNTRAINED, PLAIN = "base", "untrained", "plain:"
# a checkpoint's recorded base may also read "default", the embedded model's name in checkpoint files
EMBEDDED_REFS = (BASE, "default")


def is_embedded(ref: object) -> bool:
    """True where a base-model reference (not a --model reference) names the embedded SmolLM2."""
    return str(ref) in EMBEDDED_REFS

MODEL_HELP = ("default (the shipped defended model) | base (the embedded SmolLM2, plain) | untrained (base + an "
              "untrained head) | plain:PATH | a safecls checkpoint folder")


@dataclass(slots=True)
class Resolved:
    ref: str
    model: Any  # a SafeClsModel, or a plain HF causal LM
    tokenizer: Any
    safecls: bool  # True: a SafeClsModel (model.with_cls may still be False)

    @property
    def name(self) -> str:
        """A short name for logs and the served model id."""
        if self.ref in (SHIPPED_NAME, BASE, UNTRAINED):
            return f"safecls-{self.ref}"
        return self.ref.removeprefix(PLAIN).rstrip("/").split("/")[-1]


def check_model_ref(ref: str, where: str = "--model") -> None:
    """Raises ConfigError (naming `where` and the valid forms) unless `ref` can be resolved; loads nothing."""
    from safecls.model.checkpoint import is_checkpoint

    if ref in (SHIPPED_NAME, BASE, UNTRAINED) or (ref.startswith(PLAIN) and len(ref) > len(PLAIN)):
        return
    if not is_checkpoint(Path(ref).expanduser()):
        raise ConfigError(f"{where}: {ref!r} is not a safecls checkpoint (no safecls_config.json). Fix: pass "
                          f"{MODEL_HELP}")


def resolve_model(ref: str, *, dtype: Any = None, device: str | None = None) -> Resolved:
    """Load what `ref` names (see the module docstring).

    Raises:
        ConfigError: `ref` is none of the forms above.
    """
    from safecls.model.loading import load_base
    from safecls.model.safecls_model import SafeClsModel

    check_model_ref(ref)
    if ref == BASE or ref.startswith(PLAIN):
        hf, tok = load_base(ref.removeprefix(PLAIN), dtype=dtype)
        return Resolved(ref, hf.to(device) if device else hf, tok, safecls=False)
    if ref == UNTRAINED:
        logger.warning("'untrained': the embedded base with an UNTRAINED safety head; its P(malicious) is noise")
        m = SafeClsModel.from_base(*load_base(BASE, dtype=dtype))
        return Resolved(ref, m.to(device) if device else m, m.tokenizer, safecls=True)
    m = SafeClsModel.from_pretrained(ref if ref == SHIPPED_NAME else Path(ref).expanduser(), dtype=dtype, device=device)
    return Resolved(ref, m, m.tokenizer, safecls=True)
