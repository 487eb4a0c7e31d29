"""The routing dataset: prompts x LLMs x reward samples.

A `RoutingDataset` holds one split. Reward samples are stored in long format (one row per sampled
response), so the number K of samples may differ per (prompt, LLM, reward model): the paper draws
K = 32 responses at temperature 1; RouterBench has K = 1.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np

from erpjax.data._errors import DataError


@dataclasses.dataclass(frozen=True)
class RewardSamples:
  """S reward samples in long format.

  Attributes:
    prompt_index: [S] int32, row of the prompt in `RoutingDataset.prompt_ids`.
    llm_index: [S] int32, index into `RoutingDataset.llms`.
    reward_model_index: [S] int32, index into `RoutingDataset.reward_models`.
    reward: [S] float64, the reward of one sampled response.
    cost: [S] float64, the observed US$ cost of that call; NaN where unknown.
    response: optional [S] response texts (needed to score with a reward model).
  """

  prompt_index: np.ndarray
  llm_index: np.ndarray
  reward_model_index: np.ndarray
  reward: np.ndarray
  cost: np.ndarray
  response: tuple[str, ...] | None = None

  def __post_init__(self):
    n = len(self.reward)
    for name in ("prompt_index", "llm_index", "reward_model_index", "cost"):
      if len(getattr(self, name)) != n:
        raise DataError(f"RewardSamples.{name} has {len(getattr(self, name))} rows, reward has {n}")
    if self.response is not None and len(self.response) != n:
      raise DataError(f"RewardSamples.response has {len(self.response)} rows, reward has {n}")

  def __len__(self) -> int:
    return len(self.reward)

  def take(self, rows: np.ndarray) -> RewardSamples:
    """The samples at `rows` ([S'] int or bool mask)."""
    rows = np.flatnonzero(rows) if rows.dtype == bool else rows
    return RewardSamples(
        prompt_index=self.prompt_index[rows],
        llm_index=self.llm_index[rows],
        reward_model_index=self.reward_model_index[rows],
        reward=self.reward[rows],
        cost=self.cost[rows],
        response=None if self.response is None else tuple(self.response[i] for i in rows),
    )

  @staticmethod
  def build(
      prompt_index: Sequence[int],
      llm_index: Sequence[int],
      reward: Sequence[float],
      *,
      reward_model_index: Sequence[int] | None = None,
      cost: Sequence[float] | None = None,
      response: Sequence[str] | None = None,
  ) -> RewardSamples:
    """Builds samples from Python sequences, filling defaults (one reward model, unknown cost)."""
    n = len(reward)
    return RewardSamples(
        prompt_index=np.asarray(prompt_index, np.int32).reshape(n),
        llm_index=np.asarray(llm_index, np.int32).reshape(n),
        reward_model_index=(
            np.zeros(n, np.int32)
            if reward_model_index is None
            else np.asarray(reward_model_index, np.int32).reshape(n)
        ),
        reward=np.asarray(reward, np.float64).reshape(n),
        cost=np.full(n, np.nan) if cost is None else np.asarray(cost, np.float64).reshape(n),
        response=None if response is None else tuple(response),
    )


@dataclasses.dataclass(frozen=True)
class RoutingDataset:
  """One split of a routing dataset.

  Attributes:
    name: a short label for reports, e.g. "routerbench_subset/test".
    prompt_ids: [N] unique prompt ids.
    prompts: [N] prompt texts (non-empty).
    categories: [N] category (task) labels; None where unknown.
    llms: [M] LLM names.
    costs: [M] float64 routing cost c_i of one call to each LLM (US$), used by the router.
    reward_models: [R] reward model names (a benchmark's own correctness score counts as one).
    samples: the reward samples.
    notes: what the reader surfaced about the data (dropped rows, shared prefixes stripped, ...).
  """

  name: str
  prompt_ids: tuple[str, ...]
  prompts: tuple[str, ...]
  categories: tuple[str | None, ...]
  llms: tuple[str, ...]
  costs: np.ndarray
  reward_models: tuple[str, ...]
  samples: RewardSamples
  notes: tuple[str, ...] = ()

  def __post_init__(self):
    n, m, r = len(self.prompt_ids), len(self.llms), len(self.reward_models)
    if len(self.prompts) != n or len(self.categories) != n:
      raise DataError(
          f"{self.name}: {n} prompt ids, {len(self.prompts)} prompts, "
          f"{len(self.categories)} categories"
      )
    if self.costs.shape != (m,):
      raise DataError(f"{self.name}: costs has shape {self.costs.shape}, expected ({m},)")
    _check_unique(self.prompt_ids, f"{self.name}: prompt id")
    _check_unique(self.llms, f"{self.name}: LLM")
    _check_unique(self.reward_models, f"{self.name}: reward model")
    for name, index, size in (
        ("prompt_index", self.samples.prompt_index, n),
        ("llm_index", self.samples.llm_index, m),
        ("reward_model_index", self.samples.reward_model_index, r),
    ):
      if len(index) and (index.min() < 0 or index.max() >= size):
        raise DataError(f"{self.name}: samples.{name} out of range [0, {size})")
    if not np.all(np.isfinite(self.samples.reward)):
      bad = int(np.flatnonzero(~np.isfinite(self.samples.reward))[0])
      raise DataError(f"{self.name}: sample {bad} has a non-finite reward")

  @property
  def num_prompts(self) -> int:
    return len(self.prompt_ids)

  @property
  def num_llms(self) -> int:
    return len(self.llms)

  def sample_ids(self, rows: np.ndarray) -> list[str]:
    """Stable ids of samples `rows`: JSON [prompt id, LLM, k], k counting the earlier samples of
    the same (prompt, LLM) among `rows`. Scores and records are keyed by them."""
    seen: dict[tuple[int, int], int] = {}
    ids = []
    for row in rows:
      key = (int(self.samples.prompt_index[row]), int(self.samples.llm_index[row]))
      k = seen.get(key, 0)
      seen[key] = k + 1
      ids.append(json.dumps([self.prompt_ids[key[0]], self.llms[key[1]], k]))
    return ids

  def select_prompts(self, keep: np.ndarray, *, note: str | None = None) -> RoutingDataset:
    """The dataset restricted to prompts `keep` ([N] bool mask or [N'] int rows).

    Samples are remapped to the kept prompts.
    """
    keep = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
    new_row = np.full(self.num_prompts, -1, np.int64)
    new_row[keep] = np.arange(len(keep))
    samples = self.samples.take(np.flatnonzero(new_row[self.samples.prompt_index] >= 0))
    samples = dataclasses.replace(
        samples, prompt_index=new_row[samples.prompt_index].astype(np.int32)
    )
    return dataclasses.replace(
        self,
        prompt_ids=tuple(self.prompt_ids[i] for i in keep),
        prompts=tuple(self.prompts[i] for i in keep),
        categories=tuple(self.categories[i] for i in keep),
        samples=samples,
        notes=self.notes + ((note,) if note else ()),
    )

  def select_llms(self, names: Sequence[str]) -> RoutingDataset:
    """The dataset restricted to LLMs `names`, in that order."""
    missing = [name for name in names if name not in self.llms]
    if missing:
      raise DataError(f"{self.name}: unknown LLM(s) {missing}; known: {list(self.llms)}")
    old = np.array([self.llms.index(name) for name in names], np.int64)
    new_index = np.full(self.num_llms, -1, np.int64)
    new_index[old] = np.arange(len(old))
    samples = self.samples.take(np.flatnonzero(new_index[self.samples.llm_index] >= 0))
    samples = dataclasses.replace(samples, llm_index=new_index[samples.llm_index].astype(np.int32))
    return dataclasses.replace(self, llms=tuple(names), costs=self.costs[old], samples=samples)


def first_duplicate(values: Sequence[str]) -> tuple[int, int] | None:
  """(first, second): the positions of the earliest value that occurs again, or None."""
  first: dict[str, int] = {}
  for i, value in enumerate(values):
    if value in first:
      return first[value], i
    first[value] = i
  return None


def _check_unique(values: Sequence[str], what: str) -> None:
  duplicate = first_duplicate(values)
  if duplicate is not None:
    raise DataError(f"{what} {values[duplicate[1]]!r} occurs twice (second at position "
                    f"{duplicate[1]})")
