"""Reward-model scoring throughput: erpjax's engine vs transformers (PyTorch) on real pairs.

Both sides score the same (prompt, response) pairs of routerbench_subset with the same weights in
float32 (`--dtype bfloat16` runs erpjax's side in bfloat16 against the float32 peer) on the same
CPU threads, from text to scores:
  erpjax: `ScoringEngine.score` (tokenization and packing on its prefetch thread, sequences
    packed into rows of a few bucket lengths, identical pairs scored once, the last layer run at
    the score tokens only, jitted step, scores written to Parquet shards);
  erpjax without dedupe: the same with `ScoringConfig(dedupe=False)`: every pair runs through the
    model, so this ratio isolates the per-token speed;
  peer: `AutoModelForSequenceClassification`, the same token ids, pairs sorted by length and cut
    into batches of `--batch-size` sequences, each padded to its longest sequence (dynamic
    padding), under `torch.inference_mode`.
Same number of CPU threads (the process is pinned to `--threads` CPUs; torch.set_num_threads; XLA's
pool follows the pinning; both counts are read back and printed). Throughput is real input tokens
(every pair's, copies included, no padding) per second of wall time. Each side is warmed up once
(erpjax compiles its batch shapes), then the sides are timed in turns `--repeats` times (so load
from other processes falls on all alike) and the medians compared. The scores are compared too.

Pairs (`--sample`): `prompts` (default) draws whole prompts with every LLM's response to them, as
ERP's labelling job scores them (`configs/routerbench_trained_rm.yaml` scores all 34,738 pairs, of
which 55% repeat another pair's text: multiple-choice letters, short answers); `pairs` draws pairs
independently from all prompts, which leaves almost no copies (about 4% of 1,000).

Models (`--model`):
  minilm_rm: the Bradley-Terry MiniLM reward model of `erpjax train-rm` (`--trained-rm`, default
    runs/train_rm/model), else a BertForSequenceClassification with all-MiniLM-L6-v2's weights and
    a random score head;
  llama_100m: a random LlamaForSequenceClassification of ~110M parameters (hidden 768, 12 layers,
    12 heads, MLP 2048, vocabulary 32,000), fed MiniLM's token ids (all < 32,000).

The last line printed is one JSON object: erpjax_tokens_per_s, peer_tokens_per_s, ratio,
ratio_without_dedupe, padding_fraction (erpjax's padded slots / all slots it ran),
peer_padding_fraction, duplicate_fraction, and the setup.

  python benchmarks/score_throughput.py --model minilm_rm --pairs 1000
  python benchmarks/score_throughput.py --model llama_100m --pairs 250 --repeats 2
"""

import argparse
import dataclasses
import functools
import inspect
import json
import pathlib
import shutil
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common  # (benchmarks/ is not a package)

from erpjax.dtypes import DTYPES

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")
DEFAULT_TRAINED_RM = pathlib.Path(__file__).resolve().parent.parent / "runs/train_rm/model"


def load_pairs(num_pairs: int, sample: str, seed: int):
  """`num_pairs` (prompt, response) pairs of routerbench_subset's train and test splits: drawn
  independently (`sample="pairs"`), or all pairs of randomly drawn prompts (`"prompts"`; the
  last prompt drawn is cut to make `num_pairs`)."""
  import numpy as np

  from erpjax import scoring
  from erpjax.data import load_routerbench

  by_prompt: list[list] = []
  for split in ("train", "test"):
    data = load_routerbench(split)
    samples = data.samples
    first = len(by_prompt)
    by_prompt.extend([] for _ in data.prompts)
    for i in range(len(samples)):
      p = samples.prompt_index[i]
      item_id = f"{split}/{data.prompt_ids[p]}/{data.llms[samples.llm_index[i]]}"
      by_prompt[first + p].append(scoring.ScoreItem(item_id, data.prompts[p], samples.response[i]))
  rng = np.random.default_rng(seed)
  if sample == "pairs":
    items = [item for prompt in by_prompt for item in prompt]
    return [items[i] for i in sorted(rng.choice(len(items), num_pairs, replace=False))]
  items = []
  for p in rng.permutation(len(by_prompt)):
    items.extend(by_prompt[p][:num_pairs - len(items)])
    if len(items) == num_pairs:
      return items
  raise ValueError(f"routerbench_subset has fewer than {num_pairs} pairs")


