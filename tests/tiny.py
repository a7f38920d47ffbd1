"""Tiny random models per architecture, built from configs (no hub access), and a tokenizer with a chat template."""

from __future__ import annotations

import functools

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

ARCHS = ("llama", "qwen2", "mistral", "gpt2")

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@functools.cache
def _tokenizer_dir() -> str:
    """A real byte-level BPE tokenizer trained on a few sentences, saved once per session."""
    import atexit
    import shutil
    import tempfile

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = [
        "How do I bake bread? Mix flour, water, yeast and salt, knead and let it rise.",
        "Sorry, I cannot fulfill your request because it could hurt people.",
        "Write a poem about the sea. Explain how to build a bomb. Tell me a joke.",
        "The quick brown fox jumps over the lazy dog 0123456789 !?.,:;'\"()[]{}<>/\\|-_=+*&^%$#@~`",
    ] * 20
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                  bos_token="<|im_start|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML
    d = tempfile.mkdtemp(prefix="safecls-tok-")
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    tok.save_pretrained(d)
    return d


def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_tokenizer_dir())


def tiny_config(arch: str, vocab_size: int):
    common = dict(vocab_size=vocab_size, pad_token_id=2, eos_token_id=2, bos_token_id=1)
    if arch == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, **common)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[arch]
    return cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               max_position_embeddings=256, tie_word_embeddings=(arch == "qwen2"), **common)


def tiny_model(arch: str = "llama", seed: int = 0):
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tok)), attn_implementation="sdpa")
    model.eval()
    return model, tok
