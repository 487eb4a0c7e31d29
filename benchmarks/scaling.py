"""How time and peak memory grow with the work: estimate, fit (with penalty selection) and route.

For each N (prompts) and M (LLMs), synthetic D-dim prompt features and expected rewards are
written once as an ArrayRecord "features" folder (`erpjax.data.write_features`); then each stage
runs in a fresh Python process, so its peak RSS (getrusage maxrss) is its own:

- estimate: `estimate_expected_rewards` over N x M reward samples (K = 1) of an in-memory
  `RoutingDataset` (this stage holds its samples in memory: its RSS grows with N x M);
- fit: ridge heads with the penalty chosen by GCV from sufficient statistics streamed in chunks
  from the records (`fit_ridge_streamed`; sharded over the local devices' data axis);
- route: predictions and argmax_i ER_i - lambda c_i, streamed in chunks from the records.

The last line printed is one JSON object: per stage and M the seconds and peak RSS at each N, and
the growth exponents (slope of log time and of log RSS over log N; ~1 and ~0 mean linear time
and flat memory).

    python benchmarks/scaling.py                         # N = 1e4, 1e5, 1e6; M = 11, 100; D = 384
    python benchmarks/scaling.py --sizes 10000 30000 --llms 11   # a quick look
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

CHUNK = 8192


def _features(n: int, m: int, d: int, seed: int = 0):
  """(ids, features [B, D], rewards [B, M]) chunks of a seeded linear model plus noise."""
  rng = np.random.default_rng(seed)
  weights = rng.normal(size=(d, m)) / np.sqrt(d)
  for start in range(0, n, CHUNK):
    b = min(CHUNK, n - start)
    x = rng.normal(size=(b, d)).astype(np.float32)
    y = x @ weights + 0.5 * rng.normal(size=(b, m))
    yield [f"p{start + i}" for i in range(b)], x, y


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_parts_mb() -> dict[str, float]:
  """This process's resident memory now, split into anonymous memory (what it holds) and mapped
  file pages (page cache the kernel may drop, e.g. of files read through mmap)."""
  parts = {}
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith(("RssAnon:", "RssFile:")):
      name, value, _ = line.split()
      parts[name.rstrip(":").lower() + "_mb"] = int(value) / 1024
  return parts


def _stage(name: str, folder: pathlib.Path, n: int, m: int) -> dict:
  """Runs one stage in this process; returns its seconds and this process's peak RSS."""
  from erpjax import data
  from erpjax.data import RewardSamples, RoutingDataset
  from erpjax.estimate import estimate_expected_rewards
  from erpjax.routing import route
  from erpjax.routing._ridge_stats import fit_ridge_streamed

  start = time.perf_counter()  # imports are not the stage's work; compiling is
  if name == "fit":
    manifest = data.read_manifest(folder)
    chunks = ((c.features, c.rewards) for c in data.feature_chunks(folder, batch_size=CHUNK))
    fit = fit_ridge_streamed(chunks, manifest["meta"]["dim"], m)
    np.savez(folder.parent / f"router-{n}-{m}.npz", weights=fit.weights, bias=fit.bias)
  elif name == "route":
    router = np.load(folder.parent / f"router-{n}-{m}.npz", allow_pickle=False)
    costs = np.linspace(0.1, 1.0, m)
    counts = np.zeros(m, np.int64)
    for chunk in data.feature_chunks(folder, batch_size=CHUNK):
      predicted = chunk.features @ router["weights"] + router["bias"]
      counts += np.bincount(np.asarray(route(predicted, costs, 0.1)), minlength=m)
    assert counts.sum() == n
  elif name == "estimate":
    rng = np.random.default_rng(0)
    samples = RewardSamples.build(np.repeat(np.arange(n), m), np.tile(np.arange(m), n),
                                  rng.random(n * m))
    dataset = RoutingDataset(
        name="scaling", prompt_ids=tuple(f"p{i}" for i in range(n)), prompts=("x",) * n,
        categories=(None,) * n, llms=tuple(f"llm{j}" for j in range(m)),
        costs=np.linspace(0.1, 1.0, m), reward_models=("reward",), samples=samples)
    start = time.perf_counter()  # building the synthetic dataset is not the stage
    estimate_expected_rewards(dataset)
  else:
    raise ValueError(f"unknown stage {name!r}")
  return {"seconds": time.perf_counter() - start, "peak_rss_mb": _peak_rss_mb(), **_rss_parts_mb()}


def _run_stage(name: str, folder: pathlib.Path, n: int, m: int) -> dict:
  out = subprocess.run(
      [sys.executable, __file__, "--stage", name, "--folder", str(folder), "--n", str(n),
       "--m", str(m)], check=True, capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _slope(sizes, values) -> float:
  return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
  parser.add_argument("--llms", type=int, nargs="+", default=[11, 100])
  parser.add_argument("--dim", type=int, default=384)
  parser.add_argument("--stages", nargs="+", default=["estimate", "fit", "route"])
  parser.add_argument("--workdir", type=pathlib.Path, default=None,
                      help="where the records are written (default: a temporary folder)")
  # Internal: run one stage in this process.
  parser.add_argument("--stage", help=argparse.SUPPRESS)
  parser.add_argument("--folder", type=pathlib.Path, help=argparse.SUPPRESS)
  parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--m", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.stage:
    print(json.dumps(_stage(args.stage, args.folder, args.n, args.m)))
    return

  from erpjax import data

  workdir = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix="erpjax-scaling-"))
  results: dict = {}
  for m in args.llms:
    for n in args.sizes:
      folder = workdir / f"features-{n}-{m}"
      start = time.perf_counter()
      if not folder.exists():
        data.write_features(folder, _features(n, m, args.dim), llms=[f"llm{j}" for j in
                                                                         range(m)], num_shards=4)
      print(f"M={m} N={n}: records written in {time.perf_counter() - start:.1f} s", flush=True)
      for stage in args.stages:
        row = _run_stage(stage, folder, n, m)
        results.setdefault(f"{stage}/M={m}", {})[n] = row
        print(f"  {stage:8s} {row['seconds']:8.2f} s  peak RSS {row['peak_rss_mb']:7.0f} MB  "
              f"(at the end: anonymous {row['rssanon_mb']:.0f} MB, file pages "
              f"{row['rssfile_mb']:.0f} MB)", flush=True)
  summary = {"dim": args.dim, "sizes": args.sizes, "stages": {}}
  for key, rows in results.items():
    sizes = sorted(rows)
    summary["stages"][key] = {
        "seconds": [round(rows[n]["seconds"], 3) for n in sizes],
        "peak_rss_mb": [round(rows[n]["peak_rss_mb"]) for n in sizes],
        "end_anon_mb": [round(rows[n]["rssanon_mb"]) for n in sizes],
        "time_exponent": round(_slope(sizes, [rows[n]["seconds"] for n in sizes]), 3)
        if len(sizes) > 1 else None,
        "rss_exponent": round(_slope(sizes, [rows[n]["peak_rss_mb"] for n in sizes]), 3)
        if len(sizes) > 1 else None,
    }
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
