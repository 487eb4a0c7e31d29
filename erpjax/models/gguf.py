"""GGUF files (llama.cpp's format) -> erpjax's Llama decoder trunk, tokenizer and chat template.

A GGUF file holds the architecture in its metadata (`llama.block_count`, ...), the tokenizer
(`tokenizer.ggml.*`) and chat template (`tokenizer.chat_template`), and the tensors, most of them
quantized in blocks. Tensors are read with the `gguf` package's memory-mapped reader and
dequantized to float32 with its vectorized numpy `gguf.quants.dequantize` (the same functions
transformers' GGUF loader calls); the types erpjax accepts are those its tests check against
llama.cpp's reference formulas (`SUPPORTED_TYPES`).

The tensors are then loaded with the same declarative key map machinery as Hugging Face
checkpoints (`erpjax.models._hf`): a GGUF tensor of shape [ne0, ne1] is the numpy array
[ne1, ne0], i.e. a torch `Linear` weight [out, in], so the `_hf.linear` transforms apply.
llama.cpp's converter permutes the rows of q_proj and k_proj (it rotates interleaved pairs where
transformers rotates halves); `_rope_unpermute` undoes it exactly as transformers'
`LlamaTensorProcessor`.

The tokenizer is built as transformers builds it from a GGUF file, without torch: the metadata is
grouped as `transformers.integrations.gguf.get_gguf_tokenizer` groups it (that function reads the
file with a torch-based reader) and converted by its `convert_gguf_tokenizer`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from erpjax.models import _hf
from erpjax.models.decoder import DecoderConfig, DecoderModel
from erpjax.models.rope import RopeConfig

# GGML tensor types erpjax dequantizes (by name, so that importing this module needs no gguf).
SUPPORTED_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K")
ARCHITECTURES = ("llama",)


def _gguf():
  """The `gguf` package, with an install hint when it is missing."""
  try:
    import gguf
  except ImportError as e:
    raise ImportError("reading GGUF files needs the `gguf` package: pip install gguf") from e
  return gguf


def dequantize(data: np.ndarray, type_name: str) -> np.ndarray:
  """float32 values of a tensor as the GGUF reader returns it.

  Args:
    data: the raw tensor: float32/float16 values, or for block-quantized types uint8[..., R]
      with R bytes per row (whole blocks).
    type_name: its GGML type, one of `SUPPORTED_TYPES`.

  Returns:
    float32[..., C]: C = R / block bytes * block size values per row for quantized types.
  """
  if type_name not in SUPPORTED_TYPES:
    raise ValueError(f"GGML tensor type {type_name} is not supported; supported: "
                     f"{SUPPORTED_TYPES}")
  gguf = _gguf()
  return np.asarray(gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name]),
                    np.float32)


class GGUFFile(Mapping[str, np.ndarray]):
  """A GGUF file: `metadata` (key -> value) and its tensors as float32 numpy arrays, dequantized
  lazily one key at a time (`file[name]`), in numpy axis order (GGUF shape reversed)."""

  def __init__(self, path: str | os.PathLike[str]):
    self.path = pathlib.Path(path)
    if not self.path.is_file():
      raise FileNotFoundError(f"no GGUF file at {self.path}")
    reader = _gguf().GGUFReader(self.path)
    # GGUF.* fields are the container's header, not model metadata.
    self.metadata: dict[str, Any] = {k: f.contents() for k, f in reader.fields.items()
                                     if not k.startswith("GGUF.")}
    self._tensors = {t.name: t for t in reader.tensors}

  def tensor_type(self, name: str) -> str:
    return self._tensors[name].tensor_type.name

  def __getitem__(self, name: str) -> np.ndarray:
    tensor = self._tensors[name]
    shape = tuple(int(n) for n in reversed(tensor.shape))
    return dequantize(tensor.data, tensor.tensor_type.name).reshape(shape)

  def __iter__(self) -> Iterator[str]:
    return iter(self._tensors)

  def __len__(self) -> int:
    return len(self._tensors)


@dataclasses.dataclass(frozen=True)
class GGUFModelInfo:
  """What a GGUF file says beyond `DecoderConfig`.

  Attributes:
    architecture: `general.architecture`.
    name: `general.name` (or the file name).
    context_length: the longest sequence the model was trained for.
  """
  architecture: str
  name: str
  context_length: int


def decoder_config(file: GGUFFile) -> tuple[DecoderConfig, GGUFModelInfo]:
  """The decoder architecture from the file's `<arch>.*` metadata (llama.cpp's names).

  Raises:
    ValueError: an architecture other than Llama, RoPE scaling other than linear, partial
      rotary dimensions, or per-layer head counts.
  """
  meta = file.metadata
  arch = meta.get("general.architecture")
  if arch not in ARCHITECTURES:
    raise ValueError(f"{file.path}: GGUF architecture {arch!r} is not supported; supported: "
                     f"{ARCHITECTURES}")

  def get(key: str, default: Any = None) -> Any:
    value = meta.get(f"{arch}.{key}", default)
    if value is None:
      raise ValueError(f"{file.path}: metadata key {arch}.{key} is missing")
    return value

  embed_dim = int(get("embedding_length"))
  num_heads = get("attention.head_count")
  num_kv_heads = get("attention.head_count_kv", num_heads)
  if isinstance(num_heads, list) or isinstance(num_kv_heads, list):
    raise ValueError(f"{file.path}: per-layer head counts are not supported")
  head_dim = int(get("attention.key_length", embed_dim // int(num_heads)))
  if int(get("rope.dimension_count", head_dim)) != head_dim:
    raise ValueError(f"{file.path}: partial rotary embeddings are not supported")
  scaling = get("rope.scaling.type", "none")
  theta = float(get("rope.freq_base", 10_000.0))
  if scaling == "linear":
    rope = RopeConfig(theta=theta, type="linear", factor=float(get("rope.scaling.factor")))
  elif scaling == "none" and "rope_freqs.weight" not in file:
    rope = RopeConfig(theta=theta)
  else:
    # Llama 3.1 files carry their scaled frequencies as a `rope_freqs` tensor.
    raise ValueError(f"{file.path}: RoPE scaling {scaling!r} (or a rope_freqs tensor) is not "
                     "supported; supported: none, linear")
  # Older files have no vocab_size key: the vocabulary is then the tokenizer's.
  vocab_size = int(get("vocab_size", len(meta.get("tokenizer.ggml.tokens") or ()) or None))
  config = DecoderConfig(
      vocab_size=vocab_size,
      embed_dim=embed_dim,
      mlp_dim=int(get("feed_forward_length")),
      num_layers=int(get("block_count")),
      num_heads=int(num_heads),
      num_kv_heads=int(num_kv_heads),
      head_dim=head_dim,
      rope=rope,
      norm_eps=float(get("attention.layer_norm_rms_epsilon")),
      pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
  )
  info = GGUFModelInfo(architecture=arch, name=meta.get("general.name") or file.path.stem,
                       context_length=int(get("context_length")))
  return config, info


def _rope_unpermute(num_heads: int, weight: Any) -> Any:
  """Undoes llama.cpp's q/k row permutation of a weight [N*H, ...] (N heads of H rows), exactly
  as transformers' `LlamaTensorProcessor._reverse_permute_weights`: within each head, row
  2*i + j of the file is row j*H/2 + i of the checkpoint."""
  half = weight.shape[0] // num_heads // 2
  return weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(2, 1).reshape(weight.shape)


def _rope_permute(num_heads: int, weight: Any) -> Any:
  """llama.cpp's `permute` (convert_hf_to_gguf.py), the inverse of `_rope_unpermute`."""
  half = weight.shape[0] // num_heads // 2
  return weight.reshape(num_heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _rope_linear(num_heads: int) -> _hf.Transform:
  """A permuted q/k weight [N*H, D] <-> the kernel [D, N, H]."""
  linear = _hf.linear()
  return _hf.Transform(
      f"rope_unpermute({num_heads}) + {linear.name}",
      lambda x, shape: linear.to_nnx(_rope_unpermute(num_heads, x), shape),
      lambda x: _rope_permute(num_heads, linear.to_hf(x)))


def gguf_key_map(config: DecoderConfig) -> _hf.KeyMap:
  """Key map of a GGUF Llama onto `DecoderModel` (llama.cpp's tensor names)."""
  idx = ("{layer}",)

  def layer(gguf: str, nnx_path: str, transform: _hf.Transform = _hf.IDENTITY) -> _hf.KeyRule:
    return _hf.KeyRule("blk.{layer}." + gguf, "layers/" + nnx_path, idx, transform)

  rules = (
      _hf.KeyRule("token_embd.weight", "embedder/embedding"),
      _hf.KeyRule("output_norm.weight", "final_norm/scale"),
      layer("attn_norm.weight", "pre_attn_norm/scale"),
      layer("attn_q.weight", "attn/q/kernel", _rope_linear(config.num_heads)),
      layer("attn_k.weight", "attn/k/kernel", _rope_linear(config.num_kv_heads)),
      layer("attn_v.weight", "attn/v/kernel", _hf.linear()),
      layer("attn_output.weight", "attn/out/kernel", _hf.linear(in_ndim=2)),
      layer("ffn_norm.weight", "pre_ffw_norm/scale"),
      layer("ffn_gate.weight", "mlp/gate/kernel", _hf.linear()),
      layer("ffn_up.weight", "mlp/up/kernel", _hf.linear()),
      layer("ffn_down.weight", "mlp/down/kernel", _hf.linear()),
  )
  # The LM head (absent when tied to the embeddings) is not part of the trunk.
  return _hf.KeyMap(rules, ignore=(r"output\.weight",))


def load_gguf_decoder(path: str | os.PathLike[str] | GGUFFile, *, dtype: jnp.dtype = jnp.float32,
                      attention: str = "xla") -> tuple[DecoderModel, GGUFModelInfo]:
  """The decoder trunk of a GGUF Llama file, dequantized to float32 then cast to `dtype`;
  `attention` is the implementation in `erpjax_kernels.attention`."""
  file = path if isinstance(path, GGUFFile) else GGUFFile(path)
  config, info = decoder_config(file)
  abstract = nnx.eval_shape(
      lambda: DecoderModel(config, dtype=dtype, attention=attention, rngs=nnx.Rngs(0)))
  return _hf.load_state(abstract, file, gguf_key_map(config)), info


# transformers.integrations.gguf.GGUF_TOKENIZER_MAPPING's special tokens, by their id keys.
_SPECIAL_TOKENS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id",
                   "unk_token": "unknown_token_id", "pad_token": "padding_token_id"}


