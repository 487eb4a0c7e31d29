"""The whole job end to end on the synthetic benchmark, with the real offline MiniLM encoder."""

import json
import pathlib

import numpy as np
import pytest

from erpjax import cli, pipeline
from erpjax.config import EncoderConfig
from erpjax.data import make_synthetic_benchmark
from erpjax.eval import metrics
from erpjax.estimate import estimate_expected_rewards
from erpjax.routing import fit_router, load_router


@pytest.fixture(scope="module")
def encoder():
  return pipeline.load_encoder(EncoderConfig())


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("ERPJAX_CACHE", str(tmp_path / "cache"))


def test_demo_writes_report_plot_and_router(tmp_path, capsys):
  out = tmp_path / "demo"
  assert cli.main(["demo", "--output-dir", str(out), "--num-train", "300", "--num-test", "100",
                   "--samples-per-prompt", "4", "--budget", "0.0015"]) == 0
  printed = capsys.readouterr().out
  assert "oracle" in printed and "R² per LLM" in printed
  for name in ("metrics.json", "report.md", "predictions.parquet", "reward_vs_cost.png",
               "regret_vs_cost.png", "pred_vs_observed_ERP.png"):
    assert (out / name).stat().st_size > 0
  result = json.loads((out / "metrics.json").read_text())
  routers = result["routers"]
  # `run` reports ERP beside the baselines and its candidate predictors: no peers.
  assert {"ERP", "oracle"} <= set(routers)
  assert {r["role"] for n, r in routers.items() if n not in ("ERP", "oracle")} <= {"candidate"}
  erp, oracle = routers["ERP"]["cost_weight_0"], routers["oracle"]["cost_weight_0"]
  assert oracle["reward"] >= erp["reward"]
  assert oracle["reward"] >= result["best_single_llm"]["reward"]
  assert result["best_single_llm"]["chosen_on"] == "train"
  # The synthetic rewards are a function of category and difficulty, which MiniLM embeds well.
  assert routers["ERP"]["prediction"]["r2_pooled"] > 0.5
  assert result["budget"]["route_cost"] <= 0.0015
  assert result["headline"].startswith("synthetic/test: default router ERP: reward ")
  router = load_router(out / "router")
  assert router.spec.llms == tuple(result["llms"])


def test_route_and_embed_commands_use_a_saved_router(tmp_path, encoder):
  bench = make_synthetic_benchmark(num_train=200, num_test=10, samples_per_prompt=2)
  x = encoder.encode(list(bench.train.prompts), progress=False)
  router = fit_router(x, estimate_expected_rewards(bench.train).of(0), bench.train.costs,
                      llms=bench.train.llms, encoder=encoder.identifier, reward_model="rm")
  from erpjax.routing import save_router
  save_router(router, tmp_path / "router")
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("\n".join(bench.test.prompts) + "\n")
  assert cli.main(["route", str(prompts), "--router", str(tmp_path / "router"),
                   "--output", str(tmp_path / "routes.parquet")]) == 0
  assert cli.main(["embed", str(prompts), "--output", str(tmp_path / "emb.parquet")]) == 0
  import pyarrow.parquet as pq
  routes = pq.read_table(tmp_path / "routes.parquet").to_pydict()
  assert len(routes["llm"]) == 10 and set(routes["llm"]) <= set(bench.train.llms)
  embedded = np.stack(pq.read_table(tmp_path / "emb.parquet")["embedding"].to_numpy(False))
  np.testing.assert_allclose(embedded, encoder.encode(list(bench.test.prompts), progress=False),
                             atol=1e-6)
  expected = np.asarray(router(embedded, 0.0))
  assert routes["llm"] == [bench.train.llms[i] for i in expected]


def test_route_refuses_a_router_fit_on_another_encoder(tmp_path, encoder, capsys):
  bench = make_synthetic_benchmark(num_train=50, num_test=5, samples_per_prompt=1)
  x = np.random.default_rng(0).normal(size=(50, 384)).astype(np.float32)
  router = fit_router(x, estimate_expected_rewards(bench.train).of(0), bench.train.costs,
                      llms=bench.train.llms, encoder="some-other-encoder", reward_model="rm")
  from erpjax.routing import save_router
  save_router(router, tmp_path / "router")
  prompts = tmp_path / "p.txt"
  prompts.write_text("hello\n")
  assert cli.main(["route", str(prompts), "--router", str(tmp_path / "router"),
                   "--output", str(tmp_path / "r.parquet")]) == 2
  assert "some-other-encoder" in capsys.readouterr().err


