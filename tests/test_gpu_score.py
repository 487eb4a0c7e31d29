"""benchmarks/gpu_score.py stays runnable: without a GPU it says so and exits 0; `--smoke` runs a
tiny shape on the CPU (slow: compiles); on a GPU a short run measures a non-zero MFU."""

import importlib.util
import json
import pathlib

import jax
import pytest

_PATH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_score.py"


def _benchmark():
  spec = importlib.util.spec_from_file_location("gpu_score", _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _last_json(capsys) -> dict:
  return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_without_a_gpu_it_says_so_and_exits_cleanly(capsys):
  if jax.default_backend() == "gpu":
    pytest.skip("a GPU is present")
  assert _benchmark().main([]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith("no GPU: JAX's backend is 'cpu'")
  assert json.loads(out[-1]) == {"skipped": "no GPU", "backend": "cpu"}


def test_peak_table_matches_device_kinds():
  peak = _benchmark().peak_flops
  assert peak("NVIDIA H200") == 989e12
  assert peak("NVIDIA H100 PCIe") == 756e12
  assert peak("NVIDIA H100 80GB HBM3") == 989e12
  assert peak("NVIDIA A100-SXM4-80GB") == 312e12
  assert peak("cpu") is None


@pytest.mark.slow
def test_smoke_run_on_the_cpu(capsys):
  assert _benchmark().main(["--smoke", "--rules", "fsdp", "--model-parallel", "2"]) == 0
  result = _last_json(capsys)
  assert result["smoke"] and not result["skipped"]
  (row,) = result["results"]
  assert row["scores_finite"] and row["tokens_per_s"] > 0


@pytest.mark.gpu
def test_short_gpu_run_measures_utilisation(capsys):
  if jax.default_backend() != "gpu":
    pytest.skip("needs a GPU")
  assert _benchmark().main(["--models", "1b", "--layers", "2", "--lengths", "2048",
                            "--steps", "2"]) == 0
  result = _last_json(capsys)
  assert all("error" not in row for row in result["results"]), result["results"]
  assert all(row["scores_finite"] for row in result["results"])
  assert result["best_mfu"] is not None and 0 < result["best_mfu"] < 1
