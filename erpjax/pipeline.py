"""The ERP job, stage by stage: load -> encode -> estimate -> fit -> route -> report.

Each stage is a function of the previous stage's output, so a library user can run any prefix of
the job (or swap a stage) in their own program; `run` chains them for the CLI.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from collections.abc import Mapping, Sequence

import numpy as np

from erpjax import paths
from erpjax.config import DataConfig, EncoderConfig, RunConfig
from erpjax.data import RoutingDataset
from erpjax.estimate import estimate_expected_rewards, mean_call_costs
from erpjax.routing import ERPRouter

log = logging.getLogger(__name__)


def load_splits(config: DataConfig) -> tuple[RoutingDataset, dict[str, RoutingDataset]]:
  """The train dataset and {name: test dataset} for each of `config.test_splits`, in order."""
  from erpjax import data  # the loaders are only needed here

  options = dict(config.options)
  names = config.test_splits
  if config.source == "synthetic":
    if len(names) != 1:
      raise ValueError(f"data.source 'synthetic' has one test split, got data.test {names}")
    benchmark = data.make_synthetic_benchmark(**options)
    return benchmark.train, {names[0]: benchmark.test}
  if config.source == "folder":
    # load_folder also checks each test split against train (overlap noted or dropped).
    pairs = [data.load_folder(config.root, config.train, name, **options) for name in names]
    return pairs[0][0], {name: test for name, (_, test) in zip(names, pairs)}
  loader = {"routerbench": data.load_routerbench, "llmrouter": data.load_llmrouter}[config.source]
  train = loader(config.train, root=config.root, **options)
  return train, {name: loader(name, root=config.root, **options) for name in names}


def score_splits(
    config: RunConfig, train: RoutingDataset, tests: dict[str, RoutingDataset]
) -> tuple[RoutingDataset, dict[str, RoutingDataset]]:
  """The train split and every test split with `config.rewards`'s reward model's scores added.

  Scores go to `<output_dir>/scores/<split name>` (train: "train"): a killed job resumes where it
  stopped.
  """
  from erpjax.scoring import ScoringConfig, ScoringEngine, score_dataset

  rewards = config.rewards
  engine = ScoringEngine.from_pretrained(rewards.model, ScoringConfig(**rewards.scoring))
  folder = pathlib.Path(config.output_dir) / "scores"
  scored = {}
  for split_name, split in (("train", train), *tests.items()):
    dataset, summary = score_dataset(split, engine, folder / split_name, name=rewards.name)
    log.info("scored %s: %s", split_name, summary)
    scored[split_name] = dataset
  train = scored.pop("train")
  return train, scored


def load_encoder(config: EncoderConfig):
  """The prompt encoder `config` describes (default: the offline all-MiniLM-L6-v2)."""
  if config.kind == "decoder":
    from erpjax.encode import DecoderFeaturizer

    return DecoderFeaturizer.from_pretrained(
        config.path, layers=config.layers, pooling=config.pooling,
        max_length=config.max_length, dtype=config.dtype)
  from erpjax.encode import PromptEncoder

  return PromptEncoder.from_pretrained(
      config.path, max_length=config.max_length, dtype=config.dtype)


def embed(
    encoder, texts: Sequence[str], config: EncoderConfig, *, progress: bool = True
) -> np.ndarray:
  """[N, D] float32 embeddings of `texts`, through the on-disk cache when `config.cache`; warns
  how many texts the encoder's max_length truncated (their embeddings miss the rest).

  `encoder`: a `PromptEncoder` or `DecoderFeaturizer`, or anything with their `identifier`, `dim`,
  `encode(texts, batch_size=, progress=)` and `tokenizer.num_truncated(texts)`.
  """
  from erpjax.encode import encode_cached

  truncated = encoder.tokenizer.num_truncated(texts)
  if truncated:
    log.warning("%d of %d prompts are longer than the encoder's %d tokens and were truncated to "
                "them (encoder max_length)", truncated, len(texts), encoder.max_length)

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
  log.info("data: %s: %d prompts lack a reward for some LLM and are left out of evaluation",
           dataset.name, dropped)
  note = f"{dropped} prompts without a reward for every LLM left out of evaluation"
  return dataset.select_prompts(complete, note=note), rewards[complete]


@dataclasses.dataclass(frozen=True)
class FittedERP:
  """What the fit stage produces and later stages read (one per test split).

  Attributes:
    router: the fitted router (the chosen candidate's, with its safe-rule margins).
    train, test: the splits (test restricted to prompts with a reward for every LLM).
    train_embeddings, test_embeddings: [N, D] prompt embeddings.
    train_rewards: [N_train, M] estimated expected rewards the router was fit on (NaN: no samples).
    test_rewards: [N_test, M] observed expected rewards (the mean of the test samples).
    test_predicted: [N_test, M] the router's predicted expected rewards.
    test_call_costs: [N_test, M] observed cost per call (NaN where unknown).
    test_utilities: [N_test, M] what the router routes on at cost weight 0: test_predicted less
      its per-LLM safe-rule margins (None -> test_predicted). At cost weights > 0 it routes on
      test_predicted (`ERPRouter.utilities`).
    candidates: {candidate name: [N_test, M] its predicted rewards}, every candidate of the
      predictor selection refit on the whole training split (the chosen one included).
    candidate_utilities: {candidate name: [N_test, M] what it would route on at cost weight 0
      (its own margins); above 0 it routes on its `candidates` entry.
    chosen: the chosen candidate's name (None without a selection).
    cv_table: one `erpjax.routing.CVRow` per candidate (out-of-fold on the training split).
    fit_seconds: wall time of the fit stage (cross-validation and refits included);
      cv_seconds: of the cross-validation alone.
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
  test_utilities: np.ndarray | None = None
  candidates: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  candidate_utilities: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  chosen: str | None = None
  cv_table: tuple = ()
  fit_seconds: float = 0.0
  cv_seconds: float = 0.0

  def __post_init__(self):
    if self.test_utilities is None:
      object.__setattr__(self, "test_utilities", np.asarray(self.test_predicted, np.float64))


def fit_predictor(config: RunConfig, embeddings: np.ndarray, rewards: np.ndarray,
                  costs: np.ndarray, *, llms: tuple[str, ...], encoder: str, reward_model: str):
  """The router `config.predictor` asks for, fit on the training split only.

  Args:
    embeddings: [N, D] training prompt embeddings; rewards: [N, M] their expected rewards (NaN:
      no samples); costs: [M] routing costs.

  Returns:
    (router, `erpjax.routing.Selection` or None when one predictor is fit without the safe rule).
  """
  from erpjax import routing

  p = config.predictor
  if p.kind == "auto":
    candidates = routing.default_candidates()
  else:
    raw = {"kind": p.kind, **p.options}
    if p.kind == "ridge":
      raw["beta"] = p.beta
    try:
      candidates = {p.kind: routing.predictor_from_spec(raw)}
    except (TypeError, ValueError) as error:
      raise ValueError(f"predictor.options: {error}") from error
  common = dict(llms=llms, encoder=encoder, reward_model=reward_model, standardize=p.standardize)
  if p.kind != "auto" and not p.safe:
    return routing.fit_router(embeddings, rewards, costs, predictor=candidates[p.kind],
                              **common), None
  return routing.fit_selected_router(
      embeddings, rewards, costs, candidates=candidates, folds=p.cv_folds, seed=p.seed,
      safe=p.safe, alpha=p.alpha, num_cost_weights=config.routing.num_cost_weights, **common)


def fit_and_predict_splits(config: RunConfig, *, encoder=None,
                           progress: bool = True) -> dict[str, FittedERP]:
  """Loads the splits, embeds their prompts, estimates expected rewards, fits ONCE on the train
  split and predicts every test split `config.data` names.

  Returns:
    {test split name: FittedERP}; the router and train fields are shared.
  """
  train, tests = load_splits(config.data)
  if config.rewards is not None:
    train, tests = score_splits(config, train, tests)
  # The one place data notes are logged (the loaders record them; the report lists them).
  for note in dict.fromkeys(train.notes + tuple(n for t in tests.values() for n in t.notes)):
    log.info("data: %s", note)
  rm = reward_model_index(train, config.predictor.reward_model)
  encoder = encoder if encoder is not None else load_encoder(config.encoder)
  train_embeddings = embed(encoder, train.prompts, config.encoder, progress=progress)
  train_rewards = estimate_expected_rewards(train).of(rm)
  start = time.perf_counter()
  router, selection = fit_predictor(config, train_embeddings, train_rewards, train.costs,
                                    llms=train.llms, encoder=encoder.identifier,
                                    reward_model=train.reward_models[rm])
  fit_seconds = time.perf_counter() - start
  fits = {}
  for name, test in tests.items():
    if test.llms != train.llms:
      test = test.select_llms(train.llms)
    test_rm = reward_model_index(test, train.reward_models[rm])
    test_rewards = estimate_expected_rewards(test).of(test_rm)
    test, test_rewards = complete_prompts(test, test_rewards)
    test_embeddings = embed(encoder, test.prompts, config.encoder, progress=progress)
    routers = selection.routers if selection is not None else {}
    fits[name] = FittedERP(
        router=router,
        train=train,
        test=test,
        train_embeddings=train_embeddings,
        test_embeddings=test_embeddings,
        train_rewards=train_rewards,
        test_rewards=test_rewards,
        test_predicted=np.asarray(router.predict(test_embeddings)),
        test_call_costs=mean_call_costs(test),
        test_utilities=router.utilities(test_embeddings),
        candidates={k: np.asarray(r.predict(test_embeddings)) for k, r in routers.items()},
        candidate_utilities={k: r.utilities(test_embeddings) for k, r in routers.items()},
        chosen=selection.chosen if selection is not None else None,
        cv_table=selection.table if selection is not None else (),
        fit_seconds=fit_seconds,
        cv_seconds=selection.cv_seconds if selection is not None else 0.0,
    )
  return fits


def fit_and_predict(config: RunConfig, *, encoder=None, progress: bool = True) -> FittedERP:
  """`fit_and_predict_splits` for a config that names one test split."""
  if len(config.data.test_splits) != 1:
    raise ValueError(f"fit_and_predict takes one test split, data.test names "
                     f"{list(config.data.test_splits)}: use fit_and_predict_splits")
  (fit,) = fit_and_predict_splits(config, encoder=encoder, progress=progress).values()
  return fit


# The report stage: `erpjax run` reports ERP beside the baselines, `erpjax evaluate` adds the peers;
# both through `report`, which hands everything to erpjax.eval.report.write_report.

ERP = "ERP"
# Peers that read no test labels: the report's headline compares ERP's AIQ with the best of them.
# (category_best reads each test prompt's category, the oracle its rewards.)
LABEL_FREE_PEERS = ("knn", "zooter", "mf", "mlp", "random")
# Peers whose utilities are predicted rewards (Zooter's are log-probabilities, random's noise).
REWARD_PREDICTING_PEERS = ("knn", "mf", "mlp", "category_best")


def default_peers(seed: int = 0) -> list:
  """The peers of the paper's comparison and beyond, each with its documented defaults."""
  from erpjax.eval import peers, trained_peers

  training = trained_peers.TrainConfig(seed=seed)
  return [
      peers.RandomRouter(seed=seed),
      peers.CategoryBest(),
      peers.KNNRouter(),
      trained_peers.Zooter(training=training),
      trained_peers.MatrixFactorizationRouter(training=training),
      trained_peers.MLPRouter(training=training),
  ]


def _categories(categories) -> np.ndarray:
  # A prompt without a category label forms its own "(none)" category for per-category routers.
  return np.array(["(none)" if c is None else c for c in categories])


def fit_peers(fit: FittedERP, peers: Sequence) -> list:
  """Each peer router fit on the train prompts that have every reward (what ERP was fit on)."""
  from erpjax.eval.peers import RouterData

  names = [p.name for p in peers]
  if len(set(names)) != len(names):
    raise ValueError(f"peer names must be unique, got {names}")
  train, train_rewards = complete_prompts(fit.train, fit.train_rewards)
  keep = np.isin(fit.train.prompt_ids, train.prompt_ids)
  data = RouterData(fit.train_embeddings[keep], train.costs, train_rewards,
                    _categories(train.categories))
  return [p.fit(data) for p in peers]


def peer_test_utilities(fit: FittedERP, fitted_peers: Sequence) -> dict[str, np.ndarray]:
  """{name: [N_test, M] utilities} of each fitted peer on `fit`'s test split."""
  from erpjax.eval.peers import RouterData

  test = RouterData(fit.test_embeddings, fit.test.costs, None, _categories(fit.test.categories))
  return {p.name: np.asarray(p.utilities(test), np.float64) for p in fitted_peers}


def best_single_llm(fit: FittedERP) -> str:
  """The LLM with the best mean estimated reward on the TRAIN split: the one a user who does not
  route would call for every prompt."""
  return fit.train.llms[int(np.nanargmax(np.nanmean(fit.train_rewards, axis=0)))]


def report(fit: FittedERP, out_dir: str | pathlib.Path, *, peer_utilities=None,
           num_cost_weights: int = 50, budget: float | None = None, seed: int = 0) -> dict:
  """Writes the report of one test split to `out_dir` (erpjax.eval.report.write_report):
  ERP (chosen; routed as the router routes: on `fit.test_utilities` at cost weight 0, the safe
  rule, on `fit.test_predicted` above it), every candidate predictor of the selection
  ("candidate <name>", the same way) and the selection's CV table, the oracle, the
  single LLMs (the best one chosen on train), ERP at `budget`, and with `peer_utilities`
  ({name: [N_test, M]}, see `peer_test_utilities`) the peers and a random permutation of ERP's
  choices. Returns the metrics written to metrics.json."""
  from erpjax.eval.report import EvalSet, write_report

  peer_utilities = dict(peer_utilities or {})
  candidates = {f"candidate {name}": name for name in fit.candidates}
  predictions = {ERP: fit.test_predicted,
                 **{c: fit.candidates[name] for c, name in candidates.items()}}
  utilities = {**predictions, **peer_utilities}
  at_zero = {ERP: fit.test_utilities,
             **{c: fit.candidate_utilities[name] for c, name in candidates.items()}}
  predictions.update({n: u for n, u in peer_utilities.items() if n in REWARD_PREDICTING_PEERS})
  selection = [{**dataclasses.asdict(row), "chosen": "yes" if row.name == fit.chosen else ""}
               for row in fit.cv_table]
  call_costs = fit.test_call_costs if np.isfinite(fit.test_call_costs).all() else None
  data = EvalSet(fit.test_rewards, fit.test.costs, call_costs=call_costs,
                 categories=_categories(fit.test.categories), llm_names=fit.test.llms,
                 name=fit.test.name,
                 # Both splits' loaders often report the same facts (a prefix computed on train).
                 notes=tuple(dict.fromkeys(fit.train.notes + fit.test.notes)))
  return write_report(
      out_dir, utilities, data, num_cost_weights=num_cost_weights, chosen=ERP,
      predictions=predictions, at_zero=at_zero, candidates=list(candidates), selection=selection,
      label_free_peers=[n for n in peer_utilities if n in LABEL_FREE_PEERS],
      best_single_llm=best_single_llm(fit), budget=budget,
      permuted=ERP if peer_utilities else None, seed=seed)


def write_predictions(fit: FittedERP, path: str | pathlib.Path) -> pathlib.Path:
  """Writes the test split's predictions to Parquet: prompt_id, category, `<llm>|predicted` and
  `<llm>|observed` for each LLM, and `routed_cost_weight_0` (the LLM ERP routes each prompt to at
  λ = 0, on its utilities)."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  from erpjax.files import atomic_write
  from erpjax.routing import route

  columns = {"prompt_id": list(fit.test.prompt_ids), "category": list(fit.test.categories)}
  for j, llm in enumerate(fit.test.llms):
    columns[f"{llm}|predicted"] = fit.test_predicted[:, j]
    columns[f"{llm}|observed"] = fit.test_rewards[:, j]
  columns["routed_cost_weight_0"] = [fit.test.llms[i] for i in
                                     np.asarray(route(fit.test_utilities, fit.test.costs, 0.0))]
  return atomic_write(path, lambda p: pq.write_table(pa.table(columns), p))


def report_splits(fits: dict[str, FittedERP], out_dir: str | pathlib.Path, *,
                  peers: Sequence = (), predictions: bool = True, **options) -> dict[str, dict]:
  """`report` of each test split (one fit, `fits` = {split name: FittedERP}): to `out_dir` when
  there is one split, else to `out_dir/<split>` each, with an index report.md in `out_dir` that
  starts with one headline line per split. Peers are fit once, on the train split.

  Args:
    fits: {split name: the fitted ERP with that test split}; all share one router.
    out_dir: the run's output folder.
    peers: peer routers (`default_peers`) to fit and report beside ERP; none for `erpjax run`.
    predictions: also write each split's predictions.parquet (`write_predictions`).
    **options: `report`'s keyword options (num_cost_weights, budget, seed).

  Returns:
    {split name: its metrics}.
  """
  from erpjax.files import atomic_write_text

  out = pathlib.Path(out_dir)
  fitted_peers = fit_peers(next(iter(fits.values())), peers) if peers else []
  results = {}
  for name, fit in fits.items():
    folder = out if len(fits) == 1 else out / name
    folder.mkdir(parents=True, exist_ok=True)
    results[name] = report(fit, folder, peer_utilities=peer_test_utilities(fit, fitted_peers),
                           **options)
    if predictions:
      write_predictions(fit, folder / "predictions.parquet")
  if len(fits) > 1:
    lines = ["# Routing evaluation", ""]
    lines += [f"- {r['headline']} ([report]({name}/report.md))" for name, r in results.items()]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
  return results
