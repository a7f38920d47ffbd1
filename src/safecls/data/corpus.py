"""The pretrain-stage corpus: documents -> chunks -> labels -> `labeled.jsonl`.

Inputs are plain text (one document per file) or JSONL (one document per line, in `field`,
default "text"). Chunks are `size` characters, or `size` tokens when `unit: tokens` (needs
`tokenizer`). Character chunks end at whitespace where possible, so no word is split. Each output
line is `{"text", "label", "source", "labeler", "score", "note"}`; labels come through `label_texts`,
so a rerun with the same labeler and config reads them all from `cache_dir`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from safecls.config import StrictModel
from safecls.data.labelers import Label, Labeler, label_texts, make_labeler
from safecls.data.sft_records import iter_jsonl
from safecls.errors import DataError
from safecls.io import atomic_write

logger = logging.getLogger(__name__)


class TextSource(StrictModel):
    path: str = Field(description="A .txt file (one document) or JSONL (one document per line).")
    format: Literal["text", "jsonl"] = "text"
    field: str = Field("text", description="The JSONL key that holds the document.")
    name: str | None = Field(None, description="The chunks' `source` tag; default: the file name without suffix.")


class ChunkConfig(StrictModel):
    unit: Literal["chars", "tokens"] = "chars"
    size: int = Field(1024, gt=0, description="Chunk length in `unit`s.")
    tokenizer: str | None = Field(None, description="HF name or dir; required when unit is tokens.")

    @model_validator(mode="after")
    def _tokens_need_tokenizer(self):
        if self.unit == "tokens" and self.tokenizer is None:
            raise ValueError("unit: tokens needs a tokenizer; set chunk.tokenizer or use unit: chars")
        return self


class LabelerSpec(StrictModel):
    name: str = Field("keyword", description="A LABELERS name: keyword, guard, safecls-head.")
    options: dict[str, Any] = Field(default_factory=dict, description="The labeler's own config (validated by it).")


class PretrainCorpusConfig(StrictModel):
    inputs: list[TextSource] = Field(min_length=1)
    chunk: ChunkConfig = ChunkConfig()
    labeler: LabelerSpec = LabelerSpec()
    cache_dir: str | None = Field("runs/label-cache", description="Label cache; null: no cache.")
    batch_size: int = Field(64, gt=0, description="Texts per labeler call.")
    output: str | None = Field(None, description="Write the labeled chunks here as JSONL; null: don't write.")


@dataclass(slots=True)
class Chunk:
    text: str
    source: str


def chunk_chars(text: str, size: int) -> list[str]:
    """Pieces of at most `size` characters, cut at the last whitespace inside the window when there is one."""
    out, start, text = [], 0, text.strip()
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = text.rfind(" ", start + 1, end + 1)
            cut = max(cut, text.rfind("\n", start + 1, end + 1))
            end = cut if cut > start else end
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    return out


def chunk_tokens(text: str, size: int, tokenizer: Any) -> list[str]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = (tokenizer.decode(ids[i : i + size]).strip() for i in range(0, len(ids), size))
    return [p for p in pieces if p]


def read_documents(src: TextSource) -> list[str]:
    path = Path(src.path)
    if src.format == "text":
        if not path.is_file():
            raise DataError(path, "no such file", fix="check the path (relative to the current directory)")
        return [path.read_text(encoding="utf-8")]
    docs = []
    for n, obj in iter_jsonl(path):
        value = obj.get(src.field)
        if not isinstance(value, str):
            raise DataError(path, f"field {src.field!r} is missing or not a string", line=n,
                            fix=f"each line needs a string {src.field!r}, or set field: to the key that holds the text")
        docs.append(value)
    return docs


def build_chunks(config: PretrainCorpusConfig, tokenizer: Any = None) -> list[Chunk]:
    if config.chunk.unit == "tokens" and tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config.chunk.tokenizer)
    chunks = []
    for src in config.inputs:
        name = src.name or Path(src.path).stem
        for doc in read_documents(src):
            pieces = (chunk_chars(doc, config.chunk.size) if config.chunk.unit == "chars"
                      else chunk_tokens(doc, config.chunk.size, tokenizer))
            chunks += [Chunk(p, name) for p in pieces]
    return chunks


def build_pretrain_corpus(config: PretrainCorpusConfig, *, labeler: Labeler | None = None,
                          tokenizer: Any = None, **runtime: Any) -> list[tuple[Chunk, Label]]:
    """Chunk and label the inputs; `labeler` (or runtime objects such as `classifier=`) override the
    config's labeler construction. Writes `output` atomically when set."""
    labeler = labeler or make_labeler(config.labeler.name, config.labeler.options, **runtime)
    chunks = build_chunks(config, tokenizer)
    labels = label_texts(labeler, [c.text for c in chunks], cache_dir=config.cache_dir, batch_size=config.batch_size)
    pairs = list(zip(chunks, labels))
    if config.output is not None:
        lines = (json.dumps({"text": c.text, "label": lab.label, "source": c.source, "labeler": labeler.name,
                             "score": lab.score, "note": lab.note}, ensure_ascii=False) for c, lab in pairs)
        atomic_write(config.output, "".join(line + "\n" for line in lines))
        logger.info("wrote %d labeled chunks (%d malicious) to %s", len(pairs), sum(lab.label for _, lab in pairs), config.output)
    return pairs
