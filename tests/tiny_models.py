"""Tiny random-weight Hugging Face causal LMs, built locally from configs (never the Hub).

``build_tiny(name, directory)`` writes a 2-block model of one architecture plus a small
word-level tokenizer into ``directory`` with ``save_pretrained``, so it loads exactly as a
downloaded checkpoint would (``AutoModelForCausalLM.from_pretrained(directory)``).

Weights are re-drawn after construction (seeded) at a scale where every sublayer moves
the residual stream visibly and every norm has non-trivial weights: with Hugging Face's
default ``initializer_range=0.02`` and unit norms, reading the wrong site (or the wrong
side of a norm) could differ by less than a test tolerance.

Directory names matter to TransformerLens's loader (it guesses the architecture from a
path containing "llama" or "gemma"), so callers should use neutral names; see
``tests/test_architectures.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

VOCAB_SIZE = 100
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
WORDS = (
    "the a an of to in and is was it that on for as with his her they at be this from "
    "cat dog bird fish tree house car road city river sun moon star sky rain snow "
    "red blue green black white big small old new good bad hot cold fast slow "
    "run walk eat see go come make take give find think know say tell ask "
    "one two three four five six seven eight nine ten paris france rome italy "
    "b c d e f g h i j k l m n o p q r s t u"
).split()
TOKENS = SPECIALS + list(dict.fromkeys(WORDS))[: VOCAB_SIZE - len(SPECIALS)]
SEED = 1234

#: architectures with a builder; "gpt_neox" is Pythia-style (parallel residual).
ARCH_NAMES = ("gpt2", "gpt_neox", "gpt_neox_sequential", "llama", "mistral", "qwen2", "qwen3",
              "gemma2")

_COMMON_IDS = dict(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
_LLAMA_DIMS = dict(
    vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
)


def _configs() -> dict[str, Callable[[], Any]]:
    import transformers as tf

    return {
        "gpt2": lambda: tf.GPT2Config(
            vocab_size=VOCAB_SIZE, n_positions=64, n_embd=32, n_layer=2, n_head=4,
            **_COMMON_IDS),
        "gpt_neox": lambda: tf.GPTNeoXConfig(
            vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, use_parallel_residual=True,
            rope_parameters={"rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                             "rope_type": "default"},
            **_COMMON_IDS),
        "gpt_neox_sequential": lambda: tf.GPTNeoXConfig(
            vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, use_parallel_residual=False,
            rope_parameters={"rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                             "rope_type": "default"},
            **_COMMON_IDS),
        "llama": lambda: tf.LlamaConfig(**_LLAMA_DIMS, **_COMMON_IDS),
        "mistral": lambda: tf.MistralConfig(**_LLAMA_DIMS, sliding_window=6, **_COMMON_IDS),
        "qwen2": lambda: tf.Qwen2Config(**_LLAMA_DIMS, **_COMMON_IDS),
        "qwen3": lambda: tf.Qwen3Config(**_LLAMA_DIMS, head_dim=8, **_COMMON_IDS),
        "gemma2": lambda: tf.Gemma2Config(
            **_LLAMA_DIMS, head_dim=8, query_pre_attn_scalar=8, sliding_window=6,
            layer_types=["sliding_attention", "full_attention"],
            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, **_COMMON_IDS),
        # unsupported by the nnsight back-end's ARCHITECTURES table (for the error test)
        "opt": lambda: tf.OPTConfig(
            vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
            num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32,
            **_COMMON_IDS),
    }


def build_tokenizer() -> Any:
    """A word-level fast tokenizer over :data:`TOKENS`, with pad/bos/eos/unk."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(TOKENS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", padding_side="left",
    )


def _randomize(model: Any, seed: int) -> None:
    """Redraw every parameter, seeded: O(1) activations and non-trivial norm weights."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    gemma = model.config.model_type == "gemma2"  # Gemma's RMSNorm scales by (1 + weight)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim >= 2:
                fan_in = min(p.shape[0], p.shape[1])
                p.copy_(noise / fan_in**0.5)
            elif "norm" in name or ".ln" in name or name.startswith("ln"):
                if name.endswith("weight"):
                    p.copy_(0.3 * noise if gemma else 1.0 + 0.3 * noise)
                else:
                    p.copy_(0.1 * noise)
            else:  # biases
                p.copy_(0.1 * noise)


def build_tiny(name: str, directory: str | Path, *, seed: int = SEED) -> Path:
    """Build the tiny ``name`` model, save model + tokenizer into ``directory``; return it."""
    import torch
    from transformers import AutoModelForCausalLM

    configs = _configs()
    if name not in configs:
        raise KeyError(f"no tiny builder for {name!r}; have {sorted(configs)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = configs[name]()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    _randomize(model, seed)
    model.eval()
    model.save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return directory
