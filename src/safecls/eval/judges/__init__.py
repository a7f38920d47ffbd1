"""Judges: `JUDGES.get(name)()` builds one. Importing this package registers every built-in judge."""

# keyword: "keyword", "keyword-harmbench"; minilm: "minilm"; head: "safecls-head"; llm: "hexphi-gpt"
from safecls.eval.judges import head, keyword, llm, minilm  # noqa: F401  (registers the judges)
from safecls.eval.judges.base import JUDGES, Judge, Judgement, Verdict

__all__ = ["JUDGES", "Judge", "Judgement", "Verdict"]
