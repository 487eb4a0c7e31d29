"""The scoring engine: (id, prompt, response) items -> reward scores in resumable Parquet shards.

Data flows one way: the items still to score are cut into windows (`_windows`);
`erpjax.runtime.Runner` tokenizes each window with the model's `Formatter` and
packs it into batches of a bounded set of shapes on its prefetch thread, runs the reward model on
the device mesh and hands back each sequence's scores; the engine gives copies of a pair the
pair's score and writes each window's scores as one Parquet shard (`_shards`).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import pathlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

import erpjax.models  # noqa: F401  # Its __init__ registers the model families.
from erpjax import sharding
from erpjax.dtypes import Dtype, check_dtype
from erpjax.models._hf import read_config
from erpjax.models._registry import load_reward_model
from erpjax.runtime import Batch, Buckets, Runner, ScoreToken, pack
from erpjax.scoring._format import Formatter, formatter_for
from erpjax.scoring._shards import ScoreFolderError, ShardStore, checkpoint_digest

# HF model types that score at the first token ([CLS]); every other family is read as a decoder,
# scored at its last token as transformers' *ForSequenceClassification does.
_ENCODER_MODEL_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "distilbert", "electra"})
# RoBERTa-style position ids start after the padding index, so two table rows are unusable.
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2}


class ScoreItem(NamedTuple):
  """One response to score; plain (id, prompt, response) tuples work too."""

  id: str
  prompt: str
  response: str


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
  """How a scoring job batches, places and stores its work.

  Attributes:
    lengths: bucket row lengths; the longest is the truncation length.
    tokens_per_batch: token slots per batch (rows = tokens_per_batch // length).
    max_segments: most sequences packed into one row (1 = bucketing without packing).
    window: distinct pairs tokenized, packed and scored together and written as one Parquet
      shard; a larger window packs tighter, a smaller one loses less work to a kill.
    prefetch: batches prepared ahead of the device.
    dtype: "float32" or "bfloat16" parameters and activations (scores are float32 either way).
    model_parallel: devices per model copy on the mesh's "model" axis; the rest split the batch.
    progress: show a tqdm progress bar.
    dedupe: score each distinct (prompt, response) once and give every item with that text its
      score. Sampled responses repeat (short answers, multiple-choice letters): 55% of
      routerbench_subset's pairs are copies of another.
    compiler_options: XLA options of the scoring step; None = `erpjax.runtime.cpu_compiler_options`
      of `dtype` on CPU (the fastest measured there), none elsewhere.
  """

  lengths: tuple[int, ...] = (128, 256, 512)
  tokens_per_batch: int = 16384
  max_segments: int = 16
  window: int = 4096
  prefetch: int = 4
  dtype: Dtype = "float32"
  model_parallel: int = 1
  progress: bool = True
  dedupe: bool = True
  compiler_options: Mapping[str, Any] | None = None

  def __post_init__(self):
    object.__setattr__(self, "lengths", tuple(self.lengths))
    Buckets(self.lengths, self.tokens_per_batch, self.max_segments)  # Validates those fields.
    for name in ("window", "prefetch", "model_parallel"):
      if getattr(self, name) < 1:
        raise ValueError(f"ScoringConfig.{name} must be >= 1, got {getattr(self, name)}")
    check_dtype(self.dtype, "ScoringConfig.dtype")


@dataclasses.dataclass(frozen=True)
class ScoringSummary:
  """What one `ScoringEngine.score` call did.

  Attributes:
    num_items: input items.
    num_skipped: items already scored in the folder (by an earlier, interrupted run).
    num_copies: items given the score of an identical (prompt, response) without a forward pass.
    num_tokens: real tokens run through the model by this call.
    num_slots: token slots of the batches run (real tokens + padding).
    seconds: wall time of the call.
    batch_shapes: the distinct (rows, length) batch shapes run.
  """

  num_items: int
  num_skipped: int
  num_copies: int
  num_tokens: int
  num_slots: int
  seconds: float
  batch_shapes: tuple[tuple[int, int], ...]

  @property
  def padding_fraction(self) -> float:
    return 1.0 - self.num_tokens / self.num_slots if self.num_slots else 0.0

  @property
  def tokens_per_s(self) -> float:
    return self.num_tokens / self.seconds if self.seconds else 0.0


class ScoringEngine:
  """Scores (id, prompt, response) items with one reward model on a device mesh."""

  def __init__(
      self,
      model: nnx.Module,
      formatter: Formatter,
      config: ScoringConfig = ScoringConfig(),
      *,
      score_token: ScoreToken,
      name: str,
      mesh: Mesh | None = None,
      rules: Sequence[tuple[str, str | None]] = sharding.SCORING_RULES,
  ):
    """Places `model` on `mesh` and compiles lazily, once per batch shape.

    Args:
      model: a reward model: `model(tokens_bt, segment_ids_bt, positions_bt, score_index_bs[,
        token_types_bt])` -> scores [B, S, L] (`erpjax.scoring.testing.TinyRewardModel` is the
        smallest example); its floating parameters are cast to `config.dtype`.
      formatter: tokenizes pairs for this model.
      config: batching and storage options.
      score_token: "first" (encoders, [CLS]) or "last" (decoders) token of each sequence.
      name: names the model in score folders; a folder only resumes a job of the same name.
      mesh: a ("data", "model") mesh; default: this process's devices, `config.model_parallel`
        per copy.
      rules: logical axis -> mesh axis table for the parameters.
    """
    self.config = config
    self.formatter = formatter
    self.score_token = score_token
    self.name = name
    self.checkpoint_sha256: str | None = None  # from_pretrained's `checkpoint_digest` of the folder
    # Each process of a multi-process job scores on its own devices. A mesh spanning processes
    # would make every step one program that all processes enter together with the same batch
    # shape, but their windows pack into different numbers and shapes of batches, and a killed
    # process would stall the others mid-step. Scoring needs nothing from another process's
    # items, so each process scores its own into its own folders (and a model must fit one
    # host's devices).
    if mesh is None:
      mesh = sharding.make_mesh(config.model_parallel, jax.local_devices())
    self.mesh = mesh
    self.buckets = Buckets(config.lengths, config.tokens_per_batch, config.max_segments,
                           row_multiple=self.mesh.shape[sharding.DATA])
    # Text-pair token types go to models that take them (BERT-like encoders), not to decoders.
    self.uses_token_types = "token_types_bt" in inspect.signature(model.__call__).parameters
    graphdef, state = nnx.split(model)
    dtype = jnp.dtype(config.dtype)
    state = jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype
        else x, state)

    def forward(state: nnx.State, inputs: Mapping[str, jax.Array]) -> jax.Array:
      return nnx.merge(graphdef, state)(**inputs).astype(jnp.float32)

    self.runner = Runner(forward, state, mesh=self.mesh, rules=rules, dtype=config.dtype,
                         compiler_options=config.compiler_options, prefetch=config.prefetch)

  @property
  def compiler_options(self) -> dict[str, Any]:
    """The XLA options the scoring step is compiled with."""
    return self.runner.compiler_options

  @property
  def traced_shapes(self) -> list[tuple[int, int]]:
    """Batch shapes in the order the step was traced (each trace is one compilation)."""
    return self.runner.traced_shapes

  @classmethod
  def from_pretrained(
      cls,
      path: str | os.PathLike[str],
      config: ScoringConfig = ScoringConfig(),
      *,
      formatter: Formatter | None = None,
      mesh: Mesh | None = None,
  ) -> ScoringEngine:
    """The engine for the HF checkpoint folder `path` (loaded with `load_reward_model`)."""
    path = pathlib.Path(path).absolute()
    hf_config = read_config(path)
    model_type = hf_config.get("model_type")
    limit = hf_config.get("max_position_embeddings")
    if limit is not None and max(config.lengths) > limit - _POSITION_OFFSET.get(model_type, 0):
      raise ValueError(f"{path}: bucket length {max(config.lengths)} exceeds the model's "
                       f"{limit - _POSITION_OFFSET.get(model_type, 0)} positions")
    digest = checkpoint_digest(path)  # Before loading: the key is of the weights that are read.
    model = load_reward_model(path, dtype=jnp.dtype(config.dtype))
    engine = cls(
        model,
        formatter_for(path) if formatter is None else formatter,
        config,
        score_token="first" if model_type in _ENCODER_MODEL_TYPES else "last",
        name=str(path),
        mesh=mesh,
    )
    engine.checkpoint_sha256 = digest
    return engine

  def job(self) -> dict[str, Any]:
    """What a score folder records and checks on resume: what changes the scores."""
    return {
        "model": self.name,
        # Scores follow the weights, not the path: retrained weights at the path are another job.
        "checkpoint_sha256": self.checkpoint_sha256,
        "formatter": self.formatter.name,
        "max_length": self.buckets.max_length,
        "score_token": self.score_token,
        "dtype": self.config.dtype,
    }

  def score(
      self,
      items: Sequence[ScoreItem | tuple[str, str, str]],
      folder: str | os.PathLike[str],
      *,
      on_shard: Callable[[pathlib.Path], None] | None = None,
  ) -> ScoringSummary:
    """Scores `items` into Parquet shards in `folder`, skipping ids already scored there.

    Items with the same (prompt, response) share one forward pass (`config.dedupe`). The distinct
    pairs are cut into windows of `config.window` in input order; a window is tokenized, packed
    and scored together and written as one shard, with the copies' scores. Killed at any point
    and called again with the same items and config, the job ends with exactly one score per id,
    each computed in the same batch as in an uninterrupted run. Read the result with
    `read_scores(folder)`.

    This process scores all of `items` into `folder`: in a multi-process run, each process calls
    it with its own items and folder (`erpjax.streamed` gives each its own record shards).

    Args:
      items: (id, prompt, response) with unique ids.
      folder: the job's score folder (created if needed).
      on_shard: called with each shard's path once it is written.

    Raises:
      ValueError: duplicate ids.
      ScoreFolderError: the folder holds another job's scores, or ids not among `items`.
    """
    start = time.perf_counter()
    items = [ScoreItem(*item) for item in items]
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
      seen: set[str] = set()
      duplicate = next(i for i in ids if i in seen or seen.add(i))
      raise ValueError(f"item id {duplicate!r} occurs more than once")
    store = ShardStore(folder, self.job())
    done = store.completed_ids()
    foreign = done.difference(ids)
    if foreign:
      raise ScoreFolderError(f"{folder} holds scores of {len(foreign)} ids not in this input, "
                             f"e.g. {sorted(foreign)[:3]}")
    if self.config.dedupe:
      distinct, copies = _group_copies(items)
    else:
      distinct, copies = items, {}
    windows = _windows(distinct, copies, done, self.config.window)

    num_tokens = num_slots = num_copies = 0
    shapes: set[tuple[int, int]] = set()
    shard_ids: list[str] = []
    shard_values: list[np.ndarray] = []
    runs = self.runner.run(self._batches(windows), total=sum(map(len, windows)),
                           progress=self.config.progress,
                           desc=f"scoring {'/'.join(pathlib.Path(self.name).parts[-2:])}")
    for batch, values, ends_window in runs:
      num_tokens += batch.num_tokens
      num_slots += batch.num_slots
      shapes.add(batch.shape)
      ids, rows = _fan_out(batch.ids, copies, done)
      num_copies += len(set(ids).difference(batch.ids))
      shard_ids.extend(ids)
      shard_values.append(values[rows])
      if ends_window:
        path = store.write(shard_ids, np.concatenate(shard_values))
        shard_ids.clear()
        shard_values.clear()
        if on_shard is not None:
          on_shard(path)
    store.finish(len(items))
    return ScoringSummary(len(items), len(done), num_copies, num_tokens, num_slots,
                          time.perf_counter() - start, tuple(sorted(shapes)))

  def _batches(self, windows: Sequence[Sequence[ScoreItem]]) -> Iterator[tuple[Batch, bool]]:
    """Packed batches of each window, each with whether it ends its window (runs on the
    runner's prefetch thread: tokenizing the next window overlaps the device)."""
    for window in windows:
      tokenized = self.formatter([item.prompt for item in window],
                                 [item.response for item in window], self.buckets.max_length)
      if not self.uses_token_types:
        tokenized = tokenized._replace(types=None)
      batches = pack([item.id for item in window], tokenized, self.buckets, self.score_token)
      for i, batch in enumerate(batches):
        yield batch, i == len(batches) - 1


def _windows(distinct: Sequence[ScoreItem], copies: Mapping[str, Sequence[str]], done: set[str],
             size: int) -> list[list[ScoreItem]]:
  """The distinct pairs cut into windows of `size` in input order, less the pairs whose ids (the
  pair's and its copies') all have a score.

  Windows are cut from all distinct pairs, done or not, so a resumed job packs each window it
  still has to score exactly as an uninterrupted one would (a score's last bits depend on its
  place in the batch).
  """
  windows = []
  for i in range(0, len(distinct), size):
    window = [item for item in distinct[i:i + size]
              if not done.issuperset([item.id, *copies.get(item.id, ())])]
    if window:
      windows.append(window)
  return windows


def _group_copies(items: Sequence[ScoreItem]
                  ) -> tuple[list[ScoreItem], dict[str, list[str]]]:
  """The first item of each distinct (prompt, response) in input order, and for each of those the
  ids of the later items with the same text (its copies)."""
  first: dict[tuple[str, str], ScoreItem] = {}
  copies: dict[str, list[str]] = {}
  for item in items:
    scored = first.setdefault((item.prompt, item.response), item)
    if scored is not item:
      copies.setdefault(scored.id, []).append(item.id)
  return list(first.values()), copies


def _fan_out(scored_ids: Sequence[str], copies: Mapping[str, Sequence[str]], done: set[str]
             ) -> tuple[list[str], list[int]]:
  """The ids to write for a batch, and for each the row of `scored_ids` whose score it takes:
  every scored id and its copies, less those a shard already holds (written by an earlier run)."""
  ids, rows = [], []
  for row, scored in enumerate(scored_ids):
    for item_id in (scored, *copies.get(scored, ())):
      if item_id not in done:
        ids.append(item_id)
        rows.append(row)
  return ids, rows
