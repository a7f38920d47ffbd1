"""The data room: SFT readers and mixture, reasoned refusals, pretrain-stage labelers, the starter set.

Importing the package loads neither torch nor transformers; the modules that need them (embeddings, the guard
labeler) import them themselves.
"""

from safecls.data import llama_guard  # noqa: F401  (registers the "guard" labeler, like every other one)
from safecls.data.corpus import PretrainCorpusConfig, build_pretrain_corpus
from safecls.data.labelers import LABELERS, Labeler, label_texts, make_labeler
from safecls.data.mixture import SFTMixture, SFTMixtureConfig, build_sft_mixture
from safecls.data.refusals import REFUSAL_PREFIX, is_refusal, reasoned_refusal
from safecls.data.sft_records import SFTExample, read_sft_jsonl, write_sft_jsonl
from safecls.data.starter import StarterSet, load_starter

__all__ = [
    "LABELERS", "Labeler", "PretrainCorpusConfig", "REFUSAL_PREFIX", "SFTExample", "SFTMixture", "SFTMixtureConfig",
    "StarterSet", "build_pretrain_corpus", "build_sft_mixture", "is_refusal", "label_texts", "load_starter",
    "make_labeler", "read_sft_jsonl", "reasoned_refusal", "write_sft_jsonl",
]
