"""Tiny random models of the architecture families ``transformers`` ships, built offline.

Each family is a config class of ``transformers`` with a few overrides that make it tiny (2
layers, d_model 64, 4 heads) and valid for that family (its own field names: head_dim,
rotary_dim, sliding windows, layer types, state sizes).  :func:`build` makes the model (eval
mode, norms with random gains so that a decomposition that ignores a norm is caught), saves it
with the word-level tokenizer of :mod:`tests.conftest` (``w0 .. w99``, vocab 102) into a folder
that :func:`interp.load` takes, and returns both.  Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 102
BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)
MHA = dict(num_key_value_heads=4)  # families without grouped-query attention

#: family (transformers' model_type) -> config overrides
FAMILIES: dict[str, dict] = {
    # pre-norm decoders with rotary embeddings
    "llama": {},
    "qwen2": {},
    "qwen3": dict(head_dim=16),
    "mistral": dict(sliding_window=8),
    "phi3": {},
    "granite": {},
    "cohere": {},
    "starcoder2": {},
    "olmo": MHA,
    # Gemma: scaled embeddings, (1 + w) norms; Gemma-2/3: sandwich norms, soft-capping, sliding windows
    "gemma": dict(head_dim=16),
    "gemma2": dict(head_dim=16, sliding_window=8),
    "gemma3_text": dict(head_dim=16, sliding_window=8),
    # post-norm (norms after attention and MLP only)
    "olmo2": MHA,
    # partial rotary, LayerNorm with bias
    "stablelm": {},
    "phi": MHA,
    # learned positions / ALiBi, LayerNorm
    "gpt2": MHA,
    "opt": dict(MHA, ffn_dim=128, word_embed_proj_dim=64),
    "bloom": MHA,
    "gpt_neo": dict(MHA, attention_types=[[["global", "local"], 1]], window_size=8),
    # parallel attention and MLP
    "gpt_neox": MHA,
    "gptj": dict(MHA, rotary_dim=8),
    "codegen": dict(MHA, rotary_dim=8),
    "falcon": dict(new_decoder_architecture=False, multi_query=True),
    # mixture of experts
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=64
    ),
    # state-space and recurrent
    "mamba": dict(state_size=8, expand=2, conv_kernel=4),
    "falcon_mamba": dict(state_size=8, expand=2, conv_kernel=4),
    "mamba2": dict(num_heads=8, head_dim=16, expand=2, n_groups=1, state_size=8, conv_kernel=4, chunk_size=8),
    "rwkv": dict(attention_hidden_size=64, context_length=128),
    "xlstm": dict(num_heads=4, qk_dim_factor=1.0, v_dim_factor=1.0, chunk_size=8, autocast_kernel_dtype="float32"),
    # hybrids: attention in some layers only
    "recurrent_gemma": dict(
        block_types=["recurrent", "attention"],
        lru_width=64,
        attention_window_size=16,
        num_key_value_heads=1,
        head_dim=16,
    ),
    "jamba": dict(
        attn_layer_period=2,
        attn_layer_offset=1,
        expert_layer_period=2,
        expert_layer_offset=1,
        num_experts=2,
        mamba_d_state=8,
        mamba_expand=2,
    ),
    "zamba2": dict(
        mamba_d_state=8, mamba_headdim=16, n_mamba_heads=8, layers_block_type=["mamba", "hybrid"], hybrid_layer_ids=[1]
    ),
}


def config(family: str, **overrides):
    """The tiny config of ``family`` (``overrides``: other config fields, e.g. more layers)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return CONFIG_MAPPING[family](**{**BASE, **FAMILIES[family], **overrides})


def build(family: str, folder: Path, *, seed: int = 0, **overrides):
    """The tiny random model of ``family`` (eval mode) and its folder (config, safetensors,
    tokenizer).  Norm gains (and biases) are random, as in trained models."""
    from transformers import AutoModelForCausalLM

    from tests.conftest import build_tokenizer

    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(config(family, **overrides)).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            leaf = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else name
            if "norm" in leaf or leaf.startswith("ln") or "layernorm" in leaf:
                noise = torch.randn_like(param)
                param.copy_(param + 0.3 * noise if name.endswith("weight") else 0.1 * noise)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(folder)
    hf.save_pretrained(folder)
    return hf, folder
