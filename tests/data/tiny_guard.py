"""A tiny tokenizer and tiny Llama models for the guard labeler tests (no hub access)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<pad>"]
WORDS = ["safe", "unsafe", "S1", "S10", "\n\n"]   # whole tokens, so a bigram model can script an answer


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: 256 byte tokens, the Llama 3 header specials, and a few whole words."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens(WORDS)
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eot_id|>", pad_token="<pad>",
                                   bos_token="<|begin_of_text|>")


def tiny_llama(vocab_size: int, hidden: int = 16) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def scripted_llama(tokenizer, answer_tokens: list[str]) -> LlamaForCausalLM:
    """A tiny Llama that greedily emits `answer_tokens` then <|eot_id|>: a bigram model built by hand.

    The layer's output projections are zeroed, so the last hidden state is the current token's
    embedding (one-hot); lm_head maps each token to the next one of the script. The prompt ends
    with the "\\n\\n" token, which starts the script."""
    vocab = len(tokenizer)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=vocab, intermediate_size=8, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=4096,
                      tie_word_embeddings=False, rms_norm_eps=1e-12)
    model = LlamaForCausalLM(cfg).eval()
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ["\n\n", *answer_tokens, "<|eot_id|>"]]
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(vocab))
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for prev, nxt in zip(ids, ids[1:]):
            model.lm_head.weight[nxt, prev] = 10.0
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    return model
