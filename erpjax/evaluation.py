"""`erpjax evaluate`: ERP beside its peer routers on one routing dataset's test split.

Every router sees the same train split (prompt embeddings, estimated expected rewards, categories)
and is swept over one lambda grid on the test split; `erpjax.eval.write_report` measures them all.
"""

from __future__ import annotations

import numpy as np

from erpjax import eval as ev
from erpjax.config import RunConfig
from erpjax.pipeline import FittedERP, complete_prompts, fit_and_predict

ERP = "ERP"
# Routers whose utilities are predicted rewards (Zooter's are log-probabilities, random's noise).
REWARD_PREDICTORS = (ERP, "knn", "mf", "mlp", "category_best")


def default_peers(seed: int = 0) -> list[ev.PeerRouter]:
  """The peers of the paper's comparison and beyond, each with its documented defaults."""
  training = ev.TrainConfig(seed=seed)
  return [
      ev.RandomRouter(seed=seed),
      ev.CategoryBest(),
      ev.KNNRouter(),
      ev.Zooter(training=training),
      ev.MatrixFactorizationRouter(training=training),
      ev.MLPRouter(training=training),
  ]


def peer_router_utilities(fit: FittedERP, peers: list[ev.PeerRouter]) -> dict[str, np.ndarray]:
  """{name: [N_test, M] utilities} of each peer fit on the train prompts that have every reward."""
  train, train_rewards = complete_prompts(fit.train, fit.train_rewards)
  keep = np.isin(fit.train.prompt_ids, train.prompt_ids)
  train_data = ev.RouterData(fit.train_embeddings[keep], train.costs, train_rewards,
                             _categories(train.categories))
  test_data = ev.RouterData(fit.test_embeddings, fit.test.costs, None,
                            _categories(fit.test.categories))
  return ev.peer_utilities(peers, train_data, test_data)


def _categories(categories):
  # A prompt without a category label forms its own "(none)" category for per-category routers.
  return np.array(["(none)" if c is None else c for c in categories])


def evaluate_run(config: RunConfig, *, encoder=None, seed: int = 0) -> tuple[FittedERP, dict]:
  """Fits ERP and the peers as `config` says, writes the report to `config.output_dir`.

  Returns:
    (the fitted ERP stage, the metrics dict written to metrics.json).
  """
  fit = fit_and_predict(config, encoder=encoder)
  utilities = peer_router_utilities(fit, default_peers(seed))
  utilities[ERP] = fit.test_predicted
  call_costs = fit.test_call_costs if np.isfinite(fit.test_call_costs).all() else None
  data = ev.EvalSet(fit.test_rewards, fit.test.costs, call_costs=call_costs,
                    categories=_categories(fit.test.categories), llm_names=fit.test.llms)
  lambdas = ev.lambda_grid(utilities.values(), fit.test.costs, num=config.routing.num_cost_weights)
  metrics = ev.write_report(config.output_dir, utilities, data, lambdas,
                            reward_predictors=REWARD_PREDICTORS, scatter_router=ERP,
                            permuted=ERP, seed=seed)
  return fit, metrics
