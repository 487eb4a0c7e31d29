"""The `erpjax` command: one subcommand per stage of the job, and `run`/`demo` for all of it."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import pathlib
import sys
import time
import traceback
from collections.abc import Callable

import numpy as np

from erpjax.dtypes import DTYPES

log = logging.getLogger("erpjax")


def _check_before_work(config, router_dir: pathlib.Path | None) -> None:
  """Fails now, not after the work, on outputs that cannot be written: a run folder holding other
  files or unwritable, a --router folder of someone else's files, a read-only embedding cache, a
  model folder (encoder.path, rewards.model) that does not exist."""
  from erpjax import files, paths

  # Checks that write nothing first, so that a refusal leaves no trace. The models are read only
  # after the data (and the encoder after all scoring): a mistyped path must fail now.
  for field, path in (("encoder.path", config.encoder.path),
                      ("rewards.model", config.rewards.model if config.rewards else None)):
    if path is not None and not pathlib.Path(path).exists():
      raise FileNotFoundError(errno.ENOENT, f"{field} not found", path)
  files.check_output_dir(config.output_dir, "run")
  if router_dir is not None:
    files.check_output_dir(router_dir, "router")
  if config.encoder.cache:
    cache = paths.cache_dir() / "embeddings"
    try:
      cache.mkdir(parents=True, exist_ok=True)
      files.atomic_write_bytes(cache / ".write-check", b"")
      (cache / ".write-check").unlink()
    except OSError as error:
      raise files.OutputPathError(
          f"{cache}: the embedding cache is not writable ({error.strerror}); set ERPJAX_CACHE to "
          "a writable folder or `encoder: {cache: false}` in the config") from None
  files.claim_output_dir(config.output_dir, "run")


def _run(config, *, encoder=None, router_dir: pathlib.Path | None = None, peers: bool = False,
         seed: int = 0) -> dict:
  """Fits once, writes each test split's report (metrics.json, report.md, plots,
  predictions.parquet; with the peer routers when `peers`), saves the router to `router_dir`
  (unless None) and prints the report. Returns {split name: metrics}."""
  from erpjax import pipeline

  _check_before_work(config, router_dir)
  start = time.perf_counter()
  fits = pipeline.fit_and_predict_splits(config, encoder=encoder)
  out = pathlib.Path(config.output_dir)
  results = pipeline.report_splits(
      fits, out, peers=pipeline.default_peers(seed) if peers else (),
      num_cost_weights=config.routing.num_cost_weights, budget=config.routing.budget, seed=seed)
  folders = [out] if len(results) == 1 else [out / name for name in results]
  for folder in folders:
    print((folder / "report.md").read_text())
    print(f"wrote {folder}: metrics.json, report.md, predictions.parquet and plots")
  if router_dir is not None:
    from erpjax.routing import save_router

    print(f"wrote {save_router(next(iter(fits.values())).router, router_dir)}")
  print(f"done in {time.perf_counter() - start:.1f} s")
  return results


def cmd_run(args) -> int:
  """Fits on the train split, routes the test split, prints and writes the report."""
  from erpjax.config import RunConfig

  config = RunConfig.from_yaml(args.config)
  if args.output_dir:
    config = dataclasses.replace(config, output_dir=args.output_dir)
  _run(config, router_dir=pathlib.Path(config.output_dir) / "router")
  return 0


def cmd_fit(args) -> int:
  """Fits a router on the train split and saves it (the report is written as for `run`)."""
  from erpjax.config import RunConfig

  config = RunConfig.from_yaml(args.config)
  _run(config, router_dir=pathlib.Path(args.router or pathlib.Path(config.output_dir) / "router"))
  return 0


def cmd_demo(args) -> int:
  """The whole job on the embedded seeded synthetic benchmark."""
  from erpjax.config import DataConfig, RoutingConfig, RunConfig

  config = RunConfig(
      data=DataConfig(source="synthetic", options={
          "num_train": args.num_train, "num_test": args.num_test,
          "samples_per_prompt": args.samples_per_prompt, "seed": args.seed}),
      routing=RoutingConfig(budget=args.budget),
      output_dir=args.output_dir,
  )
  _run(config, router_dir=pathlib.Path(config.output_dir) / "router")
  return 0


def cmd_evaluate(args) -> int:
  """ERP beside the peer routers: the report of `run` with the peers added (no router saved)."""
  from erpjax.config import RunConfig

  config = RunConfig.from_yaml(args.config)
  if args.output_dir:
    config = dataclasses.replace(config, output_dir=args.output_dir)
  _run(config, peers=True, seed=args.seed)
  return 0


def _read_prompts(path: str, output: str) -> tuple[list[str], list[str]]:
  """(prompt ids, texts) of `erpjax embed/route`'s input (`erpjax.data.read_prompts`: a dataset
  folder, a prompts table, or a .txt file whose line numbers are the ids), after checking that
  the output file can be written, so that neither fails after the encoder has run."""
  from erpjax import data, files

  files.check_output_file(output)
  return data.read_prompts(path)


def _write_table(columns: dict, path: pathlib.Path) -> None:
  import pyarrow as pa
  import pyarrow.parquet as pq

  from erpjax.files import atomic_write

  path.parent.mkdir(parents=True, exist_ok=True)
  atomic_write(path, lambda p: pq.write_table(pa.table(columns), p))


def cmd_embed(args) -> int:
  """Embeds prompts and writes prompt_id + embedding to Parquet."""
  from erpjax import pipeline
  from erpjax.config import EncoderConfig

  config = EncoderConfig(path=args.encoder, max_length=args.max_length, batch_size=args.batch_size,
                         dtype=args.dtype)
  ids, texts = _read_prompts(args.input, args.output)
  encoder = pipeline.load_encoder(config)
  embeddings = pipeline.embed(encoder, texts, config)
  _write_table({"prompt_id": ids, "embedding": list(embeddings)}, pathlib.Path(args.output))
  print(f"wrote {len(ids)} embeddings of dim {embeddings.shape[1]} ({encoder.identifier}) "
        f"to {args.output}")
  return 0


def cmd_route(args) -> int:
  """Routes new prompts with a saved router."""
  from erpjax import pipeline
  from erpjax.config import EncoderConfig
  from erpjax.routing import check_encoder, cost_weight_for_budget, load_router, route

  config = EncoderConfig(path=args.encoder, max_length=args.max_length, batch_size=args.batch_size)
  ids, texts = _read_prompts(args.input, args.output)
  router = load_router(args.router)  # A damaged router fails before the encoder loads.
  encoder = pipeline.load_encoder(config)
  check_encoder(args.router, router.spec, encoder.identifier)
  embeddings = pipeline.embed(encoder, texts, config)
  predicted = np.asarray(router.predict(embeddings))
  # The router routes on its utilities (at cost weight 0: predictions less its safe-rule
  # margins); the budget search and the routing use the same float64 utilities and costs, so the
  # budget holds.
  costs = np.asarray(router.costs[...], np.float64)
  cost_weight = args.cost_weight
  if args.budget is not None:
    cost_weight = cost_weight_for_budget(router.utilities(embeddings, 1.0), costs, args.budget,
                                         at_zero=router.utilities(embeddings, 0.0))
    print(f"lambda = {cost_weight:.6g} keeps the mean cost within {args.budget:g} per prompt")
  choice = np.asarray(route(router.utilities(embeddings, cost_weight), costs, cost_weight))
  columns = {"prompt_id": ids, "llm": [router.spec.llms[i] for i in choice],
             "cost": costs[choice]}
  for j, llm in enumerate(router.spec.llms):
    columns[f"{llm}|predicted"] = predicted[:, j]
  _write_table(columns, pathlib.Path(args.output))
  counts = np.bincount(choice, minlength=len(router.spec.llms))
  for llm, count in zip(router.spec.llms, counts):
    print(f"{llm:>40s}: {count} prompts")
  print(f"mean cost {costs[choice].mean():.6g} per prompt; wrote {args.output}")
  return 0


def _is_records(path: str) -> bool:
  from erpjax.data._records import MANIFEST

  return (pathlib.Path(path) / MANIFEST).is_file()


def cmd_score(args) -> int:
  """Scores every response of a dataset or samples records folder with a reward model; writes it
  with the scores added as one more reward model."""
  from erpjax import files
  from erpjax.runtime import bucket_lengths
  from erpjax.scoring import ScoringConfig, ScoringEngine

  import jax

  records = _is_records(args.input)
  if not records and jax.process_count() > 1:
    raise ValueError(f"{args.input}: a multi-process run scores a samples records folder, where "
                     "each process reads its own shards; write one with `erpjax convert "
                     f"{args.input} -o RECORDS` and score RECORDS")
  output = pathlib.Path(args.output)
  scores = pathlib.Path(args.scores) if args.scores else output.with_name(output.name + ".scores")
  for folder, kind in ((output, "records" if records else "dataset"), (scores, "scores")):
    files.check_output_dir(folder, kind)  # before the model loads and the scoring runs
  config = ScoringConfig(lengths=bucket_lengths(args.max_length), dtype=args.dtype,
                         dedupe=not args.no_dedupe)
  engine = ScoringEngine.from_pretrained(args.model, config)
  if records:
    from erpjax import data, streamed

    summary = streamed.score_samples(args.input, engine, output, name=args.name, scores=scores)
    reward_models = data.read_manifest(output)["meta"]["reward_models"]
  else:
    from erpjax import data
    from erpjax.scoring import score_dataset

    scored, summary = score_dataset(data.read_dataset(args.input), engine, scores, name=args.name)
    data.write_dataset(scored, output)
    reward_models = scored.reward_models
  print(f"{summary.num_items} responses: {summary.num_skipped} scored by an earlier run, "
        f"{summary.num_copies} copies of another, {summary.num_tokens:,} tokens run in "
        f"{summary.seconds:.1f} s ({summary.tokens_per_s:,.0f}/s)"
        + (" by this process" if jax.process_count() > 1 else ""))
  print(f"wrote {output} (reward models: {', '.join(reward_models)}); scores in {scores}")
  return 0


def cmd_convert(args) -> int:
  """Writes a dataset folder's samples as ArrayRecord records, each prompt's in one shard."""
  from erpjax import data

  # Streamed: one batch of rows, then one shard, in memory (erpjax/data/_convert.py).
  done = data.convert_dataset(args.input, args.output, num_shards=args.shards)
  print(f"wrote {done.num_samples} samples of {done.num_prompts} prompts and "
        f"{done.num_llms} LLMs as {done.num_shards} ArrayRecord shard(s) to {done.folder}")
  return 0


def cmd_featurize(args) -> int:
  """Embeds the prompts of a samples records folder and estimates each LLM's expected reward."""
  from erpjax import data, files, pipeline, streamed
  from erpjax.config import EncoderConfig

  files.check_output_dir(args.output, "records")
  data.read_manifest(args.input)  # before the encoder loads
  config = EncoderConfig(path=args.encoder, max_length=args.max_length, batch_size=args.batch_size,
                         dtype=args.dtype)
  encoder = pipeline.load_encoder(config)
  folder = streamed.featurize_samples(args.input, args.output, encoder,
                                      reward_model=args.reward_model, batch_size=args.batch_size)
  manifest = data.read_manifest(folder)
  print(f"wrote features of {manifest['num_records']} prompts (dim {manifest['meta']['dim']}, "
        f"{encoder.identifier}; expected rewards under {manifest['meta']['reward_model']!r}) "
        f"to {folder}")
  return 0


