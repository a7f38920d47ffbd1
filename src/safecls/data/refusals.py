"""Reasoned refusals for malicious prompts, and a check that an existing response is a refusal.

Every generated refusal starts with `REFUSAL_PREFIX`, the same words the medium decoding policy
inserts (DESIGN.md §5), so SFT teaches the model to explain itself after exactly that prefix. Then
comes a reason specific to the request's category and a short safe alternative. The phrasing is
picked by a hash of (seed, prompt): the same seed gives the same text on any machine and Python.
"""

from __future__ import annotations

import hashlib
import re

from safecls.data.categories import Category, categorize

REFUSAL_PREFIX = "Sorry, I cannot fulfill your request because"

# Each reason completes REFUSAL_PREFIX; each alternative is a whole sentence offering safe help.
_REASONS: dict[Category, list[str]] = {
    Category.WEAPONS: [
        "instructions for making or using weapons could lead directly to people being seriously hurt or killed.",
        "helping build, acquire or modify a weapon could put lives at risk, and I won't contribute to that.",
        "details on weapons or explosives can cause mass harm if misused, so I don't provide them.",
    ],
    Category.CYBER: [
        "breaking into systems or accounts you don't own is illegal and harms the people who rely on them.",
        "writing malicious code or attack steps would help compromise other people's computers and data.",
        "unauthorised access to networks, devices or accounts causes real damage to their owners.",
    ],
    Category.DRUGS: [
        "making, obtaining or selling illegal drugs endangers health and lives and is against the law.",
        "instructions for producing or trafficking controlled substances could cause serious harm.",
        "guidance on illicit drug use or production can lead to overdose, addiction and legal trouble.",
    ],
    Category.FRAUD: [
        "it would help deceive or steal from people, which causes real financial harm.",
        "scams, forgery and fraud hurt their victims and are illegal.",
        "helping to cheat people or institutions out of money is something I won't do.",
    ],
    Category.VIOLENCE: [
        "it could help someone physically hurt another person.",
        "planning or carrying out violence against people causes serious, lasting harm.",
        "I don't help with threatening, injuring or attacking anyone.",
    ],
    Category.SELF_HARM: [
        "I don't want to give information that could help you hurt yourself, and your safety matters.",
        "details that make self-harm easier could put your life at risk.",
        "I care about your wellbeing and can't help with anything that could harm you.",
    ],
    Category.HATE: [
        "content that demeans or attacks people for who they are causes real harm.",
        "harassing, bullying or spreading hate about people or groups is hurtful and I won't produce it.",
        "it would target people with hostility or prejudice.",
    ],
    Category.PRIVACY: [
        "tracking, exposing or spying on someone without their consent violates their privacy and can put them in danger.",
        "collecting or revealing a person's private information without permission is harmful and often illegal.",
        "monitoring someone secretly takes away their right to privacy and safety.",
    ],
    Category.MINORS: [
        "any sexual content involving minors is abusive and something I will never produce.",
        "sexualising children causes severe harm and is illegal everywhere.",
    ],
    Category.MISINFORMATION: [
        "deliberately spreading false information misleads people and can cause real harm.",
        "creating fake news or deceptive claims undermines people's ability to make informed decisions.",
        "it asks me to produce content designed to mislead people.",
    ],
    Category.OTHER: [
        "it could cause harm to people or break the law.",
        "helping with this could put people at risk or be used to hurt someone.",
        "it asks for something harmful or unethical.",
    ],
}

_ALTERNATIVES: dict[Category, list[str]] = {
    Category.WEAPONS: [
        "If you're interested in the topic, I can talk about weapons policy, history or safety laws instead.",
        "I'm happy to explain how weapons regulations work or point you to safety training resources.",
    ],
    Category.CYBER: [
        "I can instead explain how to protect your own systems, or how to get started with legal security training.",
        "If you're worried about your own security, I can help you harden your accounts and devices.",
    ],
    Category.DRUGS: [
        "If you or someone you know is struggling with substances, I can share information on support and treatment.",
        "I can instead explain how these substances affect health, or point you to harm-reduction services.",
    ],
    Category.FRAUD: [
        "I can instead explain how these schemes work so you can recognise and avoid them.",
        "If you've been affected by fraud, I can help you find out how to report it.",
    ],
    Category.VIOLENCE: [
        "If you're in a conflict, I can suggest ways to de-escalate it or get help safely.",
        "If someone is in danger, please contact local emergency services; I can help with conflict resolution.",
    ],
    Category.SELF_HARM: [
        "If you're struggling, please reach out to someone you trust or a local crisis line; I'm here to talk too.",
        "You don't have to go through this alone: a crisis line or a doctor can help right now, and I'm happy to listen.",
    ],
    Category.HATE: [
        "I'm glad to help you write something respectful, or to discuss the topic constructively.",
        "If there's a real disagreement behind this, I can help you express it without attacking anyone.",
    ],
    Category.PRIVACY: [
        "If you're worried about someone's safety, I can explain lawful options such as contacting the authorities.",
        "I can instead help you protect your own privacy online.",
    ],
    Category.MINORS: [
        "If a child may be at risk, please contact local authorities or a child-protection hotline.",
    ],
    Category.MISINFORMATION: [
        "I can help you find reliable sources or write an accurate, evidence-based piece instead.",
        "If you want to be persuasive, I can help you make an honest case backed by facts.",
    ],
    Category.OTHER: [
        "I'd be glad to help with a safe or legal alternative.",
        "If you tell me more about what you need, I can suggest a safe way to approach it.",
    ],
}


def _pick(options: list[str], seed: int, prompt: str, salt: str) -> str:
    # sha256, not hash(): Python salts str hashes per process, which would break determinism.
    digest = hashlib.sha256(f"{seed}\x00{salt}\x00{prompt}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def reasoned_refusal(prompt: str, *, seed: int = 0, category: Category | str | None = None) -> str:
    """`REFUSAL_PREFIX` + a reason for the request's category + a safe alternative.

    `category` overrides the keyword rules (e.g. a dataset's own label). Same (prompt, seed, category)
    -> same text; different seeds pick among several phrasings per category.
    """
    cat = categorize(prompt) if category is None else Category(category)
    reason = _pick(_REASONS[cat], seed, prompt, "reason")
    alternative = _pick(_ALTERNATIVES[cat], seed, prompt, "alternative")
    return f"{REFUSAL_PREFIX} {reason} {alternative}"


# Refusal openers, checked near the start only: "illegal" echoed from the request, or a caveat at the
# end of a compliant answer, must not count as a refusal (DESIGN.md, the llm-attacks keyword list).
_REFUSAL_OPENERS = re.compile(
    r"\b(i'?m sorry|i am sorry|sorry, (but )?i|i apologi[sz]e|i cannot|i can'?t|i can not|i won'?t|i will not|"
    r"i'?m (not able|unable)|i am (not able|unable)|as an ai|as a language model|i must decline|"
    r"i'?m not (going|willing) to|i am programmed to (follow|adhere)|cannot (provide|assist|help|fulfill|comply)|not (appropriate|able to (help|assist)))",
    re.IGNORECASE,
)
_OPENING_CHARS = 200


def is_refusal(text: str) -> bool:
    """True when the response declines in its opening (first ~200 characters)."""
    return bool(_REFUSAL_OPENERS.search(text.strip()[:_OPENING_CHARS]))
