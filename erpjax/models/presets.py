"""Named decoder architectures: the base models of common reward models, plus tiny test models.

Full-size presets copy the `config.json` of the Hugging Face base model (a reward model fine-tuned
from it has the same backbone, a `score` head and often one added pad token, so loading always
reads the checkpoint's own config; presets serve sizing, sharding plans and tests without memory
via `nnx.eval_shape`). E.g. Skywork-Reward-Llama-3.1-8B is a Llama-3.1-8B, the GRM Gemma reward
models are Gemma-2B or Gemma-2-2B ones.

InternLM2-7B is kept as a Llama-shaped preset ("internlm2-7b-like"): its architecture is Llama's,
but InternLM2's own reward checkpoints (`InternLM2ForRewardModel`, remote code) store packed `wqkv`
weights under other names and are not loadable here.
"""

from __future__ import annotations

from erpjax.models.decoder import DecoderConfig
from erpjax.models.rope import RopeConfig

LLAMA_3_1_8B = DecoderConfig(
    vocab_size=128256, embed_dim=4096, mlp_dim=14336, num_layers=32, num_heads=32,
    num_kv_heads=8, head_dim=128, norm_eps=1e-5,
    rope=RopeConfig(theta=500000.0, type="llama3", factor=8.0, low_freq_factor=1.0,
                    high_freq_factor=4.0, original_max_position_embeddings=8192))

LLAMA_3_2_1B = DecoderConfig(
    vocab_size=128256, embed_dim=2048, mlp_dim=8192, num_layers=16, num_heads=32,
    num_kv_heads=8, head_dim=64, norm_eps=1e-5,
    rope=RopeConfig(theta=500000.0, type="llama3", factor=32.0, low_freq_factor=1.0,
                    high_freq_factor=4.0, original_max_position_embeddings=8192))

# Mistral-7B-v0.1 (v0.2+ drop the sliding window and use theta 1e6).
MISTRAL_7B = DecoderConfig(
    vocab_size=32000, embed_dim=4096, mlp_dim=14336, num_layers=32, num_heads=32,
    num_kv_heads=8, head_dim=128, norm_eps=1e-5, rope=RopeConfig(theta=10000.0),
    sliding_window=4096, sliding_layers=tuple(range(32)))

QWEN2_5_7B = DecoderConfig(
    vocab_size=152064, embed_dim=3584, mlp_dim=18944, num_layers=28, num_heads=28,
    num_kv_heads=4, head_dim=128, norm_eps=1e-6, rope=RopeConfig(theta=1000000.0),
    qkv_bias=True)

QWEN3_8B = DecoderConfig(
    vocab_size=151936, embed_dim=4096, mlp_dim=12288, num_layers=36, num_heads=32,
    num_kv_heads=8, head_dim=128, norm_eps=1e-6, rope=RopeConfig(theta=1000000.0),
    qk_norm=True)

GEMMA_2B = DecoderConfig(
    vocab_size=256000, embed_dim=2048, mlp_dim=16384, num_layers=18, num_heads=8,
    num_kv_heads=1, head_dim=256, norm_eps=1e-6, rope=RopeConfig(theta=10000.0),
    norm_offset=1.0, activation="gelu_pytorch_tanh", scale_embeddings=True, pad_token_id=0)

GEMMA_2_2B = DecoderConfig(
    vocab_size=256000, embed_dim=2304, mlp_dim=9216, num_layers=26, num_heads=8,
    num_kv_heads=4, head_dim=256, norm_eps=1e-6, rope=RopeConfig(theta=10000.0),
    norm_offset=1.0, activation="gelu_pytorch_tanh", scale_embeddings=True, sandwich_norm=True,
    query_pre_attn_scalar=256, attn_logit_softcap=50.0, sliding_window=4096,
    sliding_layers=tuple(range(0, 26, 2)), pad_token_id=0)

INTERNLM2_7B_LIKE = DecoderConfig(
    vocab_size=92544, embed_dim=4096, mlp_dim=14336, num_layers=32, num_heads=32,
    num_kv_heads=8, head_dim=128, norm_eps=1e-5, rope=RopeConfig(theta=1000000.0))

# Tiny models for tests of code that needs a reward model but not a real checkpoint: one
# Llama-style, one with every Gemma 2 feature (sliding layers, soft-cap, sandwich norms).
TINY_LLAMA = DecoderConfig(
    vocab_size=128, embed_dim=32, mlp_dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
    head_dim=8, pad_token_id=0)

TINY_GEMMA2 = DecoderConfig(
    vocab_size=128, embed_dim=32, mlp_dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
    head_dim=16, norm_offset=1.0, activation="gelu_pytorch_tanh", scale_embeddings=True,
    sandwich_norm=True, query_pre_attn_scalar=16, attn_logit_softcap=50.0, sliding_window=4,
    sliding_layers=(0,), pad_token_id=0)

PRESETS: dict[str, DecoderConfig] = {
    "llama-3.1-8b": LLAMA_3_1_8B,
    "llama-3.2-1b": LLAMA_3_2_1B,
    "mistral-7b": MISTRAL_7B,
    "qwen2.5-7b": QWEN2_5_7B,
    "qwen3-8b": QWEN3_8B,
    "gemma-2b": GEMMA_2B,
    "gemma-2-2b": GEMMA_2_2B,
    "internlm2-7b-like": INTERNLM2_7B_LIKE,
    "tiny-llama": TINY_LLAMA,
    "tiny-gemma2": TINY_GEMMA2,
}


def get_preset(name: str) -> DecoderConfig:
  """The preset called `name`; raises KeyError listing the known names."""
  if name not in PRESETS:
    raise KeyError(f"unknown decoder preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name]
