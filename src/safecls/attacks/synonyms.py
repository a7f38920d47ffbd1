"""A small built-in synonym table for AutoDAN's word-level mutation (no nltk/WordNet download).

It covers the vocabulary of role-play jailbreak templates (the AutoDAN initial prompt and its relatives): each
group lists interchangeable words; a word maps to the other members of its groups. Written for safecls.
"""

from __future__ import annotations

import functools
import re

_GROUPS = """
hypothetical imagined speculative theoretical fictional supposed
response reply answer retort reaction
describe depict portray characterize detail outline
character persona figure individual protagonist
planning plotting scheming intending preparing
plan scheme plot intend prepare
way method manner approach means
follows below thus this
rewrite rephrase reword recast redraft
perspective viewpoint standpoint vantage angle
make render craft
extremely exceedingly immensely highly remarkably
detailed thorough elaborate meticulous comprehensive
use employ utilize apply incorporate
exact precise accurate specific explicit
precise exact accurate meticulous specific
information data details particulars specifics
avoid eschew shun steer
generalizations generalities abstractions broad-strokes
vagueness ambiguity imprecision vague-language
format structure arrange organize present
list catalogue inventory enumeration rundown
imagine picture envision visualize suppose
write compose draft pen author
story tale narrative account chronicle
scene setting scenario situation
answer respond reply
question query inquiry
step stage phase
steps stages phases
instructions directions guidelines
explain clarify elucidate expound
provide supply furnish offer give
create generate produce devise
help assist aid support
ignore disregard overlook neglect
previous prior earlier preceding
rules guidelines regulations constraints
always invariably consistently
start begin commence
begin start commence initiate
important crucial vital essential
simply merely just
character's persona's figure's
completely entirely fully wholly totally
specific particular distinct explicit
""".strip().splitlines()


@functools.cache
def table() -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for line in _GROUPS:
        words = [w.replace("-", " ") for w in line.split()]
        for w in words:
            out.setdefault(w, [])
            out[w].extend(x for x in words if x != w and x not in out[w])
    return {k: tuple(v) for k, v in out.items()}


def synonyms(word: str) -> tuple[str, ...]:
    return table().get(word.lower(), ())


WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def match_case(src: str, repl: str) -> str:
    if src.isupper() and len(src) > 1:
        return repl.upper()
    if src[:1].isupper():
        return repl[:1].upper() + repl[1:]
    return repl
