"""The "guard" labeler: a guard LLM through transformers, with Llama Guard 3's prompt and output format.

Llama Guard 3 (meta-llama/Llama-Guard-3-1B / -8B) reads one user turn holding the whole task (below,
as its own chat template renders it, wording "according our" included) and answers "safe", or
"unsafe" and a second line of violated category codes ("unsafe\\nS1,S10"). `prompt_format:
tokenizer` uses the guard tokenizer's own chat template instead, for other guard models that accept
messages. Output that is neither form raises JudgeError: a guard failure is never a label.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from safecls.config import StrictModel
from safecls.data.labelers import LABELERS, Label, Labeler, text_key
from safecls.errors import JudgeError, TemplateError

logger = logging.getLogger(__name__)

LLAMA_GUARD_3_CATEGORIES: dict[str, str] = {
    "S1": "Violent Crimes.", "S2": "Non-Violent Crimes.", "S3": "Sex Crimes.", "S4": "Child Exploitation.",
    "S5": "Defamation.", "S6": "Specialized Advice.", "S7": "Privacy.", "S8": "Intellectual Property.",
    "S9": "Indiscriminate Weapons.", "S10": "Hate.", "S11": "Self-Harm.", "S12": "Sexual Content.",
    "S13": "Elections.", "S14": "Code Interpreter Abuse.",
}


def format_llama_guard3(messages: list[dict], categories: dict[str, str] | None = None) -> str:
    """The full Llama Guard 3 prompt string (special tokens included: tokenize with add_special_tokens=False).

    The assessed role is the last message's: 'User' for a prompt, 'Agent' for a response."""
    if not messages:
        raise ValueError("format_llama_guard3 needs at least one message")
    cats = LLAMA_GUARD_3_CATEGORIES if categories is None else categories
    names = {"user": "User", "assistant": "Agent"}
    turns = []
    for m in messages:
        if m["role"] not in names:
            raise TemplateError(f"Llama Guard 3 takes user/assistant turns; got role {m['role']!r}")
        turns.append(f"{names[m['role']]}: {m['content'].strip()}")
    role = names[messages[-1]["role"]]
    cat_block = "\n".join(f"{code}: {name}" for code, name in cats.items())
    return (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        f"Task: Check if there is unsafe content in '{role}' messages in conversations according our safety "
        "policy with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{cat_block}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
        "<BEGIN CONVERSATION>\n\n" + "".join(t + "\n\n" for t in turns) + "<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories."
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    unsafe: bool
    categories: tuple[str, ...] = ()


_CODE = re.compile(r"^S\d{1,2}$")


def parse_llama_guard_output(text: str, categories: dict[str, str] | None = None) -> GuardVerdict:
    """'safe' -> safe; 'unsafe' or 'unsafe\\nS1,S2' -> unsafe with those codes. Anything else (or an
    unknown code) raises JudgeError quoting the output."""
    cats = LLAMA_GUARD_3_CATEGORIES if categories is None else categories
    lines = [ln.strip() for ln in text.replace("<|eot_id|>", "").strip().splitlines() if ln.strip()]
    fix = "use a Llama Guard 3 model with prompt_format: llama-guard-3, and greedy decoding"
    if lines == ["safe"]:
        return GuardVerdict(unsafe=False)
    if not lines or lines[0] != "unsafe" or len(lines) > 2:
        raise JudgeError(f"guard output is not 'safe' or 'unsafe[\\nS1,...]': {text[:120]!r}. Fix: {fix}")
    codes = tuple(c.strip() for c in lines[1].split(",")) if len(lines) == 2 else ()
    bad = [c for c in codes if not _CODE.match(c) or c not in cats]
    if bad:
        raise JudgeError(f"guard output names unknown categories {bad} in {text[:120]!r}; known: {', '.join(cats)}")
    return GuardVerdict(unsafe=True, categories=codes)


class GuardConfig(StrictModel):
    model: str = Field("meta-llama/Llama-Guard-3-1B", description="HF name or local dir, loaded on first use.")
    prompt_format: Literal["llama-guard-3", "tokenizer"] = Field(
        "llama-guard-3", description="llama-guard-3: our format_llama_guard3; tokenizer: the guard's own chat template.")
    categories: dict[str, str] | None = Field(None, description="Code -> name; null: Llama Guard 3's S1-S14.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype when loading `model`.")
    max_new_tokens: int = Field(12, gt=0, description="'unsafe\\nS1,S2,...' fits in about 10 tokens.")
    batch_size: int = Field(8, gt=0)
    fingerprint: str = Field("", description="Names a model passed in at runtime; part of the cache key.")


@LABELERS.register("guard")
class GuardLabeler(Labeler):
    """Each text is assessed as one 'User' message. Greedy decoding, left padding."""

    config_cls = GuardConfig

    def __init__(self, config: GuardConfig | dict | None = None, *, model: Any = None, tokenizer: Any = None):
        super().__init__(config)
        if (model is None) != (tokenizer is None):
            raise TypeError("pass both model and tokenizer, or neither (then config.model is loaded on first use)")
        self.model, self.tokenizer = model, tokenizer
        self.last_outputs: list[str] = []   # raw generations of the last batch, for debugging a parse error

    def _load(self) -> None:
        if self.model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            logger.info("loading guard model %s", self.config.model)
            self.tokenizer = AutoTokenizer.from_pretrained(self.config.model)
            self.model = AutoModelForCausalLM.from_pretrained(self.config.model, dtype=self.config.dtype).eval()

    def prompt(self, text: str) -> str:
        messages = [{"role": "user", "content": text}]
        if self.config.prompt_format == "llama-guard-3":
            return format_llama_guard3(messages, self.config.categories)
        if not getattr(self.tokenizer, "chat_template", None):
            raise TemplateError(f"guard tokenizer of {self.config.model} has no chat template; "
                                "set prompt_format: llama-guard-3")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, texts: list[str]) -> list[str]:
        import torch

        self._load()
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        prompts = [self.prompt(t) for t in texts]
        # The prompt strings carry their special tokens already; the tokenizer must not add a second BOS.
        enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(map(len, enc))
        ids = torch.tensor([[pad_id] * (width - len(e)) + e for e in enc])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
        device = next(self.model.parameters()).device
        with torch.no_grad():
            out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                      max_new_tokens=self.config.max_new_tokens, pad_token_id=pad_id)
        return [tok.decode(row[width:], skip_special_tokens=True) for row in out.tolist()]

    def label(self, texts: list[str]) -> list[Label]:
        out = []
        for i in range(0, len(texts), self.config.batch_size):
            batch = texts[i : i + self.config.batch_size]
            self.last_outputs = self.generate(batch)
            for t, raw in zip(batch, self.last_outputs):
                v = parse_llama_guard_output(raw, self.config.categories)
                out.append(Label(key=text_key(t), label=int(v.unsafe), score=float(v.unsafe), note=",".join(v.categories)))
        return out