def load_gguf_tokenizer(path: str | os.PathLike[str] | GGUFFile):
  """The file's tokenizer and chat template as a transformers fast tokenizer (no torch).

  Mirrors `transformers.integrations.gguf.get_gguf_tokenizer` (the metadata grouping and
  special tokens) and calls its `convert_gguf_tokenizer`, so the ids equal those of
  `AutoTokenizer.from_pretrained(folder, gguf_file=name)` (tests/test_gguf.py checks it).
  """
  from transformers import PreTrainedTokenizerFast
  from transformers.integrations.gguf import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer

  file = path if isinstance(path, GGUFFile) else GGUFFile(path)
  meta = file.metadata
  grouped = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items()
                     if f"tokenizer.{key}" in meta}
             for group, renames in GGUF_TOKENIZER_MAPPING.items()}
  tokenizer, tokenizer_config = grouped["tokenizer"], grouped["tokenizer_config"]
  if tokenizer.get("tokenizer_type") not in ("gpt2", "llama"):
    raise ValueError(f"{file.path}: tokenizer {tokenizer.get('tokenizer_type')!r} is not "
                     "supported; supported: gpt2 (byte-level BPE), llama (sentencepiece)")
  if tokenizer.get("tokenizer_type") == "llama":
    # As transformers: older files have no flag, and llama.cpp adds BOS to sentencepiece vocabs.
    tokenizer_config.setdefault("add_bos_token", True)
  for name, key in _SPECIAL_TOKENS.items():
    token_id = meta.get(f"tokenizer.ggml.{key}")
    tokenizer_config[name] = tokenizer["tokens"][token_id] if token_id is not None else None
  backend, extra = convert_gguf_tokenizer(meta["general.architecture"], tokenizer)
  return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config, **extra)
