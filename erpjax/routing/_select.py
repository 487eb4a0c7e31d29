"""`predictor: auto`: choose the predictor by k-fold cross-validation on the training split.

Every candidate (a predictor with fixed hyper-parameters) is fit on k - 1 folds and predicts the
held-out fold, giving out-of-fold predictions of every training prompt. From them the safe rule's
margins are calibrated (`calibrate_margins`) and the candidate is scored by what routing needs, on
the training prompts that have a reward for every LLM: its routed reward at lambda = 0 and its AIQ
(RouterBench) over its own lambda grid, routed as `ERPRouter` routes (margins at lambda = 0); score
= their mean (the
reward alone when costs are equal and AIQ is undefined). Not R^2: a predictor can explain much of
the variance of each LLM's reward and still order the LLMs badly on each prompt.

Only the training split is read; test data never enters this module.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping

import numpy as np

from erpjax.routing import _predictors as P
from erpjax.routing._router import (
    ERPRouter,
    fit_router,
    route,
    safe_utilities,
    standardization,
)
from erpjax.routing._safe import calibrate_margins, default_llm

log = logging.getLogger(__name__)


def default_candidates() -> dict[str, object]:
  """{name: predictor}: each family of issue 10 once (kNN's k and each ridge head's beta are
  chosen inside the fit by leave-one-out), and kNN shrunk halfway toward its soft cluster.

  Five candidates keep 5-fold selection within minutes on a 2-core machine: on the RouterBench and
  LLMRouter training splits, 16 vs 64 clusters and ridge shrunk toward the global mean moved the
  CV score by at most 0.0022 (and were never best), so they are left out.
  """
  return {
      "ridge": P.Ridge(),
      "knn": P.KNN(),
      "cluster": P.SoftCluster(clusters=32),
      "mlp": P.MLPPredictor(),
      "knn>cluster": P.Shrunk(P.KNN(), P.SoftCluster(clusters=32), 0.5),
  }


@dataclasses.dataclass(frozen=True)
class CVRow:
  """One candidate's cross-validation result (out-of-fold, training split only).

  Attributes:
    name: the candidate's name.
    predictor: its spec as JSON.
    reward0: mean observed reward of its lambda = 0 routing, safe margins applied.
    raw_reward0: the same without margins.
    aiq: AIQ of its lambda sweep (margins at lambda = 0; nan if the costs are all equal).
    score: what the choice maximises: mean of reward0 and aiq (reward0 when aiq is nan).
    fit_seconds: wall time of its k fits.
  """

  name: str
  predictor: str
  reward0: float
  raw_reward0: float
  aiq: float
  score: float
  fit_seconds: float


@dataclasses.dataclass(frozen=True, eq=False)
class Selection:
  """The outcome of `fit_selected_router`.

  Attributes:
    chosen: the chosen candidate's name.
    table: one `CVRow` per candidate, in candidate order.
    routers: {name: the candidate refit on the whole training split, with its own margins}.
    default_llm: index of the best single LLM on the training split.
    best_single_reward0: its mean reward over the scored training prompts.
    cv_seconds: wall time of the cross-validation; refit_seconds: of the final fits.
  """

  chosen: str
  table: tuple[CVRow, ...]
  routers: Mapping[str, ERPRouter]
  default_llm: int
  best_single_reward0: float
  cv_seconds: float
  refit_seconds: float

  def format_table(self) -> str:
    lines = [f"{'candidate':<14} {'reward@0':>9} {'raw@0':>7} {'AIQ':>7} {'score':>7} {'fit s':>6}"]
    for r in self.table:
      mark = "  <- chosen" if r.name == self.chosen else ""
      lines.append(f"{r.name:<14} {r.reward0:9.4f} {r.raw_reward0:7.4f} {r.aiq:7.4f} "
                   f"{r.score:7.4f} {r.fit_seconds:6.1f}{mark}")
    lines.append(f"(best single LLM on these prompts: {self.best_single_reward0:.4f})")
    return "\n".join(lines)


def fold_ids(num_prompts: int, folds: int, seed: int) -> np.ndarray:
  """[N] fold of each prompt: a seeded permutation dealt round-robin (sizes differ by <= 1)."""
  if not 2 <= folds <= num_prompts:
    raise ValueError(f"need 2 <= folds <= {num_prompts} prompts, got {folds}")
  ids = np.empty(num_prompts, np.int64)
  ids[np.random.default_rng(seed).permutation(num_prompts)] = np.arange(num_prompts) % folds
  return ids


def out_of_fold(predictor, features, targets, folds_n) -> np.ndarray:
  """[N, M] predictions of each prompt by `predictor` fit on the other folds."""
  out = np.full(targets.shape, np.nan)
  for fold in np.unique(folds_n):
    held = folds_n == fold
    state = predictor.fit(features[~held], targets[~held])
    out[held] = np.asarray(predictor.predict(state, features[held]))
  return out


def routing_scores(predicted, margins, rewards, costs,
                   num_cost_weights: int = 50) -> tuple[float, float]:
  """(mean reward of the lambda = 0 routing, AIQ of the lambda sweep) of a router with
  predictions `predicted` [N, M] and safe-rule `margins` [M] (applied at lambda = 0, as
  `ERPRouter.utilities` does) against observed `rewards` [N, M] (finite), routing `costs` [M]."""
  from erpjax.eval import frontier
  from erpjax.routing._sweep import cost_weight_grid

  costs = np.asarray(costs, np.float64)
  choice = route(safe_utilities(predicted, margins, 0.0), costs, 0.0)
  reward0 = float(rewards[np.arange(len(choice)), choice].mean())
  if np.ptp(costs) == 0:
    return reward0, math.nan
  grid = cost_weight_grid(predicted, costs, num_cost_weights)
  choices = [route(safe_utilities(predicted, margins, w), costs, w) for w in grid]
  family = frontier.measure(choices, grid, rewards, costs)
  hull = frontier.nondecreasing_hull(family.cost, family.reward)
  return reward0, frontier.aiq(hull, frontier.default_interval(costs)).value


def fit_selected_router(
    embeddings: np.ndarray,
    expected_rewards: np.ndarray,
    costs: np.ndarray,
    *,
    llms: tuple[str, ...],
    encoder: str,
    reward_model: str,
    candidates: Mapping[str, object] | None = None,
    folds: int = 5,
    seed: int = 0,
    safe: bool = True,
    alpha: float = 0.05,
    standardize: bool = False,
    num_cost_weights: int = 50,
) -> tuple[ERPRouter, Selection]:
  """Cross-validates the candidates on the training split, refits each, returns the best's router.

  Args:
    embeddings: [N, D] training prompt embeddings.
    expected_rewards: [N, M] estimated expected rewards (NaN where an LLM has no samples).
    costs: [M] routing costs.
    llms, encoder, reward_model, standardize: see `RouterSpec`.
    candidates: {name: predictor}; None = `default_candidates()`.
    folds, seed: k and the seed of the fold assignment (by prompt).
    safe: calibrate safe-rule margins (else routers route on raw predictions).
    alpha: the level of the safe rule's test (`calibrate_margins`).
    num_cost_weights: lambda grid size of the AIQ score.

  Returns:
    (the chosen candidate's router, the `Selection` with every candidate's CV row and router).
  """
  candidates = dict(default_candidates() if candidates is None else candidates)
  if not candidates:
    raise ValueError("no candidate predictors to choose from")
  x = np.asarray(embeddings, np.float32)
  y = np.asarray(expected_rewards, np.float64)
  costs = np.asarray(costs, np.float64)
  mean, scale = standardization(x) if standardize else (None, None)
  features = x if mean is None else (x - mean) / scale
  default = default_llm(y, costs)
  complete = np.all(np.isfinite(y), axis=1)
  if not complete.any():
    raise ValueError("no training prompt has a reward for every LLM: cannot score routing")
  scored_rewards = y[complete]
  # A training split smaller than `folds` prompts gets leave-one-out folds.
  folds_n = fold_ids(len(x), min(folds, len(x)), seed)

  start = time.perf_counter()
  rows, margins = [], {}
  for name, predictor in candidates.items():
    t = time.perf_counter()
    oof = out_of_fold(predictor, features, y, folds_n)
    fit_seconds = time.perf_counter() - t
    margins[name] = (calibrate_margins(oof, y, costs, default, alpha) if safe
                     else np.zeros(len(llms)))
    reward0, aiq = routing_scores(oof[complete], margins[name], scored_rewards, costs,
                                  num_cost_weights)
    raw_choice = route(oof[complete], costs, 0.0)
    raw0 = float(scored_rewards[np.arange(len(raw_choice)), raw_choice].mean())
    score = reward0 if math.isnan(aiq) else 0.5 * (reward0 + aiq)
    rows.append(CVRow(name, P.spec_json(predictor), reward0, raw0, aiq, score, fit_seconds))
    log.info("cv %s: reward@0 %.4f, AIQ %.4f (%.1f s)", name, reward0, aiq, fit_seconds)
  cv_seconds = time.perf_counter() - start
  chosen = max(rows, key=lambda r: r.score).name  # first of equals: candidate order

  start = time.perf_counter()
  routers = {
      name: fit_router(x, y, costs, llms=llms, encoder=encoder, reward_model=reward_model,
                       standardize=standardize, predictor=predictor, margins=margins[name],
                       default_llm=default if safe else None)
      for name, predictor in candidates.items()}
  selection = Selection(chosen, tuple(rows), routers, default,
                        float(scored_rewards[:, default].mean()), cv_seconds,
                        time.perf_counter() - start)
  log.info("predictor selection by %d-fold CV on the training split (%.1f s):\n%s", folds,
           cv_seconds, selection.format_table())
  return routers[chosen], selection
