"""Reward-model scoring throughput: erpjax's engine vs transformers (PyTorch) on real pairs.

Both sides score the same (prompt, response) pairs of routerbench_subset with the same weights in
float32 on the same CPU threads, from text to scores:
  erpjax: `ScoringEngine.score` (tokenization and packing on its prefetch thread, sequences
    packed into rows of a few bucket lengths, jitted step, scores written to Parquet shards);
  peer: `AutoModelForSequenceClassification`, the same token ids, pairs sorted by length and cut
    into batches of `--batch-size` sequences, each padded to its longest sequence (dynamic
    padding), under `torch.inference_mode`.
Same number of CPU threads (the process is pinned to `--threads` CPUs; torch.set_num_threads; XLA's
pool follows the pinning; both counts are read back and printed). Throughput counts real tokens
only. Each side is warmed up once (erpjax compiles its batch shapes), then the two are timed in
turns `--repeats` times (so load from other processes falls on both alike) and the medians
compared. The scores of both sides are compared too.

Models (`--model`):
  minilm_rm: the Bradley-Terry MiniLM reward model of `erpjax train-rm` (`--trained-rm`, default
    runs/train_rm/model), else a BertForSequenceClassification with all-MiniLM-L6-v2's weights and
    a random score head;
  llama_100m: a random LlamaForSequenceClassification of ~110M parameters (hidden 768, 12 layers,
    12 heads, MLP 2048, vocabulary 32,000), fed MiniLM's token ids (all < 32,000).

The last line printed is one JSON object: erpjax_tokens_per_s, peer_tokens_per_s, ratio,
padding_fraction (erpjax's padded slots / all slots), peer_padding_fraction, and the setup.

  python benchmarks/score_throughput.py --model minilm_rm --pairs 1000
  python benchmarks/score_throughput.py --model llama_100m --pairs 250 --repeats 2
"""

import argparse
import inspect
import json
import pathlib
import shutil
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common  # (benchmarks/ is not a package)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")
DEFAULT_TRAINED_RM = pathlib.Path(__file__).resolve().parent.parent / "runs/train_rm/model"


