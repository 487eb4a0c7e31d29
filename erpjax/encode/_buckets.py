"""Length bucketing: few compiled shapes, little padding.

Texts are sorted by token count (longest first, as sentence-transformers does) and cut into groups
of `batch_size`; each group is padded to the smallest bucket length that holds its longest text.
A last, smaller group gets the next power of two rows (empty filler rows after its texts), so one
text costs a [1, bucket] batch, not a [batch_size, bucket] one. Batch shapes therefore come from
`batch_shapes(batch_size, buckets)`, a fixed set whatever the texts: an encoder compiles at most
that many programs.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np


def default_buckets(max_length: int, smallest: int = 32) -> tuple[int, ...]:
  """Roughly geometric lengths (32, 48, 64, 96, 128, 192, 256, 384, 512, ...) up to `max_length`,
  which is always the last bucket.

  Steps of x1.5 or x1.33 bound the padding of a group to a third of its length while keeping the
  number of programs small (7 for max_length=256): each costs seconds to compile on a small CPU.
  """
  if max_length < 1:
    raise ValueError(f"max_length must be positive, got {max_length}")
  lengths = []
  size = smallest
  while size < max_length:
    lengths += [size, size * 3 // 2]
    size *= 2
  return tuple(sorted({n for n in lengths if n < max_length} | {max_length}))


def batch_rows(num_texts: int, batch_size: int) -> int:
  """Rows of a group of `num_texts` <= batch_size texts: batch_size, or for a smaller (last)
  group the next power of two."""
  if num_texts >= batch_size:
    return batch_size
  return min(batch_size, 1 << (num_texts - 1).bit_length())


def batch_shapes(batch_size: int, buckets: Sequence[int]) -> set[tuple[int, int]]:
  """Every [rows, length] shape `make_batches` can produce."""
  rows = {batch_rows(n, batch_size) for n in range(1, batch_size + 1)}
  return {(r, length) for r in rows for length in buckets}


@dataclasses.dataclass(frozen=True)
class Batch:
  """One padded batch.

  Attributes:
    tokens: int32[B, T] token ids, 0 after each row's end; B is the batch size, or a power of two
      for a last, smaller group.
    mask: bool[B, T], True on real tokens.
    rows: int[b] positions in the input of the first b <= B rows; the rest are filler.
  """
  tokens: np.ndarray
  mask: np.ndarray
  rows: np.ndarray

  @property
  def num_tokens(self) -> int:
    """Real (non-pad) tokens in the batch."""
    return int(self.mask.sum())


def make_batches(token_ids: Sequence[Sequence[int]], batch_size: int,
                 buckets: Sequence[int]) -> list[Batch]:
  """Sorts, groups and pads `token_ids` into [rows, bucket] batches (longest first).

  Raises:
    ValueError: a sequence is empty or longer than the largest bucket (truncate first).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  buckets = np.asarray(sorted(buckets))
  lengths = np.asarray([len(ids) for ids in token_ids], dtype=np.int64)
  if len(lengths) and (lengths.min() < 1 or lengths.max() > buckets[-1]):
    raise ValueError(f"sequence lengths must lie in [1, {buckets[-1]}], got "
                     f"[{lengths.min()}, {lengths.max()}]")
  # Stable sort, so equal lengths keep input order and batches are reproducible.
  order = np.argsort(-lengths, kind="stable")
  batches = []
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    width = int(buckets[np.searchsorted(buckets, lengths[rows[0]])])
    shape = (batch_rows(len(rows), batch_size), width)
    tokens = np.zeros(shape, np.int32)
    mask = np.zeros(shape, bool)
    for i, row in enumerate(rows):
      tokens[i, :lengths[row]] = token_ids[row]
      mask[i, :lengths[row]] = True
    batches.append(Batch(tokens, mask, rows))
  return batches
