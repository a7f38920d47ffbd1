"""Where the judge's labelled data lives and how it is read.

- Hand-labelled model replies to safety-sft prompts (`train_labels.jsonl`) and the hand labels of the base model's
  greedy completions (`base_completion_labels.jsonl`) ship in `safecls/resources/judge/training/`: our own models'
  replies and safety-sft row ids, no third-party text.
- The evaluation fixture (`tests/fixtures/judge_labels.jsonl` in a checkout) holds ids, replies and labels; its
  prompts are loaded from the shared data folder. Its `split` is fixed by prompt id (`split_of`): dev chooses the
  judge's settings, held-out only measures it.
- Prompts (safety-sft, benign-sft, AdvBench, MaliciousInstruct) come from the shared data folder (`../shared/data`
  beside a checkout); every function takes it as an argument.

The held-out split is read with labels only by `fixture_rows(..., split="heldout")`, which `evaluate` calls;
`overlap.heldout_pairs` reads its texts without labels so that the training side can drop copies of them. Everything
that fits or chooses (training, calibration, suspects) passes what it receives through `require_no_heldout`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

from safecls.data.files import iter_jsonl
from safecls.errors import DataError
from safecls.eval.judges.minilm import LABELS as _VERDICTS
from safecls.eval.judges.training.styles import restyle

logger = logging.getLogger(__name__)

LABELS: tuple[str, ...] = tuple(v.value for v in _VERDICTS)  # the head's output order
COMPLY, REFUSE, OFF = LABELS
EVAL_BENCHMARKS = ("advbench", "maliciousinstruct")  # the fixture's prompts; never trained on
SAFETY_FILE = Path("safety-sft") / "safety_only_data_Instructions.json"
BENIGN_FILES = tuple(Path("benign-sft") / n for n in ("alpaca_en_demo.json", "lima.json", "code_alpaca_2k.json"))

# CLI defaults, relative to the working directory (a checkout): the shared data beside it, its fixture, scratch files.
DEFAULT_DATA_DIR = Path("../shared/data")
DEFAULT_FIXTURE = Path("tests/fixtures/judge_labels.jsonl")
DEFAULT_WORK_DIR = Path("runs/judge")

Split = Literal["dev", "heldout"]


class TrainRow(NamedTuple):
    """One (prompt, response, label) the judge is fitted on; `source` says how it was made, `id` its prompt's id."""

    prompt: str
    response: str
    label: str
    source: str
    id: str = ""


def resource_dir() -> Path:
    """The packaged hand labels (`safecls/resources/judge/training/`)."""
    return Path(str(resources.files("safecls") / "resources" / "judge" / "training"))


def default_train_labels() -> Path:
    return resource_dir() / "train_labels.jsonl"


def default_base_labels() -> Path:
    return resource_dir() / "base_completion_labels.jsonl"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One object per non-empty line.

    Raises:
        DataError: the file is missing or a line is not JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "not found", fix="pass the right path (see `safecls judge --help`)")
    return [row for _, row in iter_jsonl(path)]


def _read_json(data_dir: Path, rel: Path) -> Any:
    path = Path(data_dir) / rel
    if not path.is_file():
        raise DataError(path, "not found", fix="pass --data-dir the shared data folder (with safety-sft/, benign-sft/)")
    return json.loads(path.read_text(encoding="utf-8"))


def safety_instructions(data_dir: Path) -> list[dict[str, Any]]:
    """safety-sft rows ({"instruction", "input", "output"}); a row's index is its id (`safety-sft/<index>`)."""
    return _read_json(data_dir, SAFETY_FILE)


def benign_examples(data_dir: Path) -> list[dict[str, Any]]:
    """Alpaca, LIMA and Code Alpaca rows of benign-sft, in that order."""
    return [ex for rel in BENIGN_FILES for ex in _read_json(data_dir, rel)]


def safety_row(item_id: str) -> int:
    """`safety-sft/17` -> 17."""
    source, _, row = item_id.partition("/")
    if source != "safety-sft" or not row.isdigit():
        raise ValueError(f"not a safety-sft id: {item_id!r}")
    return int(row)


def split_of(item_id: str) -> Split:
    """By prompt id, so one prompt never sits in both parts: 40% dev, 60% held out."""
    return "dev" if int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % 5 < 2 else "heldout"


def is_heldout_id(item_id: str) -> bool:
    """An evaluation prompt of the fixture's held-out split (ids of other sources are never held out)."""
    return item_id.split("/")[0] in EVAL_BENCHMARKS and split_of(item_id) == "heldout"


def require_no_heldout(rows: Iterable[TrainRow | dict[str, Any]], where: str) -> None:
    """Stop before fitting or choosing anything on a held-out row (by its `split` or its prompt id).

    Raises:
        DataError: a held-out row was given.
    """
    for r in rows:
        rid, split = (r.get("id", ""), r.get("split")) if isinstance(r, dict) else (r.id, None)
        if split == "heldout" or is_heldout_id(rid):
            raise DataError(where, f"held-out fixture row {rid or '(no id)'} given",
                            fix="only `safecls judge evaluate` reads the held-out split; pass training or dev rows")


