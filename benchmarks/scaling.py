"""How time and peak memory grow with the work (estimate, fit with penalty selection, route), and
how reward-model scoring throughput changes over emulated devices and processes.

For each N (prompts) and M (LLMs), synthetic D-dim prompt features and expected rewards are
written once as an ArrayRecord "features" folder (`erpjax.data.write_features`); then each stage
runs in a fresh Python process, so its peak RSS (VmHWM) is its own:

- estimate: the records job's `erpjax.streamed.featurize_samples` over a "samples" folder of
  N x M reward samples (K = 1; one shard per 200,000 samples, written once beforehand): shard by
  shard, read, estimate each LLM's expected reward and write the features records (the encoder is
  a stand-in returning zeros: embedding is the encoder's cost, measured in
  benchmarks/embed_throughput.py); skipped where N x M exceeds `--max-estimate-samples`;
- fit: ridge heads with the penalty chosen by GCV from sufficient statistics streamed in chunks
  from the records (`fit_ridge_streamed`; sharded over the local devices' data axis);
- route: predictions and argmax_i ER_i - lambda c_i, streamed in chunks from the records;
- score: reward-model scoring throughput of `erpjax.scoring.ScoringEngine` on a fixed synthetic set
  of (id, prompt, response) items, on 1, 2, 4 and 8 emulated CPU devices and in 1 and 2 processes
  (see "Scoring" below).

The last line printed is one JSON object: per stage and M the seconds and peak RSS at each N, and
the growth exponents (slope of log time and of log RSS over log N; ~1 and ~0 mean linear time
and flat memory); and under "scoring" the tokens/s of each scoring configuration and the
2-process/1-process ratio.

Scoring. The job is the records pipeline's scoring step, `erpjax.streamed.score_samples`: a
"samples" records folder (`erpjax.data.write_samples`, `--score-shards` shards, each prompt's
responses in the shard its id hashes to) is scored shard by shard into a new samples folder, each
process reading and scoring only its own shards (s % P == p). The reward model is a randomly
initialised BERT classifier of all-MiniLM-L6-v2's shape (6 layers, hidden 384, 22.7M parameters;
the shape of erpjax's own trained reward model) reading MiniLM's WordPiece tokens of the text
pairs: ~21 MFLOP per token, so the step's GEMMs dominate as they would with a real reward model
(the one-layer, 32-wide `erpjax.scoring.testing` model would measure mostly Python and dispatch
overhead, which a real model hides). Every pair is 62 tokens, two to a 128-token row; a batch holds
one window of `--score-window` pairs (8 rows for 16) whatever the device count. The default 48
prompts (4 responses each) hash to 23 and 25 prompts in the two processes' 4 shards each (each
process's token share is reported: a small job splits unevenly by chance, a real one's thousands
of shards do not).

Each configuration runs in its own fresh processes on CPU (JAX_PLATFORMS=cpu), all started first;
each warms up with one job (compiling every batch shape; a timed job that compiled anything, or
ran other batches, would be an error). Then the timed jobs run in turns, one of each
configuration per round for `--score-repeats` rounds, so that load from other work on the shared
machine falls on all alike; each job writes new output folders. Throughput is the real tokens of
all processes over the wall time of a job (a 2-process job ends at a barrier, so the slower
process sets it), median over the rounds; it includes the pipeline's reading, tokenizing, packing
and writing, not only the model. A ratio of two configurations is the median over the rounds of
the ratio within a round (the two are timed one after the other). Interleaving evens out load
that comes and goes, not a steady job of another user: one busy core halves every configuration
that uses both but not one pinned to a single CPU. So the result also gives the CPU seconds
that other work used during the scoring stage (the machine's busy time in /proc/stat less this
run's own); figures taken with much of it are not comparable.

  devices=K  one process with XLA_FLAGS=--xla_force_host_platform_device_count=K: the engine's
             mesh splits each batch over K devices on its data axis. The emulated devices share
             the process's CPUs, so this measures what the sharded step costs (a program per
             device, smaller GEMMs), not a speed-up.
  two_processes  2 processes on localhost (ERPJAX_COORDINATOR/NUM_PROCESSES/PROCESS_ID, JAX's
             gloo collectives), 1 device each.

Thread pinning: the 1-process reference (devices=1) runs on all allowed CPUs (2 here), and XLA
sizes its intra-op thread pool from them; each of the 2 processes is pinned (sched_setaffinity,
before JAX starts) to a CPU of its own, so both sides use the same 2 cores. On this 2-core machine
`two_process_over_one_process` therefore compares the distributed path (barriers, the split into
whole shards, a pipeline per process) with one process's intra-op threading: it is no speed-up,
and ~1 means no overhead (above 1: two single-threaded processes use the cores better than one
process's intra-op threads). `two_processes_over_one_cpu` compares with one process pinned
to one CPU: ~2 is perfect scaling. The XLA intra-op thread counts are read back from each process.

    python benchmarks/scaling.py                         # N = 1e4, 1e5, 1e6; M = 11, 100; D = 384
    python benchmarks/scaling.py --sizes 10000 30000 --llms 11 --stages fit route   # a quick look
    python benchmarks/scaling.py --stages score          # scoring only (~2 min on 2 quiet cores)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common  # (benchmarks/ is not a package)

CHUNK = 8192
STAGES = ("estimate", "fit", "route", "score")
# Scoring: every pair is SCORE_PAIR_TOKENS WordPiece tokens ([CLS] prompt [SEP] response [SEP],
# one token per word of WORDS), so two fill a row of SCORE_LENGTH and a window of W pairs packs into
# exactly one batch of W / 2 rows (the rows a multiple of the 8 devices' data axis for W = 16k).
SCORE_LENGTH = 128
SCORE_PAIR_TOKENS = 62
SCORE_DEVICES = (1, 2, 4, 8)
REPLY = "scaling-worker: "  # Starts the scoring workers' lines for the parent.
WORDS = ("the a of to and in is for on that with as it by this be are from at or an was which "
         "model answer question because number city water light music river energy market "
         "history language system school garden window people friend letter reason result "
         "simple quick small large early later first second always never often explain "
         "compute compare describe write list find").split()


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
  """This process's peak resident memory (VmHWM: getrusage's ru_maxrss survives exec, so a stage
  process would report the benchmark driver's peak when that was higher)."""
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 1024
  raise RuntimeError("no VmHWM in /proc/self/status")


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
    from erpjax import streamed

    output = folder.parent / f"estimated-{n}-{m}"
    shutil.rmtree(output, ignore_errors=True)  # A complete folder would be kept as it is.
    start = time.perf_counter()
    streamed.featurize_samples(folder.parent / f"samples-{n}-{m}", output,
                               _ZeroEncoder(data.read_manifest(folder)))
  else:
    raise ValueError(f"unknown stage {name!r}")
  return {"seconds": time.perf_counter() - start, "peak_rss_mb": _peak_rss_mb(), **_rss_parts_mb()}