def _with_tokenizer(folder: pathlib.Path, formatter: str | None) -> None:
  from erpjax import scoring
  from erpjax.encode import default_model_dir

  for name in TOKENIZER_FILES:
    shutil.copy(default_model_dir() / name, folder / name)
  if formatter is not None:
    config = json.loads((folder / "config.json").read_text())
    config[scoring.FORMATTER_KEY] = formatter
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def minilm_rm(workdir: pathlib.Path, trained: pathlib.Path) -> tuple[pathlib.Path, str]:
  """The trained MiniLM reward model if there is one, else MiniLM + a random head."""
  import torch
  import transformers

  from erpjax.encode import default_model_dir

  if (trained / "config.json").is_file():
    return trained, f"trained MiniLM reward model ({trained})"
  torch.manual_seed(0)
  model = transformers.BertForSequenceClassification.from_pretrained(default_model_dir(),
                                                                     num_labels=1)
  folder = workdir / "minilm_random_head"
  model.save_pretrained(folder)
  _with_tokenizer(folder, formatter=None)
  return folder, "all-MiniLM-L6-v2 + random score head (no trained model found)"


def llama_100m(workdir: pathlib.Path) -> tuple[pathlib.Path, str]:
  """A random ~110M-parameter Llama reward model, saved with MiniLM's tokenizer."""
  import torch
  import transformers

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


