"""Peer routers on a tiny synthetic problem where the best LLM depends on the embedding cluster."""

import numpy as np
import pytest

from erpjax.eval import frontier as fr
from erpjax.eval import metrics
from erpjax.eval import peers
from erpjax.eval import trained_peers as tp

NUM_CLUSTERS = 3
COSTS = np.array([1.0, 2.0, 3.0])
# P(reward = 1) per (cluster, LLM): LLM k is clearly best on cluster k.
P_RIGHT = np.array([[0.9, 0.2, 0.2], [0.2, 0.9, 0.2], [0.2, 0.2, 0.9]])


def _synthetic(num_prompts: int, seed: int, dim: int = 16) -> peers.RouterData:
  rng = np.random.default_rng(seed)
  centers = np.random.default_rng(1234).normal(size=(NUM_CLUSTERS, dim))
  cluster = rng.integers(0, NUM_CLUSTERS, num_prompts)
  x = 3 * centers[cluster] + rng.normal(size=(num_prompts, dim))
  rewards = (rng.random((num_prompts, 3)) < P_RIGHT[cluster]).astype(np.float64)
  return peers.RouterData(x, COSTS, rewards, np.array([f"topic{c}" for c in cluster]))


TRAIN = _synthetic(300, seed=0)
TEST = _synthetic(200, seed=1)


def _mean_reward(router: peers.PeerRouter) -> float:
  choice = fr.route(router.fit(TRAIN).utilities(TEST), TEST.costs, 0.0)
  return float(metrics.chosen(TEST.rewards, choice).mean())


RANDOM_REWARD = _mean_reward(peers.RandomRouter(seed=0))


@pytest.mark.parametrize("router", [
    peers.KNNRouter(k=10),
    tp.Zooter(),
    tp.MatrixFactorizationRouter(),
    tp.MLPRouter(),
], ids=lambda r: r.name)
def test_learned_peers_beat_random(router):
  # Random gets ~(0.9 + 0.2 + 0.2) / 3 = 0.43; routing every cluster right gets ~0.9.
  assert RANDOM_REWARD < 0.55
  assert _mean_reward(router) > RANDOM_REWARD + 0.25


def test_peers_follow_the_protocol():
  for router in [peers.SingleLLM(0), peers.RandomRouter(), peers.Oracle(), peers.CategoryBest(),
                 peers.KNNRouter(), tp.Zooter(), tp.MatrixFactorizationRouter(), tp.MLPRouter()]:
    assert isinstance(router, peers.PeerRouter)


def test_oracle_has_zero_regret():
  u = peers.Oracle().fit(TRAIN).utilities(TEST)
  choice = fr.route(u, TEST.costs, 0.0)
  assert metrics.mean_regret(TEST.rewards, choice) == 0.0
  assert metrics.top1_accuracy(TEST.rewards, choice) == 1.0


def test_category_best_picks_the_right_llm_per_category():
  router = peers.CategoryBest().fit(TRAIN)
  u = router.utilities(TEST)
  choice = fr.route(u, TEST.costs, 0.0)
  expected = np.array([int(c[-1]) for c in TEST.categories])  # "topicK" -> LLM K
  np.testing.assert_array_equal(choice, expected)
  # Unseen or missing categories fall back to the global mean reward per LLM.
  unseen = peers.RouterData(TEST.embeddings[:2], COSTS, categories=np.array(["new", "topic0"]))
  u = router.utilities(unseen)
  np.testing.assert_allclose(u[0], TRAIN.rewards.mean(axis=0))
  np.testing.assert_allclose(u[1], TRAIN.rewards[TRAIN.categories == "topic0"].mean(axis=0))
  no_categories = peers.RouterData(TEST.embeddings[:2], COSTS)
  np.testing.assert_allclose(router.utilities(no_categories),
                             np.tile(TRAIN.rewards.mean(0), (2, 1)))


@pytest.mark.parametrize("index", [0, 2])
def test_single_llm_picks_that_llm_at_every_lambda(index):
  u = peers.SingleLLM(index).fit(TRAIN).utilities(TEST)
  for lam in [0.0, 1.0, 1e6]:
    assert np.all(fr.route(u, TEST.costs, lam) == index)


