"""Safety-recovery augmentation (Qi et al. 2024, "Safety Alignment Should Be Made More Than Just a
Few Tokens Deep", §3): the assistant turn starts with the first k words of a harmful answer and then
switches to a refusal, so the model learns to recover after a harmful start (the prefill attack).

The harmful prefix comes from the example's `harmful_response` field when the source has one (Qi et
al.'s data pairs each prompt with one; no public file here does). Otherwise we build a generic
compliance opener from the request, e.g. "Write a guide on X" -> "Sure, here is a guide on X. Step 1:".
Only its first k words are used, so the opener need only look like the start of compliance. The
prefix is marked with `masked_prefix_chars`: like Qi et al., the loss is on the refusal only.
"""

from __future__ import annotations

import random
import re

from pydantic import Field, model_validator

from safecls.config import StrictModel
from safecls.data.refusals import reasoned_refusal
from safecls.data.sft_records import Message, SFTExample

AUGMENT_SOURCE = "qi-augment"


class QiAugmentConfig(StrictModel):
    fraction: float = Field(0.5, gt=0, le=1, description="Share of train malicious examples that get one augmented copy (added, not replaced).")
    min_words: int = Field(1, ge=1, description="Fewest harmful-prefix words before the refusal.")
    max_words: int = Field(12, ge=1, description="Most harmful-prefix words before the refusal (Qi et al. sample up to ~100 tokens).")

    @model_validator(mode="after")
    def _range(self):
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) > max_words ({self.max_words}); set min_words <= max_words")
        return self


_LEAD_INS = re.compile(r"^(please|can you|could you|would you|will you|i want you to|i need you to|help me)\s+", re.I)
_HOW = re.compile(r"^(?:tell me |explain |show me )?how (?:do|can|could|would|should|might) (?:i|you|we|one|someone) (?P<rest>.+)$", re.I)
_HOW_TO = re.compile(r"^(?:tell me |explain |show me )?how to (?P<rest>.+)$", re.I)
_BEST_WAY = re.compile(r"^what(?:'s| is| are) (?P<rest>(?:the|some) (?:best |easiest |most effective )?(?:way|ways|method|methods) .+)$", re.I)
_MAKE_VERBS = re.compile(r"^(?:write|create|draft|generate|develop|design|produce|compose|give me|give|provide|outline|"
                         r"list|suggest|prepare|make|build|describe|share|offer)\s+(?:me\s+)?(?P<rest>.+)$", re.I)


def compliance_opener(request: str) -> str:
    """A generic 'Sure, here is ...' opener built from the request (AdvBench-target style)."""
    text = " ".join(request.split()).rstrip(" ?.!")
    for _ in range(2):  # "Can you please ..." has two lead-ins
        text = _LEAD_INS.sub("", text)
    if m := _HOW.match(text) or _HOW_TO.match(text):
        body = f"how to {m.group('rest')}"
    elif m := _BEST_WAY.match(text):
        body = m.group("rest")
    elif m := _MAKE_VERBS.match(text):
        body = m.group("rest")
    else:
        body = f"how to {text[:1].lower()}{text[1:]}" if text else "what you asked for"
    return f"Sure, here is {body}. Step 1:"


def harmful_prefix(example_prompt: str, harmful_response: str | None, n_words: int) -> str:
    source = harmful_response.strip() if harmful_response and harmful_response.strip() else compliance_opener(example_prompt)
    return " ".join(source.split()[:n_words])


def augment(example: SFTExample, *, rng: random.Random, config: QiAugmentConfig, seed: int,
            harmful_response: str | None = None, category: str | None = None) -> SFTExample:
    """One recovery example for a malicious `example`: prefix words, then a reasoned refusal."""
    if example.label != 1:
        raise RuntimeError(f"Qi augmentation is for malicious examples; got label {example.label} from {example.source}")
    user = "\n".join(m.content for m in example.prompt_messages if m.role == "user")
    k = rng.randint(config.min_words, config.max_words)
    prefix = harmful_prefix(user, harmful_response, k)
    refusal = reasoned_refusal(user, seed=seed, category=category)
    # The prefix stops mid-sentence and the refusal follows it directly, as in Qi et al.'s data: the model learns
    # to recover from any point of a harmful answer, wherever an attacker's prefill stops.
    response = f"{prefix} {refusal}"
    return SFTExample(messages=[*example.prompt_messages, Message(role="assistant", content=response)],
                      label=1, source=AUGMENT_SOURCE, masked_prefix_chars=len(prefix) + 1)
