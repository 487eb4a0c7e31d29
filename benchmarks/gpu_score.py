"""Reward-model scoring throughput and model-FLOP utilisation on a GPU, ready to run when one is.

A Llama-shaped reward model (erpjax's own `DecoderRewardModel`, random weights drawn on the
device by the model's initializers) scores rows of one long sequence each, in bfloat16, for each
(model, sequence length, attention implementation): the Llama-3.2-1B and Llama-3.1-8B layer shapes
(the latter is Llama-3-8B's too), 2,048 and 8,192 tokens. Each combination is compiled, run once,
then timed over `--steps` steps; throughput is real tokens per second (no padding: every row is
full), and MFU is the FLOPs the model runs per second over the device's peak dense bfloat16 rate
(a table by device kind, or `--peak-tflops`).

FLOPs counted (matmuls only, 2 per multiply-add): every layer's projections and gated MLP on all
tokens, causal attention (the visible half of QK^T and PV: 2 N H T (T+1) per row and layer), except
that the model computes its last layer only at the score token (keys and values still on all
tokens), as `DecoderRewardModel` does. XLA's own count of the compiled step is printed beside it
where the backend gives one (it does not see inside fused attention kernels).

Sized to finish within 8 minutes on one H200 (compiles included): no combination starts after
`--budget-s` (default 6 minutes, leaving room for the one running and for start-up); those
skipped are listed. Parameters are placed by `erpjax.sharding`'s rule
table (`--rules`) over every GPU, with the memory plan printed first; one GPU holds them whole.

Without a GPU it says so and exits 0; `--smoke` runs a tiny shape on the CPU instead (a check
that the script works, not a measurement). The last line printed is one JSON object.

  python benchmarks/gpu_score.py                      # the full check, one H200: < 8 min
  python benchmarks/gpu_score.py --models 8b --lengths 8192 --attention cudnn,pallas
  python benchmarks/gpu_score.py --smoke
"""

import argparse
import dataclasses
import inspect
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from erpjax import sharding
from erpjax.dtypes import DTYPES
from erpjax.models import decoder, presets

