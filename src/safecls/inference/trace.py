"""Per-sequence safety trace: what the head said, when, under which rule, and what the engine did about it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(slots=True)
class Evaluation:
    step: int  # generation index of the newest token read (-1: the prompt's own read)
    p_malicious: float
    rule: str
    span: tuple[int, int]  # generation indexes read besides the prompt, half-open


END_REFUSAL = "end_refusal"  # a refusal that drifted back into the answer, ended after its reason


@dataclass(slots=True)
class Intervention:
    kind: str  # "insert_prefix" | "fixed_refusal" | "end_refusal"
    at: int  # generation index the reply was rolled back to
    step: int  # step at which it was decided


@dataclass(slots=True)
class SafetyTrace:
    p_initial: float | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    interventions: list[Intervention] = field(default_factory=list)
    extra_tokens: int = 0  # tokens generated and then rolled back
    final_rule: str = ""

    @property
    def evaluated_steps(self) -> list[int]:
        return [e.step for e in self.evaluations]

    @property
    def p_malicious(self) -> list[float]:
        return [e.p_malicious for e in self.evaluations]

    @property
    def intervened(self) -> bool:
        return bool(self.interventions)

    @property
    def steered_to_refusal(self) -> bool:
        """Strategic decoding made this reply a refusal (ending a reply that already refused does not count)."""
        return any(i.kind != END_REFUSAL for i in self.interventions)

    def to_dict(self) -> dict:
        return asdict(self)