class _ZeroEncoder:
  """A stand-in encoder of the features folder's dimension: zeros, at no cost."""

  identifier = "zeros"

  class tokenizer:  # noqa: N801 - the encoders' attribute; this one reads no text
    @staticmethod
    def num_truncated(texts):
      del texts
      return 0

  def __init__(self, manifest: dict):
    self.dim = manifest["meta"]["dim"]

  def encode(self, texts, batch_size=None, progress=False):
    del batch_size, progress
    return np.zeros((len(texts), self.dim), np.float32)


def _write_samples(folder: pathlib.Path, n: int, m: int) -> None:
  """N prompts x M LLMs x 1 sample with uniform rewards as a "samples" records folder."""
  from erpjax import data, streamed
  from erpjax.data import RewardSamples, RoutingDataset

  rng = np.random.default_rng(0)
  samples = RewardSamples.build(np.repeat(np.arange(n), m), np.tile(np.arange(m), n),
                                rng.random(n * m))
  dataset = RoutingDataset(
      name="scaling", prompt_ids=tuple(f"p{i}" for i in range(n)), prompts=("x",) * n,
      categories=(None,) * n, llms=tuple(f"llm{j}" for j in range(m)),
      costs=np.linspace(0.1, 1.0, m), reward_models=("reward",), samples=samples)
  data.write_samples(dataset, folder, num_shards=streamed.default_num_shards(n * m))