class Peer:
  """transformers' AutoModelForSequenceClassification, length-sorted dynamic padding."""

  def __init__(self, folder, formatter, max_length: int, batch_size: int):
    import torch
    import transformers

    self.torch = torch
    self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
        folder, dtype=torch.float32).eval()
    self.pad = self.model.config.pad_token_id or 0
    self.use_types = "token_type_ids" in inspect.signature(self.model.forward).parameters
    self.formatter, self.max_length, self.batch_size = formatter, max_length, batch_size
    self.num_tokens = self.num_slots = 0

  def score(self, items) -> dict[str, float]:
    torch = self.torch
    tokenized = self.formatter([i.prompt for i in items], [i.response for i in items],
                               self.max_length)
    types = tokenized.types if self.use_types else None
    order = sorted(range(len(items)), key=lambda r: -len(tokenized.ids[r]))
    scores, self.num_slots = {}, 0
    self.num_tokens = sum(len(ids) for ids in tokenized.ids)
    with torch.inference_mode():
      for first in range(0, len(order), self.batch_size):
        rows = order[first:first + self.batch_size]
        width = max(len(tokenized.ids[r]) for r in rows)
        self.num_slots += width * len(rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        token_types = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
          n = len(tokenized.ids[r])
          ids[b, :n] = torch.tensor(tokenized.ids[r])
          mask[b, :n] = 1
          if types is not None:
            token_types[b, :n] = torch.tensor(types[r])
        inputs = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
          inputs["token_type_ids"] = token_types
        logits = self.model(**inputs).logits[:, 0].tolist()
        scores.update((items[r].id, s) for r, s in zip(rows, logits))
    return scores


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=("minilm_rm", "llama_100m"), default="minilm_rm")
  parser.add_argument("--pairs", type=int, default=1000)
  parser.add_argument("--sample", choices=("prompts", "pairs"), default="prompts",
                      help="draw whole prompts with all their responses (ERP's labelling job), "
                           "or independent pairs")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch-size", type=int, default=32,
                      help="peer sequences per batch; erpjax gets batch-size x 128 token slots")
  parser.add_argument("--max-length", type=int, default=256,
                      help="tokens per (prompt, response), the longest bucket (MiniLM RM: 256, "
                           "the length it was trained at)")
  parser.add_argument("--threads", type=int, default=None, help="default: all allowed CPUs")
  parser.add_argument("--trained-rm", type=pathlib.Path, default=DEFAULT_TRAINED_RM)
  parser.add_argument("--xla-defaults", action="store_true",
                      help="compile erpjax with XLA's default options, not cpu_compiler_options")
  parser.add_argument("--dtype", choices=DTYPES, default="float32",
                      help="erpjax's compute dtype (the peer stays float32)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  threads = _common.pin_threads(args.threads)
  import torch
  import transformers

  from erpjax import runtime, scoring

  torch.set_num_threads(threads)
  items = load_pairs(args.pairs, args.sample, args.seed)
  with tempfile.TemporaryDirectory() as workdir:
    workdir = pathlib.Path(workdir)
    if args.model == "minilm_rm":
      folder, description = minilm_rm(workdir, args.trained_rm)
    else:
      folder, description = llama_100m(workdir)
    positions = transformers.AutoConfig.from_pretrained(folder).max_position_embeddings
    if args.max_length > positions:
      sys.exit(f"--max-length {args.max_length} exceeds the model's {positions} positions")
    config = scoring.ScoringConfig(
        lengths=runtime.bucket_lengths(args.max_length, smallest=64),
        tokens_per_batch=args.batch_size * 128, dtype=args.dtype, progress=False,
        compiler_options={} if args.xla_defaults else None)
    engines = {"erpjax": scoring.ScoringEngine.from_pretrained(folder, config),
               "erpjax_no_dedupe": scoring.ScoringEngine.from_pretrained(
                   folder, dataclasses.replace(config, dedupe=False))}
    peer = Peer(folder, engines["erpjax"].formatter, args.max_length, args.batch_size)

    outputs, summaries = {}, {}

    def run(name):
      out = workdir / f"{name}-{len(summaries.get(name, []))}"
      summaries.setdefault(name, []).append(engines[name].score(items, out))
      outputs[name] = scoring.read_scores(out).as_dict()

    def run_peer():
      outputs["peer"] = peer.score(items)

    runs = {name: functools.partial(run, name) for name in engines} | {"peer": run_peer}
    warm_up = _common.time_interleaved(runs, 1)
    times = _common.time_interleaved(runs, args.repeats)

  summary, plain = summaries["erpjax"][-1], summaries["erpjax_no_dedupe"][-1]
  setup = _common.setup_fields(threads, "transformers")
  tokens_per_s = {name: peer.num_tokens / _common.median(t) for name, t in times.items()}
  print(f"{description}: {len(items)} pairs ({args.sample} sampled), {peer.num_tokens} real "
        f"tokens, {summary.num_copies} pairs repeat another; threads: torch "
        f"{setup['torch_threads']}, XLA Eigen pool {setup['xla_eigen_threads']}")
  for name, slots_summary in (("erpjax", summary), ("erpjax_no_dedupe", plain), ("peer", None)):
    padding = (slots_summary.padding_fraction if slots_summary is not None
               else 1 - peer.num_tokens / peer.num_slots)
    print(f"{name:>16}: {tokens_per_s[name]:,.0f} tokens/s  (runs "
          f"{[round(t, 2) for t in times[name]]} s, warm-up {warm_up[name][0]:.1f} s; "
          f"padding {padding:.1%})")
  _common.print_result({
      "benchmark": "score_throughput",
      "model": args.model,
      "description": description,
      "erpjax_tokens_per_s": round(tokens_per_s["erpjax"], 1),
      "erpjax_no_dedupe_tokens_per_s": round(tokens_per_s["erpjax_no_dedupe"], 1),
      "peer_tokens_per_s": round(tokens_per_s["peer"], 1),
      "ratio": round(tokens_per_s["erpjax"] / tokens_per_s["peer"], 3),
      "ratio_without_dedupe": round(tokens_per_s["erpjax_no_dedupe"] / tokens_per_s["peer"], 3),
      "padding_fraction": round(summary.padding_fraction, 4),
      "padding_fraction_without_dedupe": round(plain.padding_fraction, 4),
      "peer_padding_fraction": round(1 - peer.num_tokens / peer.num_slots, 4),
      "duplicate_fraction": round(summary.num_copies / len(items), 4),
      "max_abs_score_diff": max(abs(outputs[name][i.id] - outputs["peer"][i.id])
                                for name in engines for i in items),
      "pairs": len(items),
      "sample": args.sample,
      "real_tokens": peer.num_tokens,
      "erpjax_tokens_run": summary.num_tokens,
      "formatter": engines["erpjax"].formatter.name,
      "max_length": args.max_length,
      "peer_batch_sequences": args.batch_size,
      "erpjax_tokens_per_batch": config.tokens_per_batch,
      "erpjax_batch_shapes": [list(shape) for shape in plain.batch_shapes],
      "dtype": args.dtype,
      "peer_dtype": "float32",
      "repeats": args.repeats,
      "seconds": {name: [round(t, 3) for t in t_list] for name, t_list in times.items()},
      "warm_up_seconds": {name: round(t[0], 1) for name, t in warm_up.items()},
      "compiler_options": engines["erpjax"].compiler_options,
      "peer": "transformers.AutoModelForSequenceClassification, length-sorted dynamic padding",
      **setup,
  })


if __name__ == "__main__":
  main()