def test_random_router_is_seeded_and_uniform():
  u = peers.RandomRouter(seed=3).utilities(TEST)
  np.testing.assert_array_equal(u, peers.RandomRouter(seed=3).utilities(TEST))
  assert not np.array_equal(u, peers.RandomRouter(seed=4).utilities(TEST))
  counts = np.bincount(fr.route(u, TEST.costs, 0.0), minlength=3)
  assert counts.min() > 40  # 200 prompts, ~67 each


def test_permute_choices_keeps_the_mix():
  choice = fr.route(peers.Oracle().utilities(TEST), TEST.costs, 0.0)
  permuted = peers.permute_choices(choice, seed=5)
  np.testing.assert_array_equal(np.sort(permuted), np.sort(choice))
  assert not np.array_equal(permuted, choice)
  np.testing.assert_array_equal(permuted, peers.permute_choices(choice, seed=5))


def test_knn_is_the_mean_of_the_k_most_cosine_similar():
  train = peers.RouterData(np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.2], [-1.0, 0.0]]),
                           np.array([1.0, 2.0]),
                           np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.0, 0.0]]))
  test = peers.RouterData(np.array([[3.0, 0.0]]), np.array([1.0, 2.0]))
  # Cosine to [1, 0]: rows 0 (1.0) and 2 (0.995) are the two nearest, whatever the norms.
  u = peers.KNNRouter(k=2).fit(train).utilities(test)
  np.testing.assert_allclose(u, [[0.75, 0.25]], rtol=1e-6)


def test_trained_peers_are_deterministic_and_learn():
  for make in [tp.Zooter, tp.MatrixFactorizationRouter, tp.MLPRouter]:
    config = tp.TrainConfig(steps=50, seed=7)
    a, b = make(training=config).fit(TRAIN), make(training=config).fit(TRAIN)
    np.testing.assert_array_equal(a.utilities(TEST), b.utilities(TEST))
    assert a.losses.shape == (50,) and a.losses[-1] < a.losses[0]


def test_zooter_utilities_are_log_probabilities():
  u = tp.Zooter(training=tp.TrainConfig(steps=20)).fit(TRAIN).utilities(TEST)
  np.testing.assert_allclose(np.exp(u).sum(axis=1), 1.0, rtol=1e-5)


def test_matrix_factorization_loss_follows_the_rewards():
  mf = tp.MatrixFactorizationRouter(training=tp.TrainConfig(steps=20))
  assert mf.fit(TRAIN).fitted_loss == "bce"
  u = mf.fit(TRAIN).utilities(TEST)
  assert np.all((u > 0) & (u < 1))  # sigmoid probabilities of reward 1
  scaled = peers.RouterData(TRAIN.embeddings, COSTS, 5 * TRAIN.rewards - 1)
  assert mf.fit(scaled).fitted_loss == "mse"
  with pytest.raises(ValueError, match="bce"):
    tp.MatrixFactorizationRouter(loss="bce").fit(scaled)


def test_validation_and_unfitted_errors():
  with pytest.raises(ValueError, match="rewards"):
    peers.RouterData(np.zeros((2, 3)), COSTS, np.zeros((2, 2)))
  with pytest.raises(ValueError, match="categories"):
    peers.RouterData(np.zeros((2, 3)), COSTS, categories=np.array(["a"]))
  with pytest.raises(ValueError, match="not fitted"):
    peers.KNNRouter().utilities(TEST)
  with pytest.raises(ValueError, match="not fitted"):
    tp.MLPRouter().utilities(TEST)
  with pytest.raises(ValueError, match="needs rewards"):
    peers.Oracle().utilities(peers.RouterData(TEST.embeddings, COSTS))


def test_peer_utilities_fits_each_router():
  out = peers.peer_utilities([peers.Oracle(), peers.SingleLLM(1, name="llm1")], TRAIN, TEST)
  assert list(out) == ["oracle", "llm1"]
  np.testing.assert_array_equal(out["oracle"], TEST.rewards)
  with pytest.raises(ValueError, match="unique"):
    peers.peer_utilities([peers.Oracle(), peers.Oracle()], TRAIN, TEST)