def _run_stage(name: str, folder: pathlib.Path, n: int, m: int) -> dict:
  # glibc gives each thread (grain's and ArrayRecord's readers) its own malloc arena, whose
  # fragmentation grows RSS with the number of chunks read although the live memory stays flat
  # (measured: reading 1e5 vs 1e6 feature records, RssAnon 318 vs 389 MB by default, 183 vs
  # 177 MB with one arena); two arenas keep RSS a measure of what the stage holds.
  env = dict(os.environ, MALLOC_ARENA_MAX="2")
  out = subprocess.run(
      [sys.executable, __file__, "--stage", name, "--folder", str(folder), "--n", str(n),
       "--m", str(m)], check=True, capture_output=True, text=True, env=env)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _score_dataset(num_prompts: int, num_llms: int, seed: int = 0):
  """A `RoutingDataset` of `num_prompts` prompts with a response of each of `num_llms` LLMs, of
  random words of WORDS (one WordPiece token each): a prompt of 10-30 words, each response of the
  rest of SCORE_PAIR_TOKENS - 3; one placeholder reward model (the scores are added as another)."""
  from erpjax.data import RewardSamples, RoutingDataset

  rng = np.random.default_rng(seed)
  words = np.array(WORDS)
  prompts, responses = [], []
  for _ in range(num_prompts):
    prompt_words = int(rng.integers(10, 31))
    prompts.append(" ".join(rng.choice(words, prompt_words)))
    responses += [" ".join(rng.choice(words, SCORE_PAIR_TOKENS - 3 - prompt_words))
                  for _ in range(num_llms)]
  samples = RewardSamples.build(np.repeat(np.arange(num_prompts), num_llms),
                                np.tile(np.arange(num_llms), num_prompts),
                                np.zeros(num_prompts * num_llms), response=responses)
  return RoutingDataset(
      name="scaling-score", prompt_ids=tuple(f"prompt-{i:05d}" for i in range(num_prompts)),
      prompts=tuple(prompts), categories=(None,) * num_prompts,
      llms=tuple(f"llm{j}" for j in range(num_llms)), costs=np.linspace(0.1, 1.0, num_llms),
      reward_models=("placeholder",), samples=samples)


def _score_worker(samples: pathlib.Path, folder: pathlib.Path, window: int,
                  cpus: list[int] | None) -> None:
  """One process of a scoring configuration: builds the engine, warms it up with one records job
  (compiling every batch shape), prints its setup, then runs one timed job per line read from
  stdin until stdin closes, printing each job's tokens and seconds. Lines for the parent start
  with REPLY.

  A job is `erpjax.streamed.score_samples` of the samples folder `samples` into a new folder
  under `folder`. Devices and processes come from the environment (XLA_FLAGS, ERPJAX_*), set by
  `_start_scoring`.
  """
  if cpus:  # Before JAX starts: XLA:CPU sizes its intra-op pool from the allowed CPUs.
    os.sched_setaffinity(0, cpus)
  from erpjax.runtime import distributed

  info = distributed.initialize(timeout_s=120)
  import jax
  import transformers
  from flax import nnx

  from erpjax import scoring, streamed
  from erpjax.models import bert, classifiers
  from erpjax.paths import default_model_dir

  config = classifiers.BertClassifierConfig(bert.MINILM_L6)

  def make() -> classifiers.BertClassifier:
    return classifiers.BertClassifier(config, rngs=nnx.Rngs(0))

  # The model's own initializers in one jitted call: eagerly, jax.random compiles a sampler per
  # parameter shape (8 s here against 3.5 s).
  model = nnx.merge(nnx.graphdef(nnx.eval_shape(make)), jax.jit(lambda: nnx.state(make()))())
  formatter = scoring.TextPairFormatter(transformers.AutoTokenizer.from_pretrained(
      default_model_dir()))
  engine = scoring.ScoringEngine(
      model, formatter,
      scoring.ScoringConfig(lengths=(SCORE_LENGTH,), tokens_per_batch=SCORE_LENGTH * window // 2,
                            window=window, progress=False),
      score_token="first", name="minilm-shaped-random")

  def job(output: str) -> tuple[scoring.ScoringSummary, float]:
    start = time.perf_counter()
    summary = streamed.score_samples(samples, engine, folder / output, name="minilm")
    return summary, time.perf_counter() - start

  warm_up, warm_up_seconds = job("warm-up")
  compiled = len(engine.traced_shapes)
  print(REPLY + json.dumps({
      "process": info.process_id, "local_devices": jax.local_device_count(),
      "cpus": sorted(os.sched_getaffinity(0)),
      "xla_eigen_threads": _common.thread_counts(("tf_XLAEigen",))["tf_XLAEigen"],
      "warm_up_seconds": warm_up_seconds}), flush=True)
  for k, _ in enumerate(sys.stdin):
    run, seconds = job(f"repeat-{k}")
    if len(engine.traced_shapes) != compiled:
      raise RuntimeError(f"a timed job compiled new batch shapes: {engine.traced_shapes}")
    if (run.num_tokens, run.num_slots) != (warm_up.num_tokens, warm_up.num_slots):
      raise RuntimeError("a timed job ran other batches than the warm-up")
    print(REPLY + json.dumps({"tokens": run.num_tokens, "slots": run.num_slots,
                              "seconds": seconds}), flush=True)


