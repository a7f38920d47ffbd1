"""Judges: `JUDGES.get(name)()` builds one. Importing this package registers every built-in judge."""

from safecls.eval.judges import keyword  # noqa: F401  (registers "keyword", "keyword-harmbench")
from safecls.eval.judges.base import JUDGES, Judge, Judgement, Verdict

__all__ = ["JUDGES", "Judge", "Judgement", "Verdict"]
