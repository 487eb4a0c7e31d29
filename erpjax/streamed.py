"""The job over ArrayRecord folders, shard by shard, each process its own shards: erpjax on a pod.

A "samples" records folder (`erpjax convert`, `erpjax.data.write_samples`) keeps every prompt's
samples in one shard, chosen by a stable hash of the prompt id, so a shard is a self-contained unit
of work. Each stage maps the shards of its input folder to the same-numbered shards of its output
folder, and process p of a P-process run (`erpjax.runtime.distributed`) handles the shards s with
s % P == p: it reads only those (random access into their ArrayRecord files), holds one shard at
a time, writes each output shard whole and skips the shards that an earlier, interrupted run
finished, so a restart with any process count resumes (`write_records_by_shard`):

  score_samples:     samples -> samples with one more reward model; each shard's scores go
                     through a resumable score folder of its own (a kill loses at most a window)
  featurize_samples: samples -> features: each prompt's embedding and its estimated expected
                     reward under one reward model for each LLM
  fit_features:      features -> ridge router; every process streams its own rows' statistics,
                     psum'd over devices and processes; each head's penalty chosen by GCV

A process's memory is one shard (plus the models) whatever N is: more data means more shards
(`default_num_shards`), not bigger ones.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from erpjax.data import DataError
from erpjax.data._records import (feature_chunks, feature_records, read_manifest, read_samples,
                                  sample_records, write_records_by_shard)

SAMPLES_PER_SHARD = 200_000  # ~100-400 MB of decoded samples with their texts: one shard in memory.


def default_num_shards(num_samples: int) -> int:
  """Shards for `num_samples` samples: at most `SAMPLES_PER_SHARD` on average in one."""
  return max(1, math.ceil(num_samples / SAMPLES_PER_SHARD))


def _samples_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
  manifest = read_manifest(folder)
  if manifest["kind"] != "samples":
    raise DataError(f"{folder}: holds {manifest['kind']!r} records, expected 'samples'")
  return manifest


def _shard_dataset(folder: str | os.PathLike[str], shard: int):
  """The `RoutingDataset` of one shard, or None when no prompt hashed to it."""
  data = read_samples(folder, shards=[shard])
  return data if data.num_prompts else None


def score_samples(samples: str | os.PathLike[str], engine, output: str | os.PathLike[str], *,
                  name: str, scores: str | os.PathLike[str] | None = None,
                  on_shard: Callable[[pathlib.Path], None] | None = None):
  """Adds reward model `name`, `engine`'s score of each response, to the samples folder
  `samples`, as the new samples folder `output`.

  Each shard's responses are scored into `<scores>/shard-NNNNN` (default scores folder:
  `<output>.scores`; see `ScoringEngine.score` for how a killed job resumes there) and the shard
  is written to `output` with the new reward model's samples added. `on_shard` is called with
  each score shard (Parquet file) once it is written.

  Returns:
    The `ScoringSummary` of this process's shards (counts and seconds summed).

  Raises:
    DataError: `name` is a reward model of the samples already, or they carry no responses.
  """
  import jax

  from erpjax import files
  from erpjax.scoring import ScoringSummary, score_dataset

  manifest = _samples_manifest(samples)
  meta = manifest["meta"]
  if name in meta["reward_models"]:
    raise DataError(f"{samples}: reward model {name!r} exists already")
  output = pathlib.Path(output).absolute()
  scores = pathlib.Path(scores or output.with_name(output.name + ".scores")).absolute()
  if jax.process_index() == 0:  # The others open it after write_records_by_shard's barrier.
    files.claim_output_dir(scores, "scores")
  note = (f"reward model {name!r}: responses scored by {engine.name} ({engine.formatter.name} "
          f"inputs, max {engine.buckets.max_length} tokens)")
  out_meta = {**meta, "reward_models": [*meta["reward_models"], name],
              "notes": [*meta["notes"], note], "scoring_job": engine.job()}
  summaries = []

  def shard_records(shard: int) -> Iterator[bytes]:
    data = _shard_dataset(samples, shard)
    if data is None:
      return
    scored, summary = score_dataset(data, engine, scores / f"shard-{shard:05d}", name=name,
                                    on_shard=on_shard)
    summaries.append(summary)
    for _, record in sample_records(scored):
      yield record

  write_records_by_shard(output, "samples", len(manifest["files"]), shard_records, meta=out_meta)
  totals = [sum(getattr(s, field.name) for s in summaries)
            for field in dataclasses.fields(ScoringSummary)[:-1]]
  shapes = sorted({shape for s in summaries for shape in s.batch_shapes})
  return ScoringSummary(*totals, tuple(shapes))


def featurize_samples(samples: str | os.PathLike[str], output: str | os.PathLike[str], encoder, *,
                      reward_model: str | None = None, batch_size: int = 64) -> pathlib.Path:
  """Writes the "features" folder `output`: for each prompt of the samples folder `samples`, its
  embedding by `encoder` (as `erpjax.pipeline.embed` takes it, e.g.
  `erpjax.encode.PromptEncoder`) and the mean reward of each LLM's samples under
  `reward_model` (None: the first; NaN where an LLM has none). Features shard s holds the prompts
  of samples shard s.
  """
  from erpjax import pipeline
  from erpjax.config import EncoderConfig
  from erpjax.estimate import estimate_expected_rewards

  manifest = _samples_manifest(samples)
  meta = manifest["meta"]
  reward_model = reward_model or meta["reward_models"][0]
  if reward_model not in meta["reward_models"]:
    raise DataError(f"{samples}: no reward model {reward_model!r}; has {meta['reward_models']}")
  index = meta["reward_models"].index(reward_model)
  out_meta = {"name": meta["name"], "llms": meta["llms"], "costs": meta["costs"],
              "dim": encoder.dim, "encoder": encoder.identifier, "reward_model": reward_model}

  def shard_records(shard: int) -> Iterator[bytes]:
    data = _shard_dataset(samples, shard)
    if data is None:
      return
    rewards = estimate_expected_rewards(data).of(index)
    # The one embedding path (with its truncation note); no on-disk cache of a pod's prompts.
    embeddings = pipeline.embed(encoder, data.prompts,
                                EncoderConfig(batch_size=batch_size, cache=False), progress=False)
    yield from feature_records(data.prompt_ids, embeddings, rewards, dim=encoder.dim,
                               num_llms=data.num_llms)

  return write_records_by_shard(output, "features", len(manifest["files"]), shard_records,
                                meta=out_meta)


def fit_features(features: str | os.PathLike[str], *, betas=None, chunk_size: int = 8192,
                 mesh=None):
  """A ridge router fit on the "features" folder `features` (`featurize_samples`).

  Every process streams its own rows (`feature_chunks` with the process as the shard) in chunks of
  `chunk_size` into sufficient statistics psum'd over the mesh's data axis and the processes
  (`fit_ridge_streamed`); each head's penalty is chosen from `betas` (default
  `erpjax.routing._ridge.BETA_GRID`) by GCV. Every process returns the same router.

  Returns:
    (the `ERPRouter`, the `RidgeFit` with the GCV scores).
  """
  import jax

  from erpjax.routing import _predictors
  from erpjax.routing._ridge import BETA_GRID
  from erpjax.routing._ridge_stats import fit_ridge_streamed
  from erpjax.routing._router import RouterSpec, build_router

  manifest = read_manifest(features)
  if manifest["kind"] != "features":
    raise DataError(f"{features}: holds {manifest['kind']!r} records, expected 'features'")
  meta = manifest["meta"]
  chunks = ((c.features, c.rewards) for c in feature_chunks(
      features, batch_size=chunk_size, shard_index=jax.process_index(),
      shard_count=jax.process_count()))
  fit = fit_ridge_streamed(chunks, meta["dim"], len(meta["llms"]),
                           BETA_GRID if betas is None else betas, mesh=mesh)
  # Ridge(beta=None): a penalty per head, chosen on the training prompts (here by GCV).
  spec = RouterSpec(llms=tuple(meta["llms"]), encoder=meta["encoder"],
                    reward_model=meta["reward_model"], embedding_dim=meta["dim"],
                    predictor=_predictors.spec_json(_predictors.Ridge(None)))
  state = {"kernel": fit.weights, "bias": fit.bias, "beta": fit.betas.astype(np.float32)}
  return build_router(spec, state, np.asarray(meta["costs"], np.float64)), fit
