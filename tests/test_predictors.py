"""Predictors behind one interface, the safe rule, CV selection, checkpoint integrity, budgets."""

import json
import pathlib

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from erpjax import files
from erpjax.routing import (
    KNN,
    GlobalMean,
    MLPPredictor,
    Ridge,
    RouterCheckpointError,
    Shrunk,
    SoftCluster,
    add_llm,
    calibrate_margins,
    cost_weight_for_budget,
    fit_router,
    fit_selected_router,
    load_router,
    loo_errors,
    ridge_path,
    route,
    save_router,
)
from erpjax.routing._ridge import fit_ridge_heads

COSTS = np.array([1.0, 2.0, 3.0])
# P(reward = 1) per (cluster, LLM): LLM k is clearly best on cluster k.
P_RIGHT = np.array([[0.9, 0.2, 0.2], [0.2, 0.9, 0.2], [0.2, 0.2, 0.9]])


def _clusters(n, seed, dim=16, spread=3.0):
  """Embeddings around 3 well-separated centres; 0/1 rewards; LLM k best on cluster k."""
  rng = np.random.default_rng(seed)
  centres = np.random.default_rng(1234).normal(size=(3, dim))
  cluster = rng.integers(0, 3, n)
  x = (spread * centres[cluster] + rng.normal(size=(n, dim))).astype(np.float32)
  rewards = (rng.random((n, 3)) < P_RIGHT[cluster]).astype(np.float64)
  return x, rewards, cluster


X, Y, CLUSTER = _clusters(300, seed=0)
X_TEST, Y_TEST, CLUSTER_TEST = _clusters(200, seed=1)

PREDICTORS = {
    "ridge": Ridge(),
    "ridge_beta1": Ridge(beta=1.0),
    "knn": KNN(),
    "cluster": SoftCluster(clusters=3, temperature=0.05),
    "mlp": MLPPredictor(steps=100),
    "shrunk": Shrunk(KNN(k=10), SoftCluster(clusters=3), 0.5),
    "mean": GlobalMean(),
}


# Ridge: LOO and GCV in closed form.


def test_loo_ridge_equals_brute_force_leave_one_out():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 6))
  y = x @ rng.normal(size=(6, 2)) + rng.normal(size=(40, 2)) + 3.0
  betas = np.array([1e-3, 0.5, 20.0])
  brute = np.zeros((3, 2))
  for k, beta in enumerate(betas):
    for i in range(40):
      keep = np.arange(40) != i
      xm, ym = x[keep].mean(0), y[keep].mean(0)
      xc = x[keep] - xm
      w = np.linalg.solve(xc.T @ xc + beta * np.eye(6), xc.T @ (y[keep] - ym))
      brute[k] += (y[i] - ym - (x[i] - xm) @ w) ** 2 / 40
  np.testing.assert_allclose(loo_errors(x, y, betas), brute, rtol=1e-6, atol=0)
  # Each head takes the penalty of least LOO error.
  _, _, chosen = fit_ridge_heads(x, y, None)
  grid_errors = loo_errors(x, y, np.asarray(sorted(set(chosen))))
  assert grid_errors.shape[1] == 2


def test_ridge_path_weights_and_gcv_match_direct_formulas():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(50, 5))
  y = x @ rng.normal(size=(5, 3)) + rng.normal(size=(50, 3))
  xc, yc = x - x.mean(0), y - y.mean(0)
  betas = np.array([0.1, 10.0])
  weights, gcv = ridge_path(xc.T @ xc, xc.T @ yc, (yc**2).sum(0), 50, betas)
  for k, beta in enumerate(betas):
    inverse = np.linalg.inv(xc.T @ xc + beta * np.eye(5))
    w = inverse @ xc.T @ yc
    np.testing.assert_allclose(weights[k], w, rtol=1e-9)
    rss = ((yc - xc @ w) ** 2).sum(0)
    df = np.trace(xc @ inverse @ xc.T)
    np.testing.assert_allclose(gcv[k], 50 * rss / (50 - 1 - df) ** 2, rtol=1e-9)


def test_ridge_chooses_a_larger_penalty_for_a_noisier_head():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(80, 10))
  signal = x @ rng.normal(size=10)
  y = np.stack([signal + 0.01 * rng.normal(size=80), rng.normal(size=80)], axis=1)
  state = Ridge().fit(x, y)
  assert state["beta"][0] < state["beta"][1]


# Every predictor: known answers, add_llm bit-identity, checkpoint round trip.


@pytest.mark.parametrize("name", ["knn", "cluster", "shrunk"])
def test_neighbour_and_cluster_predictors_route_separable_clusters_exactly(name):
  predictor = PREDICTORS[name]
  pred = np.asarray(predictor.predict(predictor.fit(X, Y), X_TEST))
  np.testing.assert_array_equal(route(pred, COSTS, 0.0), CLUSTER_TEST)