def load_pairs(num_pairs: int, seed: int):
  """`num_pairs` (prompt, response) pairs drawn from routerbench_subset's train and test splits."""
  import numpy as np

  from erpjax import scoring
  from erpjax.data import load_routerbench

  items = []
  for split in ("train", "test"):
    data = load_routerbench(split)
    samples = data.samples
    for i in range(len(samples)):
      prompt_id = data.prompt_ids[samples.prompt_index[i]]
      llm = data.llms[samples.llm_index[i]]
      items.append(scoring.ScoreItem(f"{split}/{prompt_id}/{llm}",
                                     data.prompts[samples.prompt_index[i]], samples.response[i]))
  rows = np.random.default_rng(seed).choice(len(items), num_pairs, replace=False)
  return [items[i] for i in sorted(rows)]


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
    self.num_slots = 0

  def score(self, items) -> dict[str, float]:
    torch = self.torch
    tokenized = self.formatter([i.prompt for i in items], [i.response for i in items],
                               self.max_length)
    types = tokenized.types if self.use_types else None
    order = sorted(range(len(items)), key=lambda r: -len(tokenized.ids[r]))
    scores, self.num_slots = {}, 0
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
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch-size", type=int, default=32,
                      help="peer sequences per batch; erpjax gets batch-size x 128 token slots")
  parser.add_argument("--max-length", type=int, default=256,
                      help="tokens per (prompt, response), the longest bucket (MiniLM RM: 256, "
                           "the length it was trained at)")
  parser.add_argument("--threads", type=int, default=None, help="default: all allowed CPUs")
  parser.add_argument("--trained-rm", type=pathlib.Path, default=DEFAULT_TRAINED_RM)
  parser.add_argument("--xla-defaults", action="store_true",
                      help="compile erpjax with XLA's default options, not CPU_COMPILER_OPTIONS")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  threads = _common.pin_threads(args.threads)
  import jax
  import torch
  import transformers

  from erpjax import scoring
  from erpjax.encode import CPU_COMPILER_OPTIONS

  torch.set_num_threads(threads)
  items = load_pairs(args.pairs, args.seed)
  with tempfile.TemporaryDirectory() as workdir:
    workdir = pathlib.Path(workdir)
    if args.model == "minilm_rm":
      folder, description = minilm_rm(workdir, args.trained_rm)
    else:
      folder, description = llama_100m(workdir)
    positions = transformers.AutoConfig.from_pretrained(folder).max_position_embeddings
    if args.max_length > positions:
      sys.exit(f"--max-length {args.max_length} exceeds the model's {positions} positions")
    lengths = tuple(n for n in (64, 128, 256, 512) if n < args.max_length) + (args.max_length,)
    config = scoring.ScoringConfig(
        lengths=lengths, tokens_per_batch=args.batch_size * 128, progress=False,
        compiler_options={} if args.xla_defaults else None)
    engine = scoring.ScoringEngine.from_pretrained(folder, config)
    peer = Peer(folder, engine.formatter, max(lengths), args.batch_size)

    outputs, summaries = {}, []

    def run_erpjax():
      out = workdir / f"scores{len(summaries)}"
      summaries.append(engine.score(items, out))
      outputs["erpjax"] = scoring.read_scores(out).as_dict()

    def run_peer():
      outputs["peer"] = peer.score(items)

    warm_up = _common.time_interleaved({"erpjax": run_erpjax, "peer": run_peer}, 1)
    times = _common.time_interleaved({"erpjax": run_erpjax, "peer": run_peer}, args.repeats)

  summary = summaries[-1]
  xla_threads = _common.thread_counts(("tf_XLAEigen",))["tf_XLAEigen"]
  erpjax_tps = summary.num_tokens / _common.median(times["erpjax"])
  peer_tps = summary.num_tokens / _common.median(times["peer"])
  print(f"{description}: {len(items)} pairs, {summary.num_tokens} real tokens; threads: torch "
        f"{torch.get_num_threads()}, XLA Eigen pool {xla_threads}")
  print(f"erpjax: {erpjax_tps:,.0f} tokens/s  (runs {[round(t, 2) for t in times['erpjax']]} s, "
        f"warm-up {warm_up['erpjax'][0]:.1f} s; padding {summary.padding_fraction:.1%})")
  print(f"peer:   {peer_tps:,.0f} tokens/s  (runs {[round(t, 2) for t in times['peer']]} s; "
        f"padding {1 - summary.num_tokens / peer.num_slots:.1%})")
  _common.print_result({
      "benchmark": "score_throughput",
      "model": args.model,
      "description": description,
      "erpjax_tokens_per_s": round(erpjax_tps, 1),
      "peer_tokens_per_s": round(peer_tps, 1),
      "ratio": round(erpjax_tps / peer_tps, 3),
      "padding_fraction": round(summary.padding_fraction, 4),
      "peer_padding_fraction": round(1 - summary.num_tokens / peer.num_slots, 4),
      "max_abs_score_diff": max(abs(outputs["erpjax"][i.id] - outputs["peer"][i.id])
                                for i in items),
      "pairs": len(items),
      "real_tokens": summary.num_tokens,
      "formatter": engine.formatter.name,
      "max_length": args.max_length,
      "peer_batch_sequences": args.batch_size,
      "erpjax_tokens_per_batch": config.tokens_per_batch,
      "erpjax_batch_shapes": [list(shape) for shape in summary.batch_shapes],
      "dtype": "float32",
      "threads": threads,
      "torch_threads": torch.get_num_threads(),
      "xla_eigen_threads": xla_threads,
      "repeats": args.repeats,
      "erpjax_seconds": [round(t, 3) for t in times["erpjax"]],
      "peer_seconds": [round(t, 3) for t in times["peer"]],
      "erpjax_warm_up_seconds": round(warm_up["erpjax"][0], 1),
      "compiler_options": {} if args.xla_defaults else dict(CPU_COMPILER_OPTIONS),
      "cpu": _common.cpu_model(),
      "versions": {"jax": jax.__version__, "torch": torch.__version__,
                   "transformers": transformers.__version__},
      "peer": "transformers.AutoModelForSequenceClassification, length-sorted dynamic padding",
  })


if __name__ == "__main__":
  main()