def _cpu_seconds() -> tuple[float, float]:
  """(busy CPU seconds of the whole machine since boot, of this process and its waited-for
  children): their difference over a run is the CPU time that other work took meanwhile."""
  fields = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
  user, nice, system, _, _, irq, softirq, steal = map(int, fields[:8])
  machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
  ours = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                               resource.getrusage(resource.RUSAGE_CHILDREN)))
  return machine, ours


def _free_port() -> int:
  """A TCP port on localhost that is free now (for the coordinator)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


class _Worker(NamedTuple):
  """A scoring worker process and the file its stderr goes to."""

  process: subprocess.Popen
  log: pathlib.Path


def _reply(worker: _Worker, timeout: float = 600) -> dict:
  """The next REPLY line of a scoring worker (other output, e.g. a library's, is skipped). A
  worker silent for `timeout` s is killed (e.g. one waiting at a barrier for a dead peer)."""
  watchdog = threading.Timer(timeout, worker.process.kill)
  watchdog.start()
  try:
    for line in worker.process.stdout:
      if line.startswith(REPLY):
        return json.loads(line[len(REPLY):])
  finally:
    watchdog.cancel()
  worker.process.wait()
  raise RuntimeError(f"scoring worker failed ({worker.process.returncode}):\n"
                     f"{worker.log.read_text()[-3000:]}")


def _start_scoring(samples: pathlib.Path, folder: pathlib.Path, devices: int,
                   cpus: list[list[int] | None], args: argparse.Namespace
                   ) -> tuple[list[_Worker], list[dict]]:
  """Starts one scoring configuration, len(cpus) processes (process i pinned to cpus[i], None =
  not pinned) with `devices` emulated CPU devices each, scoring the samples folder `samples` into
  `folder`; returns them, warmed up, with each one's setup."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(
      [os.environ.get("XLA_FLAGS", ""), f"--xla_force_host_platform_device_count={devices}"]))
  for name in ("ERPJAX_COORDINATOR", "ERPJAX_NUM_PROCESSES", "ERPJAX_PROCESS_ID"):
    env.pop(name, None)
  coordinator = f"localhost:{_free_port()}"
  folder.mkdir()
  workers = []
  for i, pinned in enumerate(cpus):
    if len(cpus) > 1:
      env.update(ERPJAX_COORDINATOR=coordinator, ERPJAX_NUM_PROCESSES=str(len(cpus)),
                 ERPJAX_PROCESS_ID=str(i))
    command = [sys.executable, __file__, "--score-worker", str(samples), "--folder", str(folder),
               "--score-window", str(args.score_window)]
    if pinned:
      command += ["--cpus", *map(str, pinned)]
    # stderr to a file: a pipe read only at the end could fill up and block the worker.
    log = folder / f"process-{i}.stderr"
    with log.open("w") as stderr:
      workers.append(_Worker(subprocess.Popen(
          command, env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
          text=True), log))
  try:
    return workers, [_reply(worker) for worker in workers]
  except RuntimeError:  # One failed: its peers would wait for it at a barrier.
    for worker in workers:
      worker.process.kill()
    raise


