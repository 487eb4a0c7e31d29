"""Formatters: (prompt, response) pairs -> the token ids a reward model reads.

A reward model is trained on one input layout, and scores are only meaningful in that layout:
encoder reward models (e.g. OpenAssistant's DeBERTa) read the pair as two text segments,
`[CLS] prompt [SEP] response [SEP]`; decoder reward models (Skywork, ArmoRM) read the chat
template of a user turn and an assistant turn; erpjax's own Bradley-Terry model (`erpjax.train`)
reads one Anthropic-HH dialogue, `\\n\\nHuman: prompt\\n\\nAssistant: response`. A `Formatter`
turns a batch of pairs into token ids no longer than `max_length`.

A checkpoint folder may name its layout in config.json as `"erpjax_formatter": "<name>"`;
otherwise `formatter_for` picks the chat template when the tokenizer has one and the text pair
otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Protocol

import transformers

from erpjax.models._hf import read_config
from erpjax.runtime import Tokenized

FORMATTER_KEY = "erpjax_formatter"
HUMAN = "\n\nHuman: "
ASSISTANT = "\n\nAssistant: "


class Formatter(Protocol):
  """Tokenizes a batch of (prompt, response) pairs for one reward model."""

  name: str

  def __call__(self, prompts: Sequence[str], responses: Sequence[str],
               max_length: int) -> Tokenized:
    ...


@dataclasses.dataclass(frozen=True)
class TextPairFormatter:
  """`tokenizer(prompt, response)`: two segments, truncated longest-first (HF's default).

  Token types come with the ids when the tokenizer makes them (BERT, DeBERTa; not RoBERTa), as
  `transformers` then passes them to the model.
  """

  tokenizer: transformers.PreTrainedTokenizerBase
  name: str = "text_pair"

  def __call__(self, prompts, responses, max_length):
    encoded = self.tokenizer(
        list(prompts), list(responses), truncation="longest_first", max_length=max_length
    )
    return Tokenized(encoded["input_ids"], encoded.get("token_type_ids"))


@dataclasses.dataclass(frozen=True)
class ChatTemplateFormatter:
  """The tokenizer's chat template over a user turn and an assistant turn.

  Decoder reward models read the last token, so over-long inputs keep their end. transformers'
  `*ForSequenceClassification` scores the last token that is not `pad_token_id` (the model
  config's); a causal model's state there does not depend on later tokens, so trailing pad ids
  (templates ending in an EOS that doubles as pad) are dropped and the score is the same.
  """

  tokenizer: transformers.PreTrainedTokenizerBase
  pad_token_id: int | None = None
  name: str = "chat"

  def __call__(self, prompts, responses, max_length):
    out = []
    for prompt, response in zip(prompts, responses, strict=True):
      messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
      ids = list(self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
      while len(ids) > 1 and ids[-1] == self.pad_token_id:
        ids.pop()
      out.append(ids[-max_length:])
    return Tokenized(out)


@dataclasses.dataclass(frozen=True)
class DialogueFormatter:
  """One Anthropic-HH dialogue `\\n\\nHuman: p\\n\\nAssistant: r` between the special tokens.

  Over-long dialogues keep their END: the final assistant turn is what a preference model judges
  (it is where HH-RLHF's chosen and rejected dialogues differ). Special tokens ([CLS] ... [SEP]
  for BERT) are kept around the kept tail.
  """

  tokenizer: transformers.PreTrainedTokenizerBase
  name: str = "dialogue"

  def __call__(self, prompts, responses, max_length):
    texts = [dialogue(prompt, response)
             for prompt, response in zip(prompts, responses, strict=True)]
    return Tokenized(self.encode(texts, max_length))

  def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Whole dialogues (as in HH-RLHF's files) -> token ids, keeping each one's end."""
    head, tail = self._special_tokens()
    room = max_length - len(head) - len(tail)
    if room < 1:
      raise ValueError(f"max_length {max_length} leaves no room beside the special tokens "
                       f"{head} ... {tail}")
    # verbose=False: over-long texts are expected here, they are cut just below.
    bodies = self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [head + body[max(0, len(body) - room):] + tail for body in bodies]

  def _special_tokens(self) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text ([CLS] and [SEP] for BERT)."""
    body = self.tokenizer("a", add_special_tokens=False)["input_ids"]
    full = self.tokenizer("a")["input_ids"]
    start = next(i for i in range(len(full)) if full[i:i + len(body)] == body)
    return full[:start], full[start + len(body):]

def dialogue(prompt: str, response: str) -> str:
  """A single-turn dialogue in HH-RLHF's format."""
  return f"{HUMAN}{prompt}{ASSISTANT}{response}"


FORMATTERS = ("text_pair", "chat", "dialogue")


def formatter_for(path: str | os.PathLike[str], name: str | None = None) -> Formatter:
  """The formatter of the checkpoint folder `path` (with its tokenizer).

  Args:
    path: a Hugging Face checkpoint folder holding a tokenizer.
    name: "text_pair", "chat" or "dialogue"; default: config.json's `erpjax_formatter`, else
      "chat" when the tokenizer has a chat template, else "text_pair".
  """
  tokenizer = transformers.AutoTokenizer.from_pretrained(os.fspath(path))
  config = read_config(path)
  if name is None:
    name = config.get(FORMATTER_KEY)
  if name is None:
    name = "chat" if getattr(tokenizer, "chat_template", None) else "text_pair"
  if name == "text_pair":
    return TextPairFormatter(tokenizer)
  if name == "chat":
    return ChatTemplateFormatter(tokenizer, config.get("pad_token_id"))
  if name == "dialogue":
    return DialogueFormatter(tokenizer)
  raise ValueError(f"unknown formatter {name!r}; known: {FORMATTERS}")