def test_r2_against_true_expected_rewards_rises_with_k(encoder):
  """More samples per prompt give less noisy ER labels and so better predictions of the truth."""
  base = make_synthetic_benchmark(num_train=400, num_test=200, samples_per_prompt=1, noise=1.5)
  x_train = encoder.encode(list(base.train.prompts), progress=False)
  x_test = encoder.encode(list(base.test.prompts), progress=False)
  scores = []
  for k in (1, 4, 32):
    bench = make_synthetic_benchmark(num_train=400, num_test=200, samples_per_prompt=k, noise=1.5)
    assert bench.train.prompts == base.train.prompts  # only the samples change with K
    router = fit_router(x_train, estimate_expected_rewards(bench.train).of(0), bench.train.costs,
                        llms=bench.train.llms, encoder=encoder.identifier, reward_model="rm")
    scores.append(metrics.r2(np.asarray(router.predict(x_test)), bench.test_true, axis=None))
  assert scores[0] < scores[1] < scores[2], scores


def test_evaluate_puts_erp_beside_the_peers(tmp_path, capsys):
  config = tmp_path / "eval.yaml"
  config.write_text(
      "data:\n  source: synthetic\n"
      "  options: {num_train: 300, num_test: 100, samples_per_prompt: 4}\n"
      f"routing:\n  num_cost_weights: 20\noutput_dir: {tmp_path / 'eval'}\n")
  assert cli.main(["evaluate", str(config)]) == 0
  result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  routers = result["routers"]
  for name in ("ERP", "knn", "zooter", "mf", "mlp", "category_best", "random", "oracle"):
    assert name in routers, sorted(routers)
  assert routers["oracle"]["cost_weight_0"]["reward"] >= routers["ERP"]["cost_weight_0"]["reward"]
  assert routers["ERP"]["cost_weight_0"]["reward"] > routers["random"]["cost_weight_0"]["reward"]
  assert (tmp_path / "eval" / "reward_vs_cost.png").exists()
  assert "ERP" in capsys.readouterr().out
  assert {routers[n]["role"] for n in ("knn", "zooter", "mf", "mlp", "random")} == {
      "label-free peer"}
  assert routers["category_best"]["role"] == "peer"
  assert " vs best label-free peer " in result["headline"]


def test_run_reports_each_test_split_of_one_fit(tmp_path, capsys, monkeypatch):
  # The docs' tiny folder dataset with a second test split ("ood", here the test prompts again):
  # one fit, one report per split in its own folder, an index report with one headline per split.
  import shutil

  root = tmp_path / "data"
  shutil.copytree(pathlib.Path(__file__).parents[1] / "docs/examples/folder_data", root)
  shutil.copytree(root / "test", root / "ood")
  out = tmp_path / "run"
  config = tmp_path / "two.yaml"
  config.write_text(f"data:\n  source: folder\n  root: {root}\n  test: [test, ood]\n"
                    "predictor:\n  kind: ridge\n"  # one candidate: fast
                    f"routing:\n  num_cost_weights: 10\noutput_dir: {out}\n")
  fits = []
  fit_predictor = pipeline.fit_predictor
  monkeypatch.setattr(pipeline, "fit_predictor",
                      lambda *args, **kwargs: fits.append(1) or fit_predictor(*args, **kwargs))
  assert cli.main(["run", str(config)]) == 0
  assert len(fits) == 1  # fitted once for both splits
  index = (out / "report.md").read_text().splitlines()
  headlines = [line for line in index if "default router ERP" in line]
  assert len(headlines) == 2
  results = {}
  for split, line in zip(("test", "ood"), headlines):
    assert f"]({split}/report.md)" in line
    results[split] = json.loads((out / split / "metrics.json").read_text())
    assert line.startswith(f"- {results[split]['headline']}")
    # Every plot of a split has its own name, in the split's own folder.
    assert sorted(p.name for p in (out / split).glob("*.png")) == [
        "pred_vs_observed_ERP.png", "regret_vs_cost.png", "reward_vs_cost.png"]
  assert not list(out.glob("*.png")) and not (out / "metrics.json").exists()
  # One router, and the same predictions for the prompts both splits share.
  assert (out / "router").is_dir() and not (out / "test" / "router").exists()
  import pyarrow.parquet as pq
  test, ood = (pq.read_table(out / s / "predictions.parquet").to_pydict() for s in ("test", "ood"))
  assert test == ood
  assert results["test"]["routers"]["ERP"]["frontier"] == results["ood"]["routers"]["ERP"][
      "frontier"]
  printed = capsys.readouterr().out
  assert printed.count("# Routing evaluation: ") == 2