def _scoring(workdir: pathlib.Path, args: argparse.Namespace) -> dict:
  """Every scoring configuration, each in its own fresh processes, all started and warmed up
  first; then the timed jobs in turns (one job of each configuration per round), so that load
  from other jobs on the shared machine falls on every configuration alike. Prints a line per
  configuration and returns the "scoring" object of the result line."""
  allowed = sorted(os.sched_getaffinity(0))
  # In the order of each round: the ratios' two sides are timed next to each other.
  configs = {
      "devices=1": (1, [None]),
      # One CPU each (the same one twice if only one is allowed).
      "two_processes": (1, [allowed[:1], allowed[1:2] or allowed[:1]]),
      "one_process_one_cpu": (1, [allowed[:1]]),
      **{f"devices={k}": (k, [None]) for k in SCORE_DEVICES[1:]},
  }
  from erpjax import data

  # A new folder each run: a job whose output exists would be skipped, not scored.
  workdir = pathlib.Path(tempfile.mkdtemp(prefix="scoring-", dir=workdir))
  samples = data.write_samples(_score_dataset(args.score_prompts, args.score_llms),
                               workdir / "samples", num_shards=args.score_shards)
  start, (machine_before, ours_before) = time.perf_counter(), _cpu_seconds()
  running: dict[str, list[_Worker]] = {}
  setups, jobs = {}, {name: [] for name in configs}
  try:
    for name, (devices, cpus) in configs.items():
      running[name], setups[name] = _start_scoring(samples, workdir / name, devices, cpus, args)
    for _ in range(args.score_repeats):
      for name, workers in running.items():
        for worker in workers:  # All processes of a run start the job together.
          with contextlib.suppress(BrokenPipeError):  # A dead worker: `_reply` says why.
            worker.process.stdin.write("score\n")
            worker.process.stdin.flush()
        jobs[name].append([_reply(worker) for worker in workers])
  finally:
    for workers in running.values():
      for worker in workers:
        with contextlib.suppress(BrokenPipeError):
          worker.process.stdin.close()  # The worker's loop ends; it exits.
    for workers in running.values():
      for worker in workers:
        try:
          worker.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
          worker.process.kill()
          worker.process.wait()
  machine, ours = _cpu_seconds()
  other_cpu_s = machine - machine_before - (ours - ours_before)
  wall_s = time.perf_counter() - start
  print(f"  scoring took {wall_s:.0f} s; other work on the machine used {other_cpu_s:.0f} CPU "
        f"seconds meanwhile ({other_cpu_s / wall_s:.2f} cores on average)", flush=True)

  results = {}
  for name, rows in jobs.items():
    tokens = sum(reply["tokens"] for reply in rows[0])
    # A job's wall time is its slowest process's (each returns after the last barrier).
    seconds = [max(reply["seconds"] for reply in replies) for replies in rows]
    row = results[name] = {
        "tokens_per_s": float(np.median([tokens / s for s in seconds])), "tokens": tokens,
        "rounds_tokens_per_s": [tokens / s for s in seconds],
        "padding_fraction": 1 - tokens / sum(reply["slots"] for reply in rows[0]),
        "seconds": [round(s, 3) for s in seconds],
        "warm_up_seconds": round(max(s["warm_up_seconds"] for s in setups[name]), 2),
        "token_shares": [round(reply["tokens"] / tokens, 3) for reply in rows[0]],
        **{key: [s[key] for s in setups[name]] for key in ("cpus", "xla_eigen_threads",
                                                            "local_devices")},
    }
    print(f"  score {name:20s} {row['tokens_per_s']:8.0f} tokens/s  ({tokens} tokens, "
          f"padding {row['padding_fraction']:.0%}, jobs {row['seconds']} s, warm-up "
          f"{row['warm_up_seconds']} s, devices {row['local_devices']}, CPUs {row['cpus']}, "
          f"XLA threads {row['xla_eigen_threads']}, token shares {row['token_shares']})",
          flush=True)
  if len({row["tokens"] for row in results.values()}) != 1:
    raise RuntimeError("the configurations scored different numbers of tokens")

  def ratio(name: str, reference: str) -> float:
    """Median over the rounds of the ratio of two configurations' tokens/s in the same round."""
    pairs = zip(results[name]["rounds_tokens_per_s"], results[reference]["rounds_tokens_per_s"])
    return round(float(np.median([a / b for a, b in pairs])), 3)

  return {
      "model": "MiniLM-L6-shaped BertClassifier, random weights, float32",
      "prompts": args.score_prompts, "responses_per_prompt": args.score_llms,
      "record_shards": args.score_shards, "tokens": results["devices=1"]["tokens"],
      "row_length": SCORE_LENGTH, "window": args.score_window, "repeats": args.score_repeats,
      "tokens_per_s_by_devices": {k: round(results[f"devices={k}"]["tokens_per_s"])
                                  for k in SCORE_DEVICES},
      "tokens_per_s_one_process_one_cpu": round(results["one_process_one_cpu"]["tokens_per_s"]),
      "tokens_per_s_two_processes": round(results["two_processes"]["tokens_per_s"]),
      "two_process_over_one_process": ratio("two_processes", "devices=1"),
      "two_processes_over_one_cpu": ratio("two_processes", "one_process_one_cpu"),
      "two_process_token_shares": results["two_processes"]["token_shares"],
      "padding_fraction": round(results["devices=1"]["padding_fraction"], 3),
      "seconds_per_job": {name: row["seconds"] for name, row in results.items()},
      "xla_eigen_threads": {name: row["xla_eigen_threads"] for name, row in results.items()},
      # Other jobs on a shared machine distort the figures; this says how much ran meanwhile.
      "wall_s": round(wall_s, 1), "other_work_cpu_s": round(other_cpu_s, 1),
      "cpu": _common.cpu_model(),
  }


