"""Prompt-embedding throughput: erpjax's PromptEncoder vs sentence-transformers (PyTorch).

Both sides embed the same real prompts (the first `--num-prompts` of routerbench_subset's CSV
files, in file-name order) with all-MiniLM-L6-v2 in float32 (`--dtype bfloat16` runs erpjax's
matmuls in bf16 instead, against the same float32 peer), from text to normalized embeddings:
  erpjax: `PromptEncoder.encode` (tokenize, sort by length, [batch, bucket] batches of one text
    per row, one jitted program per bucket, on `erpjax.runtime.Runner`);
  peer: `SentenceTransformer.encode` (sorts by length, pads each batch to its longest text).
Same batch size, same max length, same number of CPU threads (the process is pinned to
`--threads` CPUs, torch.set_num_threads, and XLA's pool follows the pinning; the thread counts are
read back from /proc and printed). Throughput counts real (non-pad) tokens. Each side is warmed up
(erpjax compiles one program per bucket it needs), then timed `--repeats` times; the medians are
compared. The machine may be shared with other jobs, so the two sides take turns:
  --interleave batch (default): batch by batch. Each side still runs its own batches (erpjax its
    length buckets, the peer its own length-sorted groups of --batch-size, each an `encode` call
    of one batch), so both see the same load even when it changes within a run;
  --interleave run: whole `encode(all prompts)` calls in turn.

The last line printed is one JSON object with erpjax_tokens_per_s, peer_tokens_per_s, ratio
(erpjax / peer) and the settings.

  python benchmarks/embed_throughput.py                 # 2,000 prompts, batch 64, 3 repeats
  python benchmarks/embed_throughput.py --num-prompts 500 --repeats 5
"""

import argparse
import ast
import csv
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common

from erpjax.dtypes import DTYPES