def read_base_labels(path: Path | None = None) -> dict[int, str]:
    """{safety-sft row: label} of the base model's greedy completions read by hand (default: the packaged file)."""
    path = Path(path) if path is not None else default_base_labels()
    out = {}
    for n, r in enumerate(read_jsonl(path), 1):
        if r.get("label") not in LABELS:
            raise DataError(path, f"label {r.get('label')!r} is not one of {', '.join(LABELS)}", line=n)
        out[safety_row(r["id"])] = r["label"]
    return out


def labelled_model_rows(data_dir: Path, labels: Path | None = None) -> list[TrainRow]:
    """Hand-labelled replies of the base, plain-SFT and safecls models to safety-sft prompts (default: the packaged
    `train_labels.jsonl`); a row with a `style` was asked in that evaluation style (`styles.restyle`)."""
    path = Path(labels) if labels is not None else default_train_labels()
    safety = safety_instructions(data_dir)
    rows = []
    for n, r in enumerate(read_jsonl(path), 1):
        if r.get("label") not in LABELS:
            raise DataError(path, f"label {r.get('label')!r} is not one of {', '.join(LABELS)}", line=n)
        instruction = safety[safety_row(r["id"])]["instruction"]
        prompt = restyle(instruction, r["style"])[0] if "style" in r else instruction
        source = f"labelled-{r['model']}" + ("-styled" if "style" in r else "")
        rows.append(TrainRow(prompt, r["response"], r["label"], source, r["id"]))
    return rows


def benchmark_prompts(ids: Iterable[str], data_dir: Path) -> dict[str, str]:
    """{benchmark item id: prompt} for these ids' benchmarks (`advbench/0017` -> AdvBench's row 17)."""
    from safecls.data.benchmarks import load_benchmark

    prompts: dict[str, str] = {}
    for bench in sorted({i.split("/")[0] for i in ids}):
        prompts |= {it.id: it.prompt for it in load_benchmark(bench, Path(data_dir) / bench)}
    return prompts


def read_fixture(fixture: Path, split: Split | None) -> list[dict[str, Any]]:
    """The fixture's rows of one split (None: every row, in file order: `evaluate` only), without prompts.

    Raises:
        DataError: a row's `split` is not the one its prompt id gives (`split_of`).
    """
    out = []
    for n, r in enumerate(read_jsonl(fixture), 1):
        if r.get("split") != split_of(r["id"]):
            raise DataError(fixture, f"{r['id']} has split {r.get('split')!r} but its id gives {split_of(r['id'])!r}",
                            line=n, fix="the split is fixed by prompt id (split_of); do not edit it")
        if split is None or r["split"] == split:
            out.append(r)
    return out


def fixture_rows(fixture: Path, data_dir: Path, split: Split | None) -> list[dict[str, Any]]:
    """The fixture's rows of one split (None: all) with `prompt` loaded from the benchmark files. Only `evaluate`
    asks for held-out rows."""
    rows = read_fixture(fixture, split)
    prompts = benchmark_prompts((r["id"] for r in rows), data_dir)
    return [r | {"prompt": prompts[r["id"]]} for r in rows]


def read_line_labels(path: Path) -> dict[int, str]:
    """'<line number> <C|R|O>' per line -> {line: label}.

    Raises:
        DataError: a line is not '<number> <C|R|O>'.
    """
    code = {"C": COMPLY, "R": REFUSE, "O": OFF}
    out = {}
    for k, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or parts[1] not in code:
            raise DataError(path, f"{line!r} is not '<line number> <C|R|O>'", line=k)
        out[int(parts[0])] = code[parts[1]]
    return out


def join_labels(responses: list[Path], labels: list[Path], out: Path, *, with_split: bool = True) -> int:
    """Join unlabelled replies with hand labels (one '<line> <C|R|O>' file per replies file) into a labelled JSONL:
    the fixture (`with_split`: each row gets its `split_of`) or training labels (no split). Returns rows written.

    Raises:
        DataError: the two lists differ in length.
    """
    if len(responses) != len(labels):
        raise DataError(out, f"{len(responses)} replies files but {len(labels)} labels files",
                        fix="pass one labels file per replies file, in the same order")
    written = 0
    with Path(out).open("w", encoding="utf-8") as f:
        for responses_path, labels_path in zip(responses, labels):
            lab = read_line_labels(labels_path)
            for n, r in enumerate(read_jsonl(responses_path)):
                if n not in lab:
                    logger.warning("%s line %d (%s %s) has no label; left out", responses_path, n, r["id"], r["attack"])
                    continue
                style = {"style": r["style"]} if "style" in r else {}  # a restyled safety-sft prompt
                row = {"id": r["id"], **style, "attack": r["attack"], "model": r["model"], "params": r["params"],
                       "response": r["response"][:600], "label": lab[n]}
                if with_split:
                    row["split"] = split_of(r["id"])
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
    return written