def _slope(sizes, values) -> float:
  return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
  parser.add_argument("--llms", type=int, nargs="+", default=[11, 100])
  parser.add_argument("--dim", type=int, default=384)
  parser.add_argument("--max-estimate-samples", type=int, default=11_000_000,
                      help="largest N x M the estimate stage runs on (its samples folder takes "
                      "~150 bytes and ~20 us to write per sample)")
  parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
  parser.add_argument("--score-prompts", type=int, default=48, help="prompts of the scoring job")
  parser.add_argument("--score-llms", type=int, default=4, help="responses to each prompt")
  parser.add_argument("--score-shards", type=int, default=8,
                      help="record shards of the scoring job (shared out among processes)")
  parser.add_argument("--score-window", type=int, default=16,
                      help="pairs per score window and per batch; a multiple of 16")
  parser.add_argument("--score-repeats", type=int, default=3,
                      help="timed scoring jobs per configuration, after one warm-up job")
  parser.add_argument("--workdir", type=pathlib.Path, default=None,
                      help="where the records are written (default: a temporary folder)")
  # Internal: run one stage in this process.
  parser.add_argument("--stage", help=argparse.SUPPRESS)
  parser.add_argument("--folder", type=pathlib.Path, help=argparse.SUPPRESS)
  parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--m", type=int, help=argparse.SUPPRESS)
  # Internal: run one process of a scoring configuration.
  parser.add_argument("--score-worker", type=pathlib.Path, help=argparse.SUPPRESS)
  parser.add_argument("--cpus", type=int, nargs="+", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.stage:
    print(json.dumps(_stage(args.stage, args.folder, args.n, args.m)))
    return
  if args.score_worker:
    _score_worker(args.score_worker, args.folder, args.score_window, args.cpus)
    return

  from erpjax import data

  workdir = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix="erpjax-scaling-"))
  results: dict = {}
  feature_stages = [stage for stage in args.stages if stage != "score"]
  for m in args.llms if feature_stages else ():
    for n in args.sizes:
      folder = workdir / f"features-{n}-{m}"
      start = time.perf_counter()
      if not folder.exists():
        data.write_features(folder, _features(n, m, args.dim), llms=[f"llm{j}" for j in
                                                                         range(m)], num_shards=4)
      print(f"M={m} N={n}: records written in {time.perf_counter() - start:.1f} s", flush=True)
      for stage in feature_stages:
        if stage == "estimate":
          if n * m > args.max_estimate_samples:
            continue
          samples = workdir / f"samples-{n}-{m}"
          if not samples.exists():
            start = time.perf_counter()
            _write_samples(samples, n, m)
            print(f"  samples written in {time.perf_counter() - start:.1f} s", flush=True)
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
  if "score" in args.stages:
    summary["scoring"] = _scoring(workdir, args)
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
