"""``tiny-llama``: a random 2-layer Llama and a small byte-level BPE tokenizer, built in memory for tests.

The tokenizer is trained deterministically on generated prose, the noise sentence and digits, so
numbers, words and UUIDs all tokenize the way a real BPE would (with merges), at a vocabulary of 1024.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import torch

from longreach.tasks.filler import NOISE, prose_sentence

TINY_WINDOW = 2048


@functools.cache
def tiny_tokenizer() -> Any:
    """A PreTrainedTokenizerFast with a 1024-token byte-level BPE vocabulary (no BOS, ``</s>`` as EOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [prose_sentence(rng) for _ in range(4000)] + [NOISE] * 50
    corpus += [" ".join(str(rng.randint(0, 10**7)) for _ in range(50)) for _ in range(50)]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="</s>")


def tiny_llama(dtype: torch.dtype) -> torch.nn.Module:
    """LlamaForCausalLM with 2 layers, 4 query / 2 KV heads of dim 16, RoPE base 10000, window 2048."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=TINY_WINDOW,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    for parameter in model.parameters():  # buffers (RoPE inv_freq) stay float32, as from_pretrained keeps them
        parameter.data = parameter.data.to(dtype)
    return model.eval()
