"""The records job split over 2 CPU processes on localhost (JAX's gloo collectives).

The test runs this file as a worker (`python test_distributed_scoring.py JOB DELAY [FIT]`), as
one process or as process 0 and 1 of a 2-process run (ERPJAX_* variables, read by
`distributed.initialize`). Each worker scores the samples records folder beside JOB into JOB
(`erpjax.streamed.score_samples`: its own record shards, read alone), sleeping DELAY s after each
score shard so that it can be killed mid-run; with FIT it then writes the prompts' features
(`featurize_samples`) and fits a ridge router on them (`fit_features`: each process streams its
own rows, the statistics are psum'd). The job: a 1-process reference beside a 2-process run whose
process 1 is SIGKILLed after its first score shard, a 1-process restart killed after one more, then
both processes restarted to the end. The scores must equal the reference bit for bit, each sample
once, and the router the reference's within 1e-6.
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
from _processes import HashEncoder, WordPieceFormatter, finish, free_port, make_dataset

NUM_SHARDS = 6  # Record shards: process p of 2 owns shards p, p + 2, p + 4.
WINDOW = 8  # Distinct pairs per score shard.


def worker(job: pathlib.Path, delay: float, fit: bool) -> None:
  from erpjax.runtime import distributed  # pylint: disable=import-outside-toplevel

  info = distributed.initialize(timeout_s=60)  # Before any JAX work; no-op for one process.
  from erpjax import scoring, streamed  # pylint: disable=import-outside-toplevel
  from erpjax.scoring import testing  # pylint: disable=import-outside-toplevel

  config = scoring.ScoringConfig(lengths=(64,), tokens_per_batch=256, window=WINDOW,
                                 progress=False)
  engine = scoring.ScoringEngine(testing.TinyRewardModel(seed=0), WordPieceFormatter(), config,
                                 score_token="first", name="tiny")
  summary = streamed.score_samples(job.parent / "samples", engine, job / "scored", name="tiny",
                                   scores=job / "scores", on_shard=lambda path: time.sleep(delay))
  result = {"process": info.process_id, "num_items": summary.num_items,
            "num_skipped": summary.num_skipped}
  if fit:
    streamed.featurize_samples(job / "scored", job / "features", HashEncoder(),
                               reward_model="tiny")
    router, ridge = streamed.fit_features(job / "features", betas=[1.0])
    result.update(counts=ridge.counts.tolist(), weights=np.asarray(router.kernel[...]).tolist(),
                  bias=np.asarray(router.bias[...]).tolist())
  print(json.dumps(result))


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


def start(job: pathlib.Path, delays: list[float], fit: bool = False) -> list[subprocess.Popen]:
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
        [sys.executable, __file__, str(job), str(delay), *(["fit"] if fit else [])],
        env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  return processes


def score_shards(job: pathlib.Path, record_shards=range(NUM_SHARDS)) -> list[pathlib.Path]:
  """The score shards in JOB's score folder of the given record shards."""
  return [path for s in record_shards
          for path in sorted((job / "scores" / f"shard-{s:05d}").glob("scores-*.parquet"))]


def kill_after_shard(processes: list[subprocess.Popen], victim: int, job: pathlib.Path,
                     record_shards=range(NUM_SHARDS)) -> None:
  """SIGKILLs `processes[victim]` once a score shard appears in `record_shards` beyond those there
  now; then ends the others (in a multi-process run they would wait for it forever)."""
  before = len(score_shards(job, record_shards))
  deadline = time.monotonic() + 240
  while len(score_shards(job, record_shards)) <= before:
    for process in processes:
      assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "no shard appeared"
    time.sleep(0.01)
  processes[victim].send_signal(signal.SIGKILL)
  for process in processes:
    process.kill()  # SIGKILL too: no process gets to finish the job.
    process.communicate(timeout=60)
  assert processes[victim].returncode == -signal.SIGKILL


def scored_ids(job: pathlib.Path, record_shards=range(NUM_SHARDS)) -> list[str]:
  """Ids of every score written so far in `record_shards` (duplicates kept)."""
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

  return [i for path in score_shards(job, record_shards)
          for i in pq.read_table(path).column("id").to_pylist()]


def tiny_rewards(folder: pathlib.Path) -> dict[str, float]:
  """Sample id -> reward of reward model "tiny" in a samples records folder."""
  from erpjax import data  # pylint: disable=import-outside-toplevel

  scored = data.read_samples(folder)
  rows = np.flatnonzero(scored.samples.reward_model_index == scored.reward_models.index("tiny"))
  ids = scored.sample_ids(rows)
  assert len(set(ids)) == len(ids)
  return dict(zip(ids, scored.samples.reward[rows].tolist()))


@pytest.mark.skipif(_gloo_missing(), reason="this jaxlib has no gloo CPU collectives, which the "
                    "2-process run needs for its barriers and psums")
def test_two_processes_score_and_fit_like_one_through_kills_and_restarts(tmp_path):
  from erpjax import data  # pylint: disable=import-outside-toplevel

  dataset = make_dataset()
  data.write_samples(dataset, tmp_path / "samples", num_shards=NUM_SHARDS)
  reference = start(tmp_path / "reference", [0.0], fit=True)  # Runs beside the others.
  job = tmp_path / "job"
  # Process 1 is SIGKILLed while sleeping after its first score shard; process 0 is mid-run then.
  owned_by_1 = range(1, NUM_SHARDS, 2)
  kill_after_shard(start(job, [0.2, 60.0]), victim=1, job=job, record_shards=owned_by_1)
  after_two = scored_ids(job)
  assert score_shards(job, owned_by_1) and len(set(after_two)) == len(after_two)
  # Restarted as ONE process (another count): killed after one score shard.
  kill_after_shard(start(job, [60.0]), victim=0, job=job)
  after_one = scored_ids(job)
  assert set(after_two) < set(after_one) and len(set(after_one)) == len(after_one)
  assert not (job / "scored" / "records.json").exists()
  # Record shards written whole before the restart are not read again; the rest skip their scores.
  finished = [int(path.name.split("-")[1]) for path in (job / "scored").glob("samples-*")]
  scores_of_finished = len(scored_ids(job, finished))

  # Both restarted: each finishes its own record shards, skipping every score written before.
  results = finish(start(job, [0.0, 0.0], fit=True), timeout=240)
  (want,) = finish(reference, timeout=240)
  assert [r["process"] for r in results] == [0, 1]
  num_samples = len(dataset.samples)
  assert want["num_items"] == num_samples and want["num_skipped"] == 0
  assert sum(r["num_skipped"] for r in results) == len(after_one) - scores_of_finished
  got, ref = tiny_rewards(job / "scored"), tiny_rewards(tmp_path / "reference" / "scored")
  assert got.keys() == ref.keys() and len(got) == num_samples
  assert [got[i] for i in ref] == list(ref.values())  # Bit for bit.
  assert len(scored_ids(job)) == len(set(scored_ids(job)))  # No score written twice.
  # The router: both processes hold the same fit, from their own rows, equal to one process's.
  assert results[0]["weights"] == results[1]["weights"]
  assert results[0]["counts"] == want["counts"] == [dataset.num_prompts] * dataset.num_llms
  for key in ("weights", "bias"):
    np.testing.assert_allclose(np.array(results[0][key]), np.array(want[key]), atol=1e-6, rtol=0)
  assert not list(job.rglob(".*.tmp"))


if __name__ == "__main__":
  worker(pathlib.Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:] == ["fit"])
