"""The `erpjax` command: one subcommand per stage of the job, and `run`/`demo` for all of it."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import sys
import time

import numpy as np

log = logging.getLogger("erpjax")


def _print_summary(summary, files) -> None:
  print(summary.to_markdown())
  for note in summary.notes:
    print(f"note: {note}")
  for path in files.values():
    print(f"wrote {path}")


def _run(config, *, encoder=None, save_router_to: pathlib.Path | None = None):
  from erpjax import pipeline, summary as summary_lib
  from erpjax.routing import save_router

  start = time.perf_counter()
  fit = pipeline.fit_and_predict(config, encoder=encoder)
  summary = summary_lib.summarize(
      fit, num_cost_weights=config.routing.num_cost_weights, budget=config.routing.budget)
  files = summary_lib.write_outputs(summary, fit, config.output_dir)
  router_dir = save_router_to or pathlib.Path(config.output_dir) / "router"
  files["router"] = save_router(fit.router, router_dir)
  _print_summary(summary, files)
  print(f"done in {time.perf_counter() - start:.1f} s")
  return summary


def cmd_run(args) -> int:
  """Fits on the train split, routes the test split, prints and writes the report."""
  from erpjax.config import RunConfig

  config = RunConfig.from_yaml(args.config)
  if args.output_dir:
    config = dataclasses.replace(config, output_dir=args.output_dir)
  _run(config)
  return 0


def cmd_fit(args) -> int:
  """Fits a router on the train split and saves it (the report is written as for `run`)."""
  from erpjax.config import RunConfig

  config = RunConfig.from_yaml(args.config)
  out = pathlib.Path(args.router or pathlib.Path(config.output_dir) / "router")
  _run(config, save_router_to=out)
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
  _run(config)
  return 0


def cmd_evaluate(args) -> int:
  """ERP beside the peer routers: metrics.json, report.md and plots."""
  from erpjax.config import RunConfig
  from erpjax.evaluation import evaluate_run

  config = RunConfig.from_yaml(args.config)
  if args.output_dir:
    config = dataclasses.replace(config, output_dir=args.output_dir)
  start = time.perf_counter()
  evaluate_run(config, seed=args.seed)
  print(pathlib.Path(config.output_dir, "report.md").read_text())
  print(f"wrote {config.output_dir}/metrics.json, report.md and plots "
        f"in {time.perf_counter() - start:.1f} s")
  return 0


def _read_prompts(path: pathlib.Path) -> tuple[list[str], list[str]]:
  """(prompt ids, texts) from a dataset folder, a prompts table (.jsonl/.parquet with `text` and
  optional `prompt_id`), or a .txt file with one prompt per line."""
  from erpjax import data

  if path.is_dir():
    dataset = data.read_dataset(path)
    return list(dataset.prompt_ids), list(dataset.prompts)
  if path.suffix == ".txt":
    texts = [line for line in path.read_text().splitlines() if line.strip()]
    return [f"line-{i + 1}" for i in range(len(texts))], texts
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
  ids, texts = _read_prompts(pathlib.Path(args.input))
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
  from erpjax.routing import cost_weight_for_budget, load_router, route

  config = EncoderConfig(path=args.encoder, max_length=args.max_length, batch_size=args.batch_size)
  encoder = pipeline.load_encoder(config)
  router = load_router(args.router, expect_encoder=encoder.identifier)
  ids, texts = _read_prompts(pathlib.Path(args.input))
  predicted = np.asarray(router.predict(pipeline.embed(encoder, texts, config)))
  costs = np.asarray(router.costs[...])
  cost_weight = args.cost_weight
  if args.budget is not None:
    cost_weight = cost_weight_for_budget(predicted, costs, args.budget)
    print(f"lambda = {cost_weight:.6g} keeps the mean cost within {args.budget:g} per prompt")
  choice = np.asarray(route(predicted, costs, cost_weight))
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


def cmd_score(args) -> int:
  """Scores every response of a dataset folder with a reward model; writes the dataset with it
  added as one more reward model."""
  from erpjax import data
  from erpjax.scoring import ScoringConfig, ScoringEngine, bucket_lengths, score_dataset

  dataset = data.read_dataset(args.input)
  output = pathlib.Path(args.output)
  scores = pathlib.Path(args.scores) if args.scores else output.with_name(output.name + ".scores")
  config = ScoringConfig(lengths=bucket_lengths(args.max_length), dtype=args.dtype,
                         dedupe=not args.no_dedupe)
  engine = ScoringEngine.from_pretrained(args.model, config)
  scored, summary = score_dataset(dataset, engine, scores, name=args.name)
  data.write_dataset(scored, output)
  print(f"{summary.num_items} responses: {summary.num_skipped} scored by an earlier run, "
        f"{summary.num_copies} copies of another, {summary.num_tokens:,} tokens run in "
        f"{summary.seconds:.1f} s ({summary.tokens_per_s:,.0f}/s)")
  print(f"wrote {output} (reward models: {', '.join(scored.reward_models)}); scores in {scores}")
  return 0


def _encoder_args(parser) -> None:
  parser.add_argument("--encoder", default=None,
                      help="HF folder of a BERT-family sentence encoder "
                      "(default: all-MiniLM-L6-v2)")
  parser.add_argument("--max-length", type=int, default=256)
  parser.add_argument("--batch-size", type=int, default=64)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="erpjax", description="Expected reward prediction and cost-aware model routing in JAX.")
  parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("demo", help="the whole job on a seeded synthetic benchmark (~1 min)")
  p.add_argument("--output-dir", default="runs/demo")
  p.add_argument("--num-train", type=int, default=1200)
  p.add_argument("--num-test", type=int, default=400)
  p.add_argument("--samples-per-prompt", type=int, default=8, help="K responses per prompt and LLM")
  p.add_argument("--budget", type=float, default=0.001, help="mean US$ per prompt for budget mode")
  p.add_argument("--seed", type=int, default=0)
  p.set_defaults(func=cmd_demo)

  p = sub.add_parser("run", help="fit on train, route and report on test, as a YAML config says")
  p.add_argument("config")
  p.add_argument("--output-dir", default=None, help="overrides the config's output_dir")
  p.set_defaults(func=cmd_run)

  p = sub.add_parser("fit", help="fit a router and save it (orbax checkpoint)")
  p.add_argument("config")
  p.add_argument("--router", default=None, help="where to save it (default: <output_dir>/router)")
  p.set_defaults(func=cmd_fit)

  p = sub.add_parser("evaluate", help="ERP beside peer routers: metrics, tables, plots")
  p.add_argument("config")
  p.add_argument("--output-dir", default=None, help="overrides the config's output_dir")
  p.add_argument("--seed", type=int, default=0, help="seed of the random and trained peers")
  p.set_defaults(func=cmd_evaluate)

  # `train-rm` has its own parser (erpjax.scoring.train_rm.main); `main` hands its arguments over.
  sub.add_parser("train-rm", help="train a Bradley-Terry reward model on HH-RLHF pairs "
                 "(see `erpjax train-rm --help`)")

  p = sub.add_parser("score", help="score a dataset's responses with a reward model "
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
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--no-dedupe", action="store_true",
                 help="run identical (prompt, response) pairs through the model each time")
  p.set_defaults(func=cmd_score)

  p = sub.add_parser("embed", help="embed prompts to Parquet")
  p.add_argument("input", help="dataset folder, prompts .jsonl/.parquet, or .txt (one per line)")
  p.add_argument("--output", "-o", required=True)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  _encoder_args(p)
  p.set_defaults(func=cmd_embed)

  p = sub.add_parser("route", help="route prompts with a saved router")
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


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv[:1] == ["train-rm"]:
    from erpjax.scoring import train_rm

    return train_rm.main(argv[1:])
  args = build_parser().parse_args(argv)
  logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                      format="%(levelname)s %(name)s: %(message)s")
  # orbax logs every checkpoint step through absl at INFO; keep the CLI's output readable.
  logging.getLogger("absl").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
  try:
    return args.func(args)
  except (ValueError, FileNotFoundError) as error:
    # Bad input and bad configs end with their message, not a traceback.
    print(f"erpjax {args.command}: error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
