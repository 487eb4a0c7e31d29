"""A scoring job and a router fit split over 2 CPU processes on localhost (JAX's gloo collectives).

The test runs this file as a worker (`python test_distributed_scoring.py FOLDER DELAY [FIT]`),
as one process or as process 0 and 1 of a 2-process run (ERPJAX_* variables, read by
`distributed.initialize`). Each worker scores the same items into FOLDER (its share: the windows
it owns), sleeping DELAY s after each shard so that it can be killed mid-run; with FIT it then fits
ridge heads on prompt features -> each LLM's score from its own share of the prompts
(`fit_ridge_streamed` adds the processes' statistics). The job: a 1-process reference beside a
2-process run whose process 1 is SIGKILLed after its first shard, a 1-process restart killed after
one more shard, then both processes restarted to the end. The scores must equal the reference bit
for bit, each id once, and the fit the reference's within 1e-6.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from _processes import WordPieceFormatter, finish, free_port

NUM_PROMPTS = 48
NUM_LLMS = 3
NUM_FEATURES = 6
WINDOW = 8  # Distinct pairs per shard.
WORDS = "a cat sat on the mat while dogs ran to B C D because x + 1 is the answer".split()


def make_items() -> list[tuple[str, str, str]]:
  """(id, prompt, response) for each prompt and LLM, with copies: LLM 2 answers like LLM 1 on every
  4th prompt (a copy in the same window) and prompts 40.. repeat prompts 0.. (in other windows)."""
  rng = np.random.default_rng(0)
  texts = {}
  for i in range(NUM_PROMPTS):
    prompt = texts[i - 40, 0][0] if i >= 40 else " ".join(rng.choice(WORDS, rng.integers(1, 20)))
    for m in range(NUM_LLMS):
      if i >= 40:
        texts[i, m] = texts[i - 40, m]
      elif m == 2 and i % 4 == 0:
        texts[i, m] = texts[i, 1]
      else:
        texts[i, m] = (prompt, " ".join(rng.choice(WORDS, rng.integers(1, 30))))
  return [(f"p{i:02d}-m{m}", *texts[i, m]) for i in range(NUM_PROMPTS) for m in range(NUM_LLMS)]


def worker(folder: str, delay: float, fit: bool) -> None:
  from erpjax.runtime import distributed  # pylint: disable=import-outside-toplevel

  info = distributed.initialize(timeout_s=60)  # Before any JAX work; no-op for one process.
  from erpjax import scoring, sharding  # pylint: disable=import-outside-toplevel
  from erpjax.routing._ridge_stats import (  # pylint: disable=import-outside-toplevel
      fit_ridge_streamed)
  from erpjax.scoring import testing  # pylint: disable=import-outside-toplevel

  items = make_items()
  config = scoring.ScoringConfig(lengths=(64,), tokens_per_batch=256, window=WINDOW,
                                 progress=False)
  engine = scoring.ScoringEngine(testing.TinyRewardModel(seed=0), WordPieceFormatter(), config,
                                 score_token="first", name="tiny")
  summary = engine.score(items, folder, on_shard=lambda path: time.sleep(delay))
  result = {"process": info.process_id, "num_skipped": summary.num_skipped}
  if fit:
    scores = scoring.read_scores(folder).as_dict()  # Complete: score() returns after the manifest.
    y = np.array([[scores[f"p{i:02d}-m{m}"] for m in range(NUM_LLMS)]
                  for i in range(NUM_PROMPTS)], np.float32)
    x = np.random.default_rng(1).normal(size=(NUM_PROMPTS, NUM_FEATURES)).astype(np.float32)
    mine = distributed.my_share([f"p{i:02d}" for i in range(NUM_PROMPTS)])
    chunks = [(x[mine[i:i + 8]], y[mine[i:i + 8]]) for i in range(0, len(mine), 8)]
    ridge = fit_ridge_streamed(chunks, NUM_FEATURES, NUM_LLMS, betas=[1.0],
                               mesh=sharding.make_mesh(1), rows_per_device=4)
    result.update(rows=len(mine), weights=ridge.weights.tolist(), bias=ridge.bias.tolist())
  print(json.dumps(result))


@pytest.mark.parametrize("num_processes", [2, 3])
def test_processes_share_out_the_one_process_windows_whole(num_processes):
  from erpjax.scoring._engine import ScoreItem, _windows  # pylint: disable=import-outside-toplevel

  distinct = [ScoreItem(f"id-{i}", "prompt", f"response {i}") for i in range(60)]
  copies = {"id-3": ["copy-3"], "id-17": ["copy-17"]}
  done = {f"id-{i}" for i in range(0, 60, 7)} | {"id-3"}  # id-3's copy is still to be written.
  one = _windows(distinct, copies, done, 8)
  shares = [_windows(distinct, copies, done, 8, p, num_processes) for p in range(num_processes)]
  assert all(shares)  # Each process gets windows (60 pairs: 8 windows).
  assert sorted((w for share in shares for w in share), key=lambda w: w[0].id) == sorted(
      one, key=lambda w: w[0].id)
  assert any(item.id == "id-3" for window in one for item in window)


def test_process_shards_never_collide_and_process_0_writes_the_manifest(tmp_path):
  from erpjax import scoring  # pylint: disable=import-outside-toplevel
  from erpjax.scoring._shards import ShardStore  # pylint: disable=import-outside-toplevel

  folder, job = tmp_path / "scores", {"model": "tiny"}
  with pytest.raises(scoring.ScoreFolderError, match="process 0 must open the folder first"):
    ShardStore(folder, job, process=1)
  first, second = ShardStore(folder, job), ShardStore(folder, job, process=1)
  names = [first.write(["a"], np.ones((1, 1))).name, second.write(["b"], np.ones((1, 1))).name]
  assert names == ["scores-000000.parquet", "scores-000000-1.parquet"]
  second.finish(2)  # Checks the count, writes nothing.
  assert not scoring.read_scores(folder).complete
  first.finish(2)
  assert scoring.read_scores(folder).ids == ("a", "b") and scoring.read_scores(folder).complete
  # A restart as one process continues after every process's shards.
  assert ShardStore(folder, job).write(["c"], np.ones((1, 1))).name == "scores-000001.parquet"


def test_the_cli_starts_the_distributed_run_first(monkeypatch, tmp_path, capsys):
  from erpjax import cli  # pylint: disable=import-outside-toplevel

  # Half a multi-process setting is refused before any work, as one line (exit status 2).
  monkeypatch.setenv("ERPJAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("ERPJAX_PROCESS_ID", "1")
  monkeypatch.delenv("ERPJAX_COORDINATOR", raising=False)
  assert cli.main(["demo", "--output-dir", str(tmp_path / "demo")]) == 2
  assert "needs all of coordinator (ERPJAX_COORDINATOR)" in capsys.readouterr().err
  assert not (tmp_path / "demo").exists()


def _gloo_missing() -> bool:
  try:
    from jax._src.lib import _jax  # pylint: disable=import-outside-toplevel
  except ImportError:
    return True
  return not hasattr(_jax, "make_gloo_tcp_collectives")


def start(folder: pathlib.Path, delays: list[float], fit: bool = False) -> list[subprocess.Popen]:
  """Starts one worker per entry of `delays` (one process, or a run of several on localhost)."""
  # 2 CPU devices per process: each scores on a 2-device mesh, the reference too (same batches).
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  for name in ("ERPJAX_COORDINATOR", "ERPJAX_NUM_PROCESSES", "ERPJAX_PROCESS_ID"):
    env.pop(name, None)
  coordinator = f"localhost:{free_port()}"
  processes = []
  for p, delay in enumerate(delays):
    if len(delays) > 1:
      env.update(ERPJAX_COORDINATOR=coordinator, ERPJAX_NUM_PROCESSES=str(len(delays)),
                 ERPJAX_PROCESS_ID=str(p))
    processes.append(subprocess.Popen(
        [sys.executable, __file__, str(folder), str(delay), *(["fit"] if fit else [])],
        env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  return processes


def shards(folder: pathlib.Path, suffix: str = "") -> list[pathlib.Path]:
  return sorted(folder.glob(f"scores-*{suffix}.parquet"))


def kill_after_shard(processes: list[subprocess.Popen], victim: int, folder: pathlib.Path,
                     suffix: str) -> None:
  """SIGKILLs `processes[victim]` once a shard whose name ends with `suffix` appears beyond those
  there now; then ends the others (in a multi-process run they would wait for it forever)."""
  before = len(shards(folder, suffix))
  deadline = time.monotonic() + 240
  while len(shards(folder, suffix)) <= before:
    for process in processes:
      assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "no shard appeared"
    time.sleep(0.01)
  processes[victim].send_signal(signal.SIGKILL)
  for process in processes:
    process.kill()  # SIGKILL too: no process gets to finish the job.
    process.communicate(timeout=60)
  assert processes[victim].returncode == -signal.SIGKILL


@pytest.mark.skipif(_gloo_missing(), reason="this jaxlib has no gloo CPU collectives, which the "
                    "2-process run needs for its barriers and psums")
def test_two_processes_score_and_fit_like_one_through_kills_and_restarts(tmp_path):
  from erpjax import scoring  # pylint: disable=import-outside-toplevel

  reference = start(tmp_path / "reference", [0.0], fit=True)  # Runs beside the others.
  job = tmp_path / "job"
  # Process 1 is SIGKILLed while sleeping after its first shard; process 0 is mid-run then.
  kill_after_shard(start(job, [0.2, 60.0]), victim=1, folder=job, suffix="-1")
  after_two = scoring.read_scores(job)  # Raises if an id were scored twice.
  assert shards(job, "-1") and not after_two.complete
  # Restarted as ONE process (another count): killed after one shard of its own.
  kill_after_shard(start(job, [60.0]), victim=0, folder=job, suffix="")
  after_one = scoring.read_scores(job)
  assert set(after_two.ids) < set(after_one.ids) and not after_one.complete

  # Both restarted: each skips what any earlier process finished and scores its windows' rest.
  results = finish(start(job, [0.0, 0.0], fit=True), timeout=240)
  (want,) = finish(reference, timeout=240)
  assert [r["process"] for r in results] == [0, 1]
  assert all(r["num_skipped"] == len(after_one) for r in results)
  assert want["num_skipped"] == 0
  assert len(shards(job, "-1")) >= 2  # Process 1 wrote shards in both of its runs.
  got, ref = scoring.read_scores(job), scoring.read_scores(tmp_path / "reference")
  assert got.complete and ref.complete
  assert got.ids == ref.ids == tuple(sorted(item[0] for item in make_items()))
  np.testing.assert_array_equal(got.values, ref.values)  # Bit for bit.
  # The router: both processes hold the same fit, from their own shares, equal to one process's.
  assert results[0]["rows"] + results[1]["rows"] == NUM_PROMPTS and results[1]["rows"] > 0
  assert results[0]["weights"] == results[1]["weights"]
  for key in ("weights", "bias"):
    np.testing.assert_allclose(np.array(results[0][key]), np.array(want[key]), atol=1e-6, rtol=0)
  assert not list(job.glob(".*.tmp"))


if __name__ == "__main__":
  worker(sys.argv[1], float(sys.argv[2]), sys.argv[3:] == ["fit"])
