"""Attacks: direct (none), prefill, nested, decoding-parameter, GCG (+ adaptive, + transfer), AutoDAN and PAP behind
one interface.

    from safecls.attacks import ATTACKS, AttackItem, LocalTarget
    attack = ATTACKS.get("prefill")()
    records = attack.run(LocalTarget.from_model(model), [AttackItem(id="x/0", prompt="...")], {"num_tokens": [10]})

Importing this package registers every attack in ATTACKS.
"""

from safecls.attacks import autodan, decoding_grid, direct, gcg, nested, pap, prefill, transfer  # noqa: F401
from safecls.attacks.base import ATTACKS, Attack, AttackItem, AttackRecord
from safecls.attacks.target import Generation, LocalTarget, OpenAITarget, Target, TargetError

__all__ = ["ATTACKS", "Attack", "AttackItem", "AttackRecord", "Generation", "LocalTarget", "OpenAITarget", "Target",
           "TargetError"]