def load_prompts(num: int) -> list[str]:
  """The first `num` prompts of routerbench_subset's CSVs, files in name order."""
  from erpjax.paths import shared_data

  folder = shared_data("routerbench_subset")
  files = sorted(folder.glob("*.csv"))
  if not files:
    sys.exit(f"no routerbench_subset CSV files in {folder} (set ERPJAX_SHARED_DATA)")
  csv.field_size_limit(sys.maxsize)
  prompts = []
  for file in files:
    with file.open(newline="") as f:
      prompts += [ast.literal_eval(row["prompt"])[0] for row in csv.DictReader(f)]
  if len(prompts) < num:
    sys.exit(f"only {len(prompts)} prompts in {folder}, {num} requested")
  return prompts[:num]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num-prompts", type=int, default=2000)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--max-length", type=int, default=256)
  parser.add_argument("--threads", type=int, default=None, help="default: all allowed CPUs")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--attention", default="xla", help="erpjax_kernels.attention implementation")
  parser.add_argument("--dtype", default="float32", choices=DTYPES,
                      help="erpjax's compute dtype (the peer is always float32)")
  parser.add_argument("--interleave", default="batch", choices=("batch", "run"))
  parser.add_argument("--xla-defaults", action="store_true",
                      help="compile erpjax with XLA's default options, not cpu_compiler_options")
  args = parser.parse_args()

  threads = _common.pin_threads(args.threads)
  import numpy as np
  import sentence_transformers
  import torch

  from erpjax.encode import PromptEncoder, default_model_dir

  torch.set_num_threads(threads)
  prompts = load_prompts(args.num_prompts)

  encoder = PromptEncoder.from_pretrained(
      max_length=args.max_length, batch_size=args.batch_size, attention=args.attention,
      dtype=args.dtype, compiler_options={} if args.xla_defaults else None)
  peer = sentence_transformers.SentenceTransformer(str(default_model_dir()), device="cpu")
  peer.max_seq_length = args.max_length

  batches = encoder.batches(prompts)
  tokens = sum(b.num_tokens for b in batches)
  peer_lengths = [len(ids) for ids in peer.tokenizer(prompts, truncation=True,
                                                     max_length=args.max_length)["input_ids"]]
  if sum(peer_lengths) != tokens:
    sys.exit(f"token counts differ: erpjax {tokens}, sentence-transformers {sum(peer_lengths)}")

  # Warm-up: one batch of every shape erpjax will run (compiling its programs), and as many texts
  # for the peer (first calls, allocator).
  start = time.perf_counter()
  warm = [prompts[i] for shape in sorted({b.shape for b in batches})
          for i in next(b for b in batches if b.shape == shape).ids]
  encoder.encode(warm, progress=False)
  warm_up_s = time.perf_counter() - start
  peer.encode(warm, batch_size=args.batch_size)

  if args.interleave == "run":
    outputs = {}
    times = _common.time_interleaved({
        "erpjax": lambda: outputs.__setitem__("erpjax", encoder.encode(prompts, progress=False)),
        "peer": lambda: outputs.__setitem__("peer", peer.encode(
            prompts, batch_size=args.batch_size, convert_to_numpy=True)),
    }, args.repeats)
    erpjax_out, peer_out = outputs["erpjax"], outputs["peer"]
  else:
    erpjax_out = np.zeros((len(prompts), encoder.dim), np.float32)
    peer_out = np.zeros_like(erpjax_out)
    # sentence-transformers sorts by text length (characters), longest first.
    peer_order = np.argsort([-len(p) for p in prompts], kind="stable")
    peer_groups = [peer_order[i:i + args.batch_size]
                   for i in range(0, len(prompts), args.batch_size)]

    def erpjax_step(rows):
      erpjax_out[rows] = encoder.encode([prompts[i] for i in rows], progress=False)

    def peer_step(rows):
      peer_out[rows] = peer.encode([prompts[i] for i in rows], batch_size=args.batch_size,
                                   convert_to_numpy=True)

    times = _common.time_interleaved_steps({
        "erpjax": [lambda rows=list(b.ids): erpjax_step(rows) for b in batches],
        "peer": [lambda rows=g: peer_step(rows) for g in peer_groups],
    }, args.repeats)
  setup = _common.setup_fields(threads, "sentence_transformers")
  erpjax_tps = tokens / _common.median(times["erpjax"])
  peer_tps = tokens / _common.median(times["peer"])
  slots = sum(b.num_slots for b in batches)
  print(f"{len(prompts)} prompts, {tokens} real tokens; threads: torch {setup['torch_threads']}, "
        f"XLA Eigen pool {setup['xla_eigen_threads']}, CPUs {sorted(os.sched_getaffinity(0))}")
  print(f"erpjax: {erpjax_tps:,.0f} tokens/s  (runs {[round(t, 2) for t in times['erpjax']]} s; "
        f"warm-up incl. compiling {len(encoder.compiled_shapes)} shapes {warm_up_s:.1f} s)")
  print(f"peer:   {peer_tps:,.0f} tokens/s  (runs {[round(t, 2) for t in times['peer']]} s)")
  _common.print_result({
      "benchmark": "embed_throughput",
      "erpjax_tokens_per_s": round(erpjax_tps, 1),
      "peer_tokens_per_s": round(peer_tps, 1),
      "ratio": round(erpjax_tps / peer_tps, 3),
      "max_abs_diff": float(np.abs(erpjax_out - peer_out).max()),
      "num_prompts": len(prompts),
      "real_tokens": tokens,
      "erpjax_padding_fraction": round(1 - tokens / slots, 4),
      "batch_size": args.batch_size,
      "max_length": args.max_length,
      "dtype": args.dtype,
      "peer_dtype": "float32",
      "repeats": args.repeats,
      "interleave": args.interleave,
      "erpjax_seconds": [round(t, 3) for t in times["erpjax"]],
      "peer_seconds": [round(t, 3) for t in times["peer"]],
      "erpjax_warm_up_seconds": round(warm_up_s, 1),
      "compiled_shapes": [list(s) for s in encoder.compiled_shapes],
      "attention": args.attention,
      "compiler_options": encoder.compiler_options,
      "peer": "sentence_transformers.SentenceTransformer.encode",
      **setup,
  })


if __name__ == "__main__":
  main()
