"""Prompt text handling: shared few-shot prefixes, tails, and normalization for overlap checks.

Benchmarks such as ARC and WinoGrande (as run by RouterBench) prepend the same few-shot examples to
every question, so most of each prompt is identical. An encoder that truncates at a few hundred
tokens then sees the same input for every prompt and cannot tell them apart. The functions here
find that shared prefix so a loader can strip it, or keep only the tail of each prompt.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def shared_prefix(texts: Sequence[str]) -> str:
  """The longest prefix common to all `texts`, cut back to a line (else whitespace) boundary.

  The prefix never swallows a whole text: every text keeps at least its last non-whitespace
  character, so stripping the prefix leaves no prompt empty. Fewer than two texts share nothing.
  """
  if len(texts) < 2:
    return ""
  prefix = os.path.commonprefix(list(texts))
  prefix = prefix[: max(0, min(len(text.rstrip()) for text in texts) - 1)]
  # Cut at a boundary so that the first remaining line (a question) is kept whole even when all
  # questions happen to start with the same words ("Which of the ...").
  cut = prefix.rfind("\n") + 1
  if cut == 0:
    cut = max(prefix.rfind(" "), prefix.rfind("\t")) + 1
  return prefix[:cut]


def strip_prefix(texts: Sequence[str], prefix: str) -> tuple[list[str], int]:
  """Removes `prefix` from each text that starts with it.

  Returns:
    The texts, and how many did not start with `prefix` (left unchanged).
  """
  if not prefix:
    return list(texts), 0
  out, missed = [], 0
  for text in texts:
    if text.startswith(prefix):
      out.append(text[len(prefix) :])
    else:
      out.append(text)
      missed += 1
  return out, missed


def keep_tail(text: str, max_chars: int) -> str:
  """The last `max_chars` characters of `text`, moved forward to start after a whitespace.

  Texts no longer than `max_chars` are returned whole. A text without whitespace in its tail is
  cut at exactly `max_chars` characters.
  """
  if max_chars < 1:
    raise ValueError(f"max_chars must be positive, got {max_chars}")
  if len(text) <= max_chars:
    return text
  start = len(text) - max_chars
  if not text[start - 1].isspace():  # The cut falls inside a word: drop that word's end.
    space = next((i for i in range(start, len(text)) if text[i].isspace()), None)
    if space is None:
      return text[start:]
    start = space
  return text[start:].lstrip() or text[-max_chars:]


def normalize_text(text: str) -> str:
  """Case-folded text with runs of whitespace collapsed to one space, for duplicate checks."""
  return " ".join(text.casefold().split())
