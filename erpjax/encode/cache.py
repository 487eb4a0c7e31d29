"""On-disk embedding cache keyed by encoder identifier and text.

Layout: `<cache_dir>/<sha256(identifier)[:24]>/` holds `identifier.txt` (the full identifier,
checked on every open) and shards `shard-<uuid>.npz`, each with `keys` (sha256 hex of the UTF-8
text, str[n]) and `embeddings` (float32[n, D]). A run writes at most one new shard, atomically
(temporary file + rename), so concurrent or interrupted runs never leave a partial shard, and
shards are read without pickle.
"""

import hashlib
import io
import os
import pathlib
import uuid
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from erpjax.files import atomic_write_bytes, atomic_write_text


class Encoder(Protocol):
  """What the cache needs of an encoder (`PromptEncoder` is one)."""

  @property
  def identifier(self) -> str: ...

  @property
  def dim(self) -> int: ...

  def encode(self, texts: Sequence[str], batch_size: int | None = None, *,
             progress: bool = True) -> np.ndarray: ...


def text_key(text: str) -> str:
  """The cache key of a text: sha256 of its UTF-8 bytes, in hex."""
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
  """The cached embeddings of one encoder."""

  def __init__(self, cache_dir: str | os.PathLike[str], identifier: str, dim: int):
    self.identifier = identifier
    self.dim = dim
    self.folder = (pathlib.Path(cache_dir)
                   / hashlib.sha256(identifier.encode("utf-8")).hexdigest()[:24])
    self.folder.mkdir(parents=True, exist_ok=True)
    id_file = self.folder / "identifier.txt"
    if not id_file.is_file():
      atomic_write_text(id_file, identifier)
    elif id_file.read_text(encoding="utf-8") != identifier:
      raise ValueError(f"{self.folder} caches another encoder: {id_file.read_text()!r}")

  def shards(self) -> list[pathlib.Path]:
    return sorted(self.folder.glob("shard-*.npz"))

  def load(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The cached embedding of each of `keys` that has one."""
    wanted = set(keys)
    found: dict[str, np.ndarray] = {}
    for shard in self.shards():
      with np.load(shard, allow_pickle=False) as data:
        shard_keys, embeddings = data["keys"], data["embeddings"]
      if embeddings.shape != (len(shard_keys), self.dim):
        raise ValueError(f"{shard}: embeddings {embeddings.shape} for {len(shard_keys)} keys "
                         f"of dim {self.dim}")
      for i, key in enumerate(shard_keys.tolist()):
        if key in wanted:
          found[key] = embeddings[i]
    return found

  def add(self, keys: Sequence[str], embeddings: np.ndarray) -> pathlib.Path | None:
    """Writes one new shard; nothing when `keys` is empty."""
    if not len(keys):
      return None
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.shape != (len(keys), self.dim):
      raise ValueError(f"embeddings {embeddings.shape} for {len(keys)} keys of dim {self.dim}")
    buffer = io.BytesIO()
    np.savez(buffer, keys=np.asarray(keys, dtype="<U64"), embeddings=embeddings)
    return atomic_write_bytes(self.folder / f"shard-{uuid.uuid4().hex}.npz", buffer.getvalue())


def encode_cached(encoder: Encoder, texts: Sequence[str],
                  cache_dir: str | os.PathLike[str], *, batch_size: int | None = None,
                  progress: bool = True) -> np.ndarray:
  """`encoder.encode(texts)`, computing only the texts not cached for this encoder yet.

  Returns:
    float32[N, D] embeddings in input order; new ones are added to the cache.
  """
  cache = EmbeddingCache(cache_dir, encoder.identifier, encoder.dim)
  keys = [text_key(t) for t in texts]
  found = cache.load(keys)
  missing: dict[str, str] = {}  # key -> text, each distinct text once
  for key, text in zip(keys, texts, strict=True):
    if key not in found:
      missing.setdefault(key, text)
  if missing:
    new = encoder.encode(list(missing.values()), batch_size, progress=progress)
    cache.add(list(missing), new)
    found.update(zip(missing, new, strict=True))
  out = np.zeros((len(texts), encoder.dim), np.float32)
  for i, key in enumerate(keys):
    out[i] = found[key]
  return out