# Peak dense bfloat16 tensor-core FLOP/s by substring of `jax.Device.device_kind`, first match
# wins (NVIDIA data sheets, SXM parts unless named).
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("GH200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)

MODELS = {"1b": presets.LLAMA_3_2_1B, "8b": presets.LLAMA_3_1_8B}
# Tiny, every dim divisible by 8: the smoke run also shards over emulated CPU devices.
SMOKE_MODEL = decoder.DecoderConfig(
    vocab_size=512, embed_dim=64, mlp_dim=128, num_layers=2, num_heads=4, num_kv_heads=2,
    head_dim=16, norm_eps=1e-5)
# Attention implementations `--attention auto` compares on a GPU: XLA's fused softmax of the
# [T, S] logits, cuDNN's fused kernel, and the Pallas flash kernel (no [T, S] tensor).
GPU_ATTENTION = ("xla", "cudnn", "pallas")


def peak_flops(device_kind: str) -> float | None:
  for name, flops in PEAK_BF16_FLOPS:
    if name in device_kind:
      return flops
  return None


def model_flops(c: decoder.DecoderConfig, length: int, rows: int) -> float:
  """Matmul FLOPs of one step: `rows` rows of one `length`-token sequence, scored at its end."""
  q_out = 2 * c.embed_dim * c.num_heads * c.head_dim  # q and out projections, per token
  kv = 2 * c.embed_dim * c.num_kv_heads * c.head_dim
  mlp = 3 * c.embed_dim * c.mlp_dim
  attention = 2 * c.num_heads * c.head_dim * length * (length + 1)  # causal QK^T and PV, per row
  full_layer = 2 * (q_out + kv + mlp) * length + attention
  # Last layer: keys/values of every token; queries, output, MLP and attention at the score token.
  last_layer = 2 * kv * length + 2 * (q_out + mlp) + 2 * 2 * c.num_heads * c.head_dim * length
  score = 2 * c.embed_dim * c.num_labels
  return float(rows * ((c.num_layers - 1) * full_layer + last_layer + score))


def attention_choices(spec: str, gpu: bool) -> list[str]:
  """`--attention`'s names; "auto": `GPU_ATTENTION` on a GPU, else the model's default."""
  if spec != "auto":
    return spec.split(",")
  if gpu:
    return list(GPU_ATTENTION)
  return [inspect.signature(decoder.DecoderRewardModel.__init__).parameters["attention"].default]


def init_state(config: decoder.DecoderConfig, dtype, mesh, rules):
  """Random parameters drawn by the model's own initializers inside jit, placed on `mesh`."""
  abstract = nnx.eval_shape(lambda: decoder.DecoderRewardModel(config, dtype=dtype,
                                                               rngs=nnx.Rngs(0)))
  abstract_state = nnx.state(abstract)
  plan = sharding.plan_memory(abstract_state, mesh, rules)
  print(plan.summary(), flush=True)
  shardings = sharding.param_shardings(abstract_state, mesh, rules)
  make = jax.jit(lambda: nnx.state(decoder.DecoderRewardModel(config, dtype=dtype,
                                                              rngs=nnx.Rngs(0))),
                 out_shardings=shardings)
  return jax.block_until_ready(make()), shardings, plan


def make_batch(config: decoder.DecoderConfig, rows: int, length: int, mesh):
  rng = np.random.default_rng(0)
  segment_ids = jnp.ones((rows, length), jnp.int32)
  batch = dict(
      tokens_bt=jnp.asarray(rng.integers(0, config.vocab_size, (rows, length)), jnp.int32),
      segment_ids_bt=segment_ids,
      positions_bt=decoder.positions_from_segments(segment_ids),
      score_index_bs=decoder.last_token_index(segment_ids, 1))
  return jax.device_put(batch, sharding.named_sharding(mesh, (sharding.BATCH, None)))


def run_one(config, state, state_shardings, mesh, attention, length, rows, steps):
  """Compile, warm up and time one (model, length, attention) combination."""
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: decoder.DecoderRewardModel(
      config, dtype=jax.tree.leaves(state)[0].dtype, attention=attention, rngs=nnx.Rngs(0))))
  batch = make_batch(config, rows, length, mesh)
  step = jax.jit(lambda state, batch: nnx.merge(graphdef, state)(**batch),
                 in_shardings=(state_shardings, sharding.named_sharding(mesh, (sharding.BATCH,
                                                                               None))))
  start = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    scores = jax.block_until_ready(compiled(state, batch))  # Warm-up.
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      jax.block_until_ready(compiled(state, batch))
      times.append(time.perf_counter() - start)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return dict(compile_s=round(compile_s, 2), step_s=statistics.median(times),
              xla_flops=float(cost["flops"]) if cost and "flops" in cost else None,
              scores_finite=bool(np.isfinite(np.asarray(scores, np.float32)).all()))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default="1b,8b", help=f"comma list of {sorted(MODELS)}")
  parser.add_argument("--layers", type=int, default=None,
                      help="override the layer count (per-layer shapes unchanged)")
  parser.add_argument("--lengths", default="2048,8192", help="comma list of sequence lengths")
  parser.add_argument("--tokens-per-batch", type=int, default=16384,
                      help="rows per step = max(1, this // length), rounded up to the data axis")
  parser.add_argument("--attention", default="auto",
                      help="comma list of attention implementations (erpjax_kernels.attention), "
                           f"or 'auto': {GPU_ATTENTION} on a GPU, the model's default elsewhere")
  parser.add_argument("--dtype", default="bfloat16", choices=DTYPES)
  parser.add_argument("--steps", type=int, default=5, help="timed steps per combination")
  parser.add_argument("--budget-s", type=float, default=360.0,
                      help="start no combination after this many seconds")
  parser.add_argument("--rules", default="tp", choices=sorted(sharding.RULE_TABLES),
                      help="parameter rule table over the (data, model) mesh of all devices")
  parser.add_argument("--model-parallel", type=int, default=1, help="devices on 'model'")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="the device's peak dense bf16 TFLOP/s (default: from the table)")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny model and lengths on whatever backend (CPU): checks the script")
  args = parser.parse_args(argv)
  start = time.perf_counter()

  backend = jax.default_backend()
  if backend != "gpu" and not args.smoke:
    print(f"no GPU: JAX's backend is {backend!r} ({jax.devices()[0].device_kind}); nothing to "
          "measure. Run on a machine with a CUDA jax, or pass --smoke for a CPU check.")
    print(json.dumps({"skipped": "no GPU", "backend": backend}))
    return 0

  if args.smoke:
    models = {"smoke": SMOKE_MODEL}
    lengths = [64]
    tokens_per_batch = 512
  else:
    models = {name: MODELS[name] for name in args.models.split(",")}
    lengths = [int(n) for n in args.lengths.split(",")]
    tokens_per_batch = args.tokens_per_batch
  if args.layers is not None:
    models = {name: dataclasses.replace(c, num_layers=args.layers) for name, c in models.items()}
  dtype = jnp.dtype(args.dtype)
  mesh = sharding.make_mesh(args.model_parallel)
  rules = sharding.RULE_TABLES[args.rules]
  device = jax.devices()[0]
  peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device.device_kind)
  attentions = attention_choices(args.attention, gpu=backend == "gpu")
  print(f"{len(jax.devices())} x {device.device_kind} ({backend}); peak "
        f"{peak / 1e12 if peak else '?'} TFLOP/s each; attention {attentions}", flush=True)

  results, skipped = [], []
  for model_name, config in models.items():
    todo = [(length, attention) for length in lengths for attention in attentions]
    if time.perf_counter() - start > args.budget_s:
      skipped += [f"{model_name}/{length}/{attention}" for length, attention in todo]
      continue
    init_start = time.perf_counter()
    state, state_shardings, plan = init_state(config, dtype, mesh, rules)
    init_s = time.perf_counter() - init_start
    for length, attention in todo:
      label = f"{model_name}/{length}/{attention}"
      if time.perf_counter() - start > args.budget_s:
        skipped.append(label)
        continue
      data = mesh.shape[sharding.DATA]
      rows = -(-max(1, tokens_per_batch // length) // data) * data
      row = dict(model=model_name, layers=config.num_layers, length=length, rows=rows,
                 attention=attention, param_bytes_per_device=plan.device_bytes,
                 init_s=round(init_s, 2))
      try:
        row.update(run_one(config, state, state_shardings, mesh, attention, length, rows,
                           args.steps))
      except Exception as error:  # An OOM or a kernel this GPU lacks must not end the run.
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        results.append(row)
        print(json.dumps(row), flush=True)
        continue
      flops = model_flops(config, length, rows)
      row.update(tokens_per_s=round(rows * length / row["step_s"], 1),
                 model_tflops_per_step=round(flops / 1e12, 3),
                 achieved_tflops=round(flops / row["step_s"] / 1e12 / mesh.size, 2),
                 mfu=round(flops / row["step_s"] / (peak * mesh.size), 4) if peak else None)
      results.append(row)
      print(json.dumps(row), flush=True)
    del state  # Frees the device memory before the next model's parameters.

  best = max((r for r in results if "mfu" in r and r["mfu"] is not None),
             key=lambda r: r["mfu"], default=None)
  print(json.dumps({
      "device": device.device_kind, "num_devices": mesh.size, "backend": backend,
      "dtype": args.dtype, "rules": args.rules, "smoke": args.smoke,
      "peak_tflops": peak / 1e12 if peak else None,
      "best_mfu": best["mfu"] if best else None,
      "best": f"{best['model']}/{best['length']}/{best['attention']}" if best else None,
      "results": results, "skipped": skipped,
      "seconds": round(time.perf_counter() - start, 1), "jax": jax.__version__}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