def test_knn_is_the_mean_of_the_k_most_cosine_similar_observed_prompts():
  x = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.2], [-1.0, 0.0], [3.0, 0.1]])
  y = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.0, 0.0], [np.nan, 0.7]])
  knn = KNN(k=2)
  pred = np.asarray(knn.predict(knn.fit(x, y), np.array([[3.0, 0.0]])))
  # LLM 0 does not see row 4 (unobserved): rows 0 and 2. LLM 1: rows 4 and 0.
  np.testing.assert_allclose(pred, [[0.75, 0.35]], rtol=1e-6)


@pytest.mark.parametrize("name", ["ridge", "mlp"])
def test_regressors_route_most_prompts_right(name):
  predictor = PREDICTORS[name]
  pred = np.asarray(predictor.predict(predictor.fit(X, Y), X_TEST))
  # Linear/MLP heads on 3 clusters: routing by their predictions beats random (~0.43) clearly.
  reward = Y_TEST[np.arange(200), route(pred, COSTS, 0.0)].mean()
  assert reward > 0.75


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_add_llm_keeps_other_llms_bit_identical_and_round_trips(name, tmp_path):
  predictor = PREDICTORS[name]
  router = fit_router(X, Y[:, :2], COSTS[:2], llms=("a", "b"), encoder="enc", reward_model="rm",
                      predictor=predictor)
  path = save_router(router, tmp_path / "r2")
  loaded = load_router(path, expect_llms=("a", "b"))
  assert loaded.spec == router.spec
  np.testing.assert_array_equal(np.asarray(loaded.predict(X_TEST)),
                                np.asarray(router.predict(X_TEST)))
  grown = add_llm(loaded, "c", X[:150], Y[:150, 2], cost=COSTS[2])
  before, after = loaded.predictor_state(), grown.predictor_state()
  for array, axis in predictor.llm_axes().items():
    old = np.take(np.asarray(after[array]), np.arange(2), axis=axis)
    # kNN appends the new LLM's prompts as rows: the old rows come first.
    old = old[tuple(slice(0, size) for size in np.shape(before[array]))]
    np.testing.assert_array_equal(old, np.asarray(before[array]))
  np.testing.assert_array_equal(np.asarray(grown.predict(X_TEST))[:, :2],
                                np.asarray(loaded.predict(X_TEST)))
  regrown = load_router(save_router(grown, tmp_path / "r3"))
  np.testing.assert_array_equal(np.asarray(regrown.predict(X_TEST)),
                                np.asarray(grown.predict(X_TEST)))


# Checkpoint integrity and safe replacement (issue 9).


def _router():
  return fit_router(X, Y, COSTS, llms=("a", "b", "c"), encoder="enc", reward_model="rm",
                    predictor=Ridge())


def _largest_data_file(path: pathlib.Path) -> pathlib.Path:
  candidates = [p for p in (path / "state").rglob("*") if p.is_file()]
  return max(candidates, key=lambda p: p.stat().st_size)


