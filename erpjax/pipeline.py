"""The ERP job, stage by stage: load -> encode -> estimate -> fit -> route -> report.

Each stage is a function of the previous stage's output, so a library user can run any prefix of
the job (or swap a stage) in their own program; `run` chains them for the CLI.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Sequence

import numpy as np

from erpjax import paths
from erpjax.config import DataConfig, EncoderConfig, RunConfig
from erpjax.data import RoutingDataset
from erpjax.estimate import estimate_expected_rewards, mean_call_costs
from erpjax.routing import ERPRouter, fit_router

log = logging.getLogger(__name__)


def load_splits(config: DataConfig) -> tuple[RoutingDataset, dict[str, RoutingDataset]]:
  """The train dataset and {name: test dataset} for each of `config.test_splits`, in order."""
  from erpjax import data  # the loaders are only needed here

  options = dict(config.options)
  names = config.test_splits
  if config.source == "synthetic":
    from erpjax.synthetic import make_synthetic_benchmark

    if len(names) != 1:
      raise ValueError(f"data.source 'synthetic' has one test split, got data.test {names}")
    benchmark = make_synthetic_benchmark(**options)
    return benchmark.train, {names[0]: benchmark.test}
  if config.source == "folder":
    # load_folder also checks each test split against train (overlap noted or dropped).
    pairs = [data.load_folder(config.root, config.train, name, **options) for name in names]
    return pairs[0][0], {name: test for name, (_, test) in zip(names, pairs)}
  loader = {"routerbench": data.load_routerbench, "llmrouter": data.load_llmrouter}[config.source]
  train = loader(config.train, root=config.root, **options)
  return train, {name: loader(name, root=config.root, **options) for name in names}


def score_splits(
    config: RunConfig, train: RoutingDataset, test: RoutingDataset
) -> tuple[RoutingDataset, RoutingDataset]:
  """Both splits with `config.rewards`'s reward model's scores of every response added.

  Scores go to `<output_dir>/scores/{train,test}`: a killed job resumes where it stopped.
  """
  from erpjax.scoring import ScoringConfig, ScoringEngine, score_dataset

  rewards = config.rewards
  engine = ScoringEngine.from_pretrained(rewards.model, ScoringConfig(**rewards.scoring))
  folder = pathlib.Path(config.output_dir) / "scores"
  scored = []
  for split_name, split in (("train", train), ("test", test)):
    dataset, summary = score_dataset(split, engine, folder / split_name, name=rewards.name)
    log.info("scored %s: %s", split_name, summary)
    scored.append(dataset)
  return scored[0], scored[1]


def load_encoder(config: EncoderConfig):
  """The prompt encoder `config` describes (default: the offline all-MiniLM-L6-v2)."""
  from erpjax.encode import PromptEncoder

  return PromptEncoder.from_pretrained(
      config.path, max_length=config.max_length, dtype=config.dtype)


def embed(
    encoder, texts: Sequence[str], config: EncoderConfig, *, progress: bool = True
) -> np.ndarray:
  """[N, D] float32 embeddings of `texts`, through the on-disk cache when `config.cache`."""
  from erpjax.encode import encode_cached

  if config.cache:
    return encode_cached(encoder, texts, paths.cache_dir() / "embeddings",
                         batch_size=config.batch_size, progress=progress)
  return encoder.encode(texts, batch_size=config.batch_size, progress=progress)


def reward_model_index(dataset: RoutingDataset, name: str | None) -> int:
  """Index of reward model `name` in `dataset` (None = the first one)."""
  if name is None:
    return 0
  if name not in dataset.reward_models:
    raise ValueError(f"{dataset.name}: no reward model {name!r}; has {list(dataset.reward_models)}")
  return dataset.reward_models.index(name)


def complete_prompts(
    dataset: RoutingDataset, rewards: np.ndarray
) -> tuple[RoutingDataset, np.ndarray]:
  """`dataset` and its [N, M] `rewards` without the prompts where some LLM has no reward:
  evaluating a router needs the reward of every LLM it might pick."""
  complete = np.isfinite(rewards).all(axis=1)
  if complete.all():
    return dataset, rewards
  dropped = int((~complete).sum())
  log.warning("%s: %d prompts lack a reward for some LLM and are left out of evaluation",
              dataset.name, dropped)
  note = f"{dropped} prompts without a reward for every LLM left out of evaluation"
  return dataset.select_prompts(complete, note=note), rewards[complete]


@dataclasses.dataclass(frozen=True)
class FittedERP:
  """What the fit stage produces and later stages read.

  Attributes:
    router: the fitted router.
    train, test: the splits (test restricted to prompts with a reward for every LLM).
    train_embeddings, test_embeddings: [N, D] prompt embeddings.
    train_rewards: [N_train, M] estimated expected rewards the heads were fit on (NaN: no samples).
    test_rewards: [N_test, M] observed expected rewards (the mean of the test samples).
    test_predicted: [N_test, M] the router's predictions.
    test_call_costs: [N_test, M] observed cost per call (NaN where unknown).
  """

  router: ERPRouter
  train: RoutingDataset
  test: RoutingDataset
  train_embeddings: np.ndarray
  test_embeddings: np.ndarray
  train_rewards: np.ndarray
  test_rewards: np.ndarray
  test_predicted: np.ndarray
  test_call_costs: np.ndarray


def fit_and_predict(config: RunConfig, *, encoder=None, progress: bool = True) -> FittedERP:
  """Loads the splits, embeds their prompts, estimates expected rewards, fits and predicts."""
  train, tests = load_splits(config.data)
  if len(tests) != 1:
    raise ValueError(f"fit_and_predict takes one test split, data.test names {list(tests)}")
  (test,) = tests.values()
  if config.rewards is not None:
    train, test = score_splits(config, train, test)
  for note in train.notes + test.notes:
    log.info("data: %s", note)
  rm = reward_model_index(train, config.predictor.reward_model)
  if test.llms != train.llms:
    test = test.select_llms(train.llms)
  test_rm = reward_model_index(test, train.reward_models[rm])
  test_rewards = estimate_expected_rewards(test).of(test_rm)
  test, test_rewards = complete_prompts(test, test_rewards)
  encoder = encoder if encoder is not None else load_encoder(config.encoder)
  train_embeddings = embed(encoder, train.prompts, config.encoder, progress=progress)
  test_embeddings = embed(encoder, test.prompts, config.encoder, progress=progress)
  train_rewards = estimate_expected_rewards(train).of(rm)
  router = fit_router(
      train_embeddings,
      train_rewards,
      train.costs,
      llms=train.llms,
      encoder=encoder.identifier,
      reward_model=train.reward_models[rm],
      beta=config.predictor.beta,
      standardize=config.predictor.standardize,
  )
  return FittedERP(
      router=router,
      train=train,
      test=test,
      train_embeddings=train_embeddings,
      test_embeddings=test_embeddings,
      train_rewards=train_rewards,
      test_rewards=test_rewards,
      test_predicted=np.asarray(router.predict(test_embeddings)),
      test_call_costs=mean_call_costs(test),
  )
