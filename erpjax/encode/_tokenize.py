"""Text -> token ids with a Hugging Face tokenizer.json, truncated as sentence-transformers does."""

import os
from collections.abc import Sequence

import tokenizers


class Tokenizer:
  """A fast tokenizer that adds [CLS]/[SEP] and truncates to `max_length` tokens (specials
  included), with no padding: padding is the bucketing's job.

  all-MiniLM-L6-v2's tokenizer.json carries fixed padding and truncation to 128; both are replaced
  here, since sentence-transformers truncates to `max_seq_length` (256 for that model) through
  transformers, which sets the same right-side "longest_first" truncation on this tokenizer.
  """

  def __init__(self, path: str | os.PathLike[str], max_length: int, *, lowercase: bool = False):
    if max_length < 2:
      raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {max_length}")
    self.max_length = max_length
    # sentence_bert_config.json's do_lower_case: sentence-transformers lowercases the text itself.
    self.lowercase = lowercase
    self._tokenizer = tokenizers.Tokenizer.from_file(os.fspath(path))
    self._tokenizer.no_padding()
    self._tokenizer.enable_truncation(max_length, strategy="longest_first", direction="right")

  def __call__(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text, each 2..max_length long."""
    return [e.ids for e in self._encode(texts)]

  def num_truncated(self, texts: Sequence[str]) -> int:
    """How many of `texts` lose tokens to the `max_length` truncation."""
    return sum(bool(e.overflowing) for e in self._encode(texts))

  def _encode(self, texts: Sequence[str]) -> list[tokenizers.Encoding]:
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    if self.lowercase:
      texts = [t.lower() for t in texts]
    return self._tokenizer.encode_batch(list(texts))