def test_corrupted_weight_bytes_are_refused(tmp_path):
  path = save_router(_router(), tmp_path / "router")
  data = _largest_data_file(path)
  raw = bytearray(data.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  data.write_bytes(bytes(raw))
  with pytest.raises(RouterCheckpointError, match="corrupt|cannot be read"):
    load_router(path)


def test_truncated_weight_file_is_refused(tmp_path):
  path = save_router(_router(), tmp_path / "router")
  data = _largest_data_file(path)
  data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
  with pytest.raises(RouterCheckpointError):
    load_router(path)


def test_checksum_in_metadata_is_verified(tmp_path):
  path = save_router(_router(), tmp_path / "router")
  meta_file = next(pathlib.Path(path, "metadata").glob("*"))
  meta = json.loads(meta_file.read_text())
  meta["arrays"]["kernel"]["sha256"] = "0" * 64
  meta_file.write_text(json.dumps(meta))
  with pytest.raises(RouterCheckpointError, match="kernel: checksum differs"):
    load_router(path)


def test_non_finite_router_is_not_saved(tmp_path):
  router = _router()
  router.kernel[...] = router.kernel[...].at[0, 0].set(np.inf)
  with pytest.raises(RouterCheckpointError, match="non-finite"):
    save_router(router, tmp_path / "router")
  assert not (tmp_path / "router").exists()


def test_a_folder_of_user_files_is_never_replaced(tmp_path):
  folder = tmp_path / "docs"
  folder.mkdir()
  (folder / "thesis.txt").write_text("precious")
  with pytest.raises(files.OutputPathError, match="did not write"):
    save_router(_router(), folder)
  assert (folder / "thesis.txt").read_text() == "precious"


def test_failed_replacement_leaves_the_old_router(tmp_path, monkeypatch):
  path = save_router(_router(), tmp_path / "router")
  old = np.asarray(load_router(path).predict(X_TEST))
  import orbax.checkpoint as ocp

  def broken_save(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(ocp.Checkpointer, "save", broken_save)
  with pytest.raises(OSError, match="disk full"):
    save_router(fit_router(X, 1 - Y, COSTS, llms=("a", "b", "c"), encoder="enc",
                           reward_model="rm"), path)
  np.testing.assert_array_equal(np.asarray(load_router(path).predict(X_TEST)), old)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["router"]  # no staging left behind


# The safe rule.


def _oof_problem(seed, signal):
  """Out-of-fold-like predictions: `signal` * the true advantage plus unit noise."""
  rng = np.random.default_rng(seed)
  n = 400
  truth = rng.random((n, 3)) * 0.3 + np.array([0.6, 0.45, 0.4])
  rewards = (rng.random((n, 3)) < truth).astype(float)
  pred = truth.mean(0) + signal * (truth - truth.mean(0)) + 0.1 * rng.normal(size=(n, 3))
  return pred, rewards


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("signal", [0.0, 1.0, 5.0])
def test_safe_rule_is_never_below_the_default_llm_on_its_calibration_predictions(seed, signal):
  pred, rewards = _oof_problem(seed, signal)
  margins = calibrate_margins(pred, rewards, COSTS, default=0)
  assert margins[0] == 0 and np.all(np.isfinite(margins))
  choice = route(pred - margins, COSTS, 0.0)
  assert rewards[np.arange(len(choice)), choice].mean() >= rewards[:, 0].mean()


def test_safe_rule_stays_with_the_default_on_noise_and_deviates_on_signal():
  rng = np.random.default_rng(0)
  n = 600
  rewards = (rng.random((n, 3)) < 0.5).astype(float)
  noise = rng.normal(size=(n, 3))
  margins = calibrate_margins(noise, rewards, COSTS, default=0)
  assert np.all(route(noise - margins, COSTS, 0.0) == 0)
  # Predictions that know which LLM is right: deviations are kept where the gain is significant.
  informed = rewards + 0.1 * noise
  margins = calibrate_margins(informed, rewards, COSTS, default=0)
  choice = route(informed - margins, COSTS, 0.0)
  assert (choice != 0).mean() > 0.2
  assert rewards[np.arange(n), choice].mean() > rewards[:, 0].mean() + 0.15


# CV selection on the training split.


def test_selection_scores_every_candidate_and_refits_the_chosen_one():
  candidates = {"mean": GlobalMean(), "knn": KNN(k=10), "cluster": SoftCluster(clusters=3)}
  router, selection = fit_selected_router(X, Y, COSTS, llms=("a", "b", "c"), encoder="enc",
                                          reward_model="rm", candidates=candidates, folds=3)
  assert [r.name for r in selection.table] == ["mean", "knn", "cluster"]
  # The global mean cannot tell clusters apart; the clustered candidates route each one right.
  assert selection.chosen in ("knn", "cluster")
  assert selection.routers[selection.chosen] is router
  by_name = {r.name: r for r in selection.table}
  assert by_name["knn"].reward0 > by_name["mean"].reward0 + 0.3
  assert by_name["mean"].reward0 == pytest.approx(selection.best_single_reward0)
  # The chosen router routes held-out clusters right, and never below the best single LLM.
  choice = router(X_TEST, 0.0)
  assert Y_TEST[np.arange(200), choice].mean() > 0.8


# Budgets that hold (issue 9.3): one precision for search and routing, ties to the cheaper LLM.


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 12),
    m=st.integers(2, 5),
    tie_levels=st.integers(1, 4),
    budget_frac=st.floats(0.0, 1.0),
)
def test_budget_is_met_by_the_routing_that_follows(seed, n, m, tie_levels, budget_frac):
  rng = np.random.default_rng(seed)
  # Few distinct values: exact ties between LLMs, and equal costs, are common.
  utilities = rng.integers(0, tie_levels, (n, m)).astype(np.float32) / tie_levels
  costs = rng.integers(1, 4, m) * np.float32(0.002)
  budget = float(costs.min() + budget_frac * (costs.max() - costs.min()))
  weight = cost_weight_for_budget(utilities, costs, budget)
  assert costs.astype(np.float64)[route(utilities, costs, weight)].mean() <= budget
  # Routing the float32 arrays as a caller holds them gives the same choices as the search's
  # float64 copies.
  np.testing.assert_array_equal(route(utilities, costs, weight),
                                route(utilities.astype(np.float64), costs.astype(np.float64),
                                      weight))