def cmd_fit_features(args) -> int:
  """Fits a ridge router on a features records folder, streamed; saves it."""
  import jax

  from erpjax import files, streamed
  from erpjax.routing import save_router

  files.check_output_dir(args.router, "router")
  router, fit = streamed.fit_features(args.features, betas=args.beta and [args.beta],
                                      chunk_size=args.chunk_size)
  for llm, beta, count in zip(router.spec.llms, fit.betas, fit.counts):
    print(f"{llm:>40s}: beta {beta:g} on {count} prompts")
  if jax.process_index() == 0:  # Every process holds the same router.
    print(f"wrote {save_router(router, args.router)}")
  return 0


def _encoder_args(parser) -> None:
  parser.add_argument("--encoder", default=None,
                      help="HF folder of a BERT-family sentence encoder "
                      "(default: all-MiniLM-L6-v2)")
  parser.add_argument("--max-length", type=int, default=256)
  parser.add_argument("--batch-size", type=int, default=64)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="erpjax", description="Expected reward prediction and cost-aware model routing in JAX.",
      epilog="Multi-process runs (erpjax.runtime.distributed): start the same command on every "
      "process with ERPJAX_COORDINATOR=host:port (of process 0), ERPJAX_NUM_PROCESSES and "
      "ERPJAX_PROCESS_ID, or ERPJAX_DISTRIBUTED=auto on a multi-host TPU slice; Slurm steps, "
      "mpirun and GKE TPU pods are detected without it. score, featurize and fit-features then "
      "split a records folder's shards among the processes (erpjax convert writes one); the "
      "other commands run in one process.")
  parser.add_argument(*GLOBAL_FLAGS, action="store_true",
                      help="log debug messages; on an error, print its traceback too")
  sub = parser.add_subparsers(dest="command", required=True)
  flags = _global_flags()

  def add(name: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(name, parents=[flags], **kwargs)

  p = add("demo", help="the whole job on a seeded synthetic benchmark (~1 min on 2 CPU cores)")
  p.add_argument("--output-dir", default="runs/demo")
  p.add_argument("--num-train", type=int, default=1200)
  p.add_argument("--num-test", type=int, default=400)
  p.add_argument("--samples-per-prompt", type=int, default=8, help="K responses per prompt and LLM")
  p.add_argument("--budget", type=float, default=0.001, help="mean US$ per prompt for budget mode")
  p.add_argument("--seed", type=int, default=0)
  p.set_defaults(func=cmd_demo)

  p = add("run", help="fit on train, route and report on test, as a YAML config says")
  p.add_argument("config")
  p.add_argument("--output-dir", default=None, help="overrides the config's output_dir")
  p.set_defaults(func=cmd_run)

  p = add("fit", help="fit a router and save it (orbax checkpoint)")
  p.add_argument("config")
  p.add_argument("--router", default=None, help="where to save it (default: <output_dir>/router)")
  p.set_defaults(func=cmd_fit)

  p = add("evaluate", help="ERP beside peer routers: metrics, tables, plots")
  p.add_argument("config")
  p.add_argument("--output-dir", default=None, help="overrides the config's output_dir")
  p.add_argument("--seed", type=int, default=0, help="seed of the random and trained peers")
  p.set_defaults(func=cmd_evaluate)

  # `train-rm` has its own parser (erpjax.train.reward_model.main); `main` hands its arguments over.
  add("train-rm", help="train a Bradley-Terry reward model on HH-RLHF pairs "
                 "(see `erpjax train-rm --help`)")

  p = add("score", help="score a dataset's responses with a reward model "
                     "(resumable), adding it to the dataset's reward models")
  p.add_argument("input", help="dataset folder (docs/data_format.md) whose samples have responses")
  p.add_argument("--model", required=True, help="HF folder of a reward model")
  p.add_argument("--output", "-o", required=True, help="dataset folder to write")
  p.add_argument("--name", default="reward_model", help="the new reward model's name")
  p.add_argument("--scores", default=None,
                 help="score folder; a killed run restarted with it resumes "
                 "(default: <output>.scores)")
  p.add_argument("--max-length", type=int, default=512,
                 help="tokens per (prompt, response), the longest bucket; longer pairs are "
                 "truncated as the model's formatter does")
  p.add_argument("--dtype", default="float32", choices=DTYPES)
  p.add_argument("--no-dedupe", action="store_true",
                 help="run identical (prompt, response) pairs through the model each time")
  p.set_defaults(func=cmd_score)

  p = add("convert", help="write a dataset folder (JSONL/Parquet tables) as a samples records "
          "folder (ArrayRecord), the input of multi-process runs")
  p.add_argument("input", help="dataset folder (docs/data_format.md)")
  p.add_argument("--output", "-o", required=True, help="records folder to write")
  p.add_argument("--shards", type=int, default=None,
                 help="ArrayRecord files (units of work: a process reads whole shards; each "
                 "prompt's samples sit in one); default: one per 200,000 samples")
  p.set_defaults(func=cmd_convert)

  p = add("featurize", help="embed a samples records folder's prompts and estimate each LLM's "
          "expected reward on them, into a features records folder (shard by shard)")
  p.add_argument("input", help="samples records folder (erpjax convert / score)")
  p.add_argument("--output", "-o", required=True, help="features records folder to write")
  p.add_argument("--reward-model", default=None,
                 help="the reward model whose rewards are averaged (default: the first)")
  p.add_argument("--dtype", default="float32", choices=DTYPES)
  _encoder_args(p)
  p.set_defaults(func=cmd_featurize)

  p = add("fit-features", help="fit a ridge router on a features records folder, streamed "
          "(each process its own rows; penalty per LLM by GCV), and save it")
  p.add_argument("features", help="features records folder (erpjax featurize)")
  p.add_argument("--router", required=True, help="folder to save the router to")
  p.add_argument("--beta", type=float, default=None,
                 help="one ridge penalty for every LLM (default: each chooses by GCV)")
  p.add_argument("--chunk-size", type=int, default=8192, help="prompts per streamed chunk")
  p.set_defaults(func=cmd_fit_features)

  p = add("embed", help="embed prompts to Parquet")
  p.add_argument("input", help="dataset folder, prompts .jsonl/.parquet, or .txt (one per line)")
  p.add_argument("--output", "-o", required=True)
  p.add_argument("--dtype", default="float32", choices=DTYPES)
  _encoder_args(p)
  p.set_defaults(func=cmd_embed)

  p = add("route", help="route prompts with a saved router")
  p.add_argument("input", help="dataset folder, prompts .jsonl/.parquet, or .txt (one per line)")
  p.add_argument("--router", required=True)
  p.add_argument("--output", "-o", required=True)
  group = p.add_mutually_exclusive_group()
  group.add_argument("--cost-weight", type=float, default=0.0, help="lambda")
  group.add_argument("--budget", type=float, default=None,
                     help="mean cost per prompt; lambda is chosen on these prompts to meet it")
  _encoder_args(p)
  p.set_defaults(func=cmd_route)
  return parser


GLOBAL_FLAGS = ("-v", "--verbose")
# Subcommands that split their work among the processes of a multi-process run.
MULTI_PROCESS_COMMANDS = ("score", "featurize", "fit-features")


def _global_flags() -> argparse.ArgumentParser:
  """The flags every subcommand takes, before or after its name (`erpjax -v run` = `erpjax run
  -v`). SUPPRESS: a subcommand's parser must not reset a flag given before its name."""
  flags = argparse.ArgumentParser(add_help=False)
  flags.add_argument(*GLOBAL_FLAGS, action="store_true", default=argparse.SUPPRESS,
                     help="log debug messages; on an error, print its traceback too")
  return flags


def _message(error: BaseException) -> str:
  """One line for an expected failure: OS errors as "<path>: <reason>", the rest as their text
  (erpjax's own errors name file, row and field themselves)."""
  if isinstance(error, OSError) and error.filename is not None:
    where = os.fsdecode(error.filename)
    if error.filename2 is not None:
      where += f" -> {os.fsdecode(error.filename2)}"
    return f"{where}: {error.strerror or error}"
  if isinstance(error, UnicodeDecodeError):
    return f"input is not UTF-8 text ({error.reason} at byte {error.start}): {error}"
  return str(error)


def _call(command: str, work: Callable[[], int], verbose: bool) -> int:
  """Runs one subcommand: its expected failures (bad input, bad config, unusable checkpoints or
  output folders, I/O and permission errors) end as one message on stderr and exit status 2,
  with the traceback only under -v. Anything else is a bug and keeps its traceback."""
  logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                      format="%(levelname)s %(name)s: %(message)s")
  # orbax logs every checkpoint step through absl at INFO; keep the CLI's output readable.
  logging.getLogger("absl").setLevel(logging.DEBUG if verbose else logging.WARNING)
  try:
    from erpjax.runtime import distributed

    # Before any JAX work. One process: nothing happens; a multi-process run: see the epilog.
    info = distributed.initialize()
    if info.num_processes > 1 and command not in MULTI_PROCESS_COMMANDS:
      raise ValueError(
          f"runs in one process, this is process {info.process_id} of {info.num_processes}; "
          f"multi-process runs are for {', '.join(MULTI_PROCESS_COMMANDS)} on records folders")
    return work()
  except KeyboardInterrupt:
    print(f"erpjax {command}: interrupted", file=sys.stderr)
    return 130
  except (ValueError, OSError) as error:
    if verbose:
      traceback.print_exc()
    print(f"erpjax {command}: error: {_message(error)}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
  """The `erpjax` command; returns the exit status (0 = done, 2 = an error, reported on stderr)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  # train-rm has its own parser: global flags before its name are read here, the rest is its own.
  lead = 0
  while lead < len(argv) and argv[lead] in GLOBAL_FLAGS:
    lead += 1
  if argv[lead:lead + 1] == ["train-rm"]:
    from erpjax.train import reward_model

    return _call("train-rm", lambda: reward_model.main(argv[lead + 1:]), verbose=lead > 0)
  args = build_parser().parse_args(argv)
  return _call(args.command, lambda: args.func(args), verbose=args.verbose)


if __name__ == "__main__":
  sys.exit(main())