def test_route_breaks_exact_ties_toward_the_cheaper_llm():
  utilities = np.array([[0.5, 0.5, 0.5], [1.0, 0.0, 1.0]])
  np.testing.assert_array_equal(route(utilities, [3.0, 1.0, 2.0], 0.0), [1, 2])
  np.testing.assert_array_equal(route(utilities, [1.0, 1.0, 1.0], 0.0), [0, 0])


def test_margins_act_at_cost_weight_zero_only():
  router = fit_router(X, Y, COSTS, llms=("a", "b", "c"), encoder="enc", reward_model="rm",
                      predictor=KNN(k=10), margins=np.array([0.0, 5.0, 5.0]), default_llm=0)
  pred = np.asarray(router.predict(X_TEST), np.float64)
  assert np.all(router(X_TEST, 0.0) == 0)  # no predicted advantage exceeds a margin of 5
  np.testing.assert_array_equal(router(X_TEST, 1e-3), route(pred, COSTS, 1e-3))
  np.testing.assert_array_equal(router.utilities(X_TEST, 0.0), pred - [0.0, 5.0, 5.0])
  # The budget search routes as the router does: margins at 0, predictions above.
  budget = 2.0
  weight = cost_weight_for_budget(pred, COSTS, budget, at_zero=router.utilities(X_TEST, 0.0))
  assert COSTS[router(X_TEST, weight)].mean() <= budget


class _TrigramEncoder:
  """A deterministic stand-in for MiniLM: hashed character trigrams, L2-normalised [N, 64]."""

  identifier = "test-trigram-64"

  class tokenizer:  # noqa: N801 - the encoders' attribute; this one reads whole texts
    @staticmethod
    def num_truncated(texts):
      del texts
      return 0

  def encode(self, texts, batch_size=None, *, progress=True):
    import hashlib

    out = np.zeros((len(texts), 64), np.float32)
    for row, text in enumerate(texts):
      for i in range(len(text) - 2):
        out[row, hashlib.blake2b(text[i:i + 3].encode(), digest_size=2).digest()[0] % 64] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def test_predictor_choice_never_reads_the_test_split(monkeypatch):
  import dataclasses

  from erpjax import pipeline
  from erpjax.config import RunConfig

  config = RunConfig.from_dict({
      "data": {"source": "synthetic",
               "options": {"num_train": 100, "num_test": 40, "samples_per_prompt": 2}},
      "encoder": {"cache": False}, "predictor": {"cv_folds": 2},
      "routing": {"num_cost_weights": 10}})
  clean = pipeline.fit_and_predict(config, encoder=_TrigramEncoder(), progress=False)
  real_load_splits = pipeline.load_splits

  def poisoned_load_splits(data_config):
    # Test rewards shuffled and negated: any read of them during selection would move its scores.
    train, tests = real_load_splits(data_config)
    rng = np.random.default_rng(0)

    def poison(test):
      reward = -rng.permutation(test.samples.reward) * 10
      return dataclasses.replace(test, samples=dataclasses.replace(test.samples, reward=reward))

    return train, {name: poison(test) for name, test in tests.items()}

  monkeypatch.setattr(pipeline, "load_splits", poisoned_load_splits)
  dirty = pipeline.fit_and_predict(config, encoder=_TrigramEncoder(), progress=False)
  assert not np.allclose(dirty.test_rewards, clean.test_rewards)  # the poison reached the test
  assert dirty.chosen == clean.chosen and len(clean.cv_table) == 5

  def scores(table):
    return [(r.name, r.reward0, r.raw_reward0, r.aiq, r.score) for r in table]

  assert scores(dirty.cv_table) == scores(clean.cv_table)
  np.testing.assert_array_equal(dirty.test_predicted, clean.test_predicted)
  assert set(clean.candidates) == {row.name for row in clean.cv_table}


def test_predictor_specs_round_trip_and_refuse_unknown_options():
  from erpjax.routing import predictor_from_spec
  from erpjax.routing._predictors import spec

  shrunk = Shrunk(KNN(k=7), SoftCluster(clusters=4, temperature=0.1), 0.25)
  assert predictor_from_spec(json.loads(json.dumps(spec(shrunk)))) == shrunk
  with pytest.raises(ValueError, match=r"predictor 'knn': unknown option\(s\) \['kk'\]"):
    predictor_from_spec({"kind": "knn", "kk": 3})
  with pytest.raises(ValueError, match="unknown predictor kind 'forest'"):
    predictor_from_spec({"kind": "forest"})
