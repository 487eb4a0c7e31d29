"""HF checkpoint loading (erpjax.models._hf): round trips, and errors that name the key."""

import json

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from erpjax.models import _hf, bert

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

TINY_HF = {"vocab_size": 128, "hidden_size": 32, "num_hidden_layers": 2,
           "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64}


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory):
  """A random transformers BertModel saved as one safetensors file and as 10 KB shards."""
  torch.manual_seed(0)
  model = transformers.BertModel(transformers.BertConfig(**TINY_HF)).eval()
  single = tmp_path_factory.mktemp("single")
  sharded = tmp_path_factory.mktemp("sharded")
  model.save_pretrained(single, safe_serialization=True)
  model.save_pretrained(sharded, safe_serialization=True, max_shard_size="10KB")
  tensors = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  return single, sharded, tensors


def _write(folder, tensors, config=None):
  folder.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(tensors, folder / "model.safetensors")
  (folder / "config.json").write_text(json.dumps(config or {"model_type": "bert", **TINY_HF}))
  return folder


def test_sharded_checkpoint_is_read_through_its_index(hf_tiny):
  single, sharded, tensors = hf_tiny
  assert (sharded / _hf.SAFETENSORS_INDEX).is_file()
  ckpt = _hf.SafetensorsCheckpoint(sharded)
  assert len(ckpt.files) > 1
  assert sorted(ckpt) == sorted(_hf.SafetensorsCheckpoint(single)) == sorted(tensors)
  for key, value in tensors.items():
    np.testing.assert_array_equal(ckpt[key], value)


def test_load_places_every_tensor_where_the_key_map_says(hf_tiny):
  single, sharded, tensors = hf_tiny
  for folder in (single, sharded):
    model = bert.load_bert(folder)
    layers = model.layers
    for i in range(2):
      p = f"encoder.layer.{i}."
      for name in ("query", "key", "value"):
        w = tensors[p + f"attention.self.{name}.weight"]  # [out, in] = [N*H, D]
        np.testing.assert_array_equal(getattr(layers.attention, f"{name}_kernel")[...][i],
                                      w.T.reshape(32, 4, 8))
        np.testing.assert_array_equal(getattr(layers.attention, f"{name}_bias")[...][i],
                                      tensors[p + f"attention.self.{name}.bias"].reshape(4, 8))
      out = tensors[p + "attention.output.dense.weight"]
      np.testing.assert_array_equal(layers.attention.out_kernel[...][i], out.T.reshape(4, 8, 32))
      np.testing.assert_array_equal(layers.ffn.in_kernel[...][i],
                                    tensors[p + "intermediate.dense.weight"].T)
      np.testing.assert_array_equal(layers.ffn_norm.scale[...][i],
                                    tensors[p + "output.LayerNorm.weight"])
    np.testing.assert_array_equal(model.embeddings.word[...],
                                  tensors["embeddings.word_embeddings.weight"])


def test_export_inverts_load(hf_tiny):
  single, _, tensors = hf_tiny
  exported = _hf.export_state(bert.load_bert(single), bert.HF_KEY_MAP)
  # The pooler is the one family of tensors deliberately not loaded.
  expected = {k: v for k, v in tensors.items() if not k.startswith("pooler.")}
  assert sorted(exported) == sorted(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


@pytest.mark.parametrize("max_shard_bytes", [None, 20_000])
def test_save_then_load_round_trip_and_transformers_reads_it(tmp_path, max_shard_bytes):
  model = bert.BertModel(bert.TINY, rngs=nnx.Rngs(3))
  bert.save_bert(model, tmp_path, max_shard_bytes=max_shard_bytes)
  assert (tmp_path / _hf.SAFETENSORS_INDEX).is_file() == (max_shard_bytes is not None)
  loaded = bert.load_bert(tmp_path)
  for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(model)),
                               nnx.to_flat_state(nnx.state(loaded)), strict=True):
    np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(path))
  # transformers loads the same folder (its pooler stays randomly initialized).
  theirs = transformers.BertModel.from_pretrained(tmp_path).state_dict()
  for key, value in _hf.export_state(model, bert.HF_KEY_MAP).items():
    np.testing.assert_array_equal(theirs[key].numpy(), value, err_msg=key)


def test_prefix_is_stripped_and_ignored_keys_are_skipped(tmp_path, hf_tiny):
  _, _, tensors = hf_tiny
  prefixed = {"bert." + k: v for k, v in tensors.items()}
  prefixed["cls.predictions.bias"] = np.zeros(128, np.float32)
  folder = _write(tmp_path / "mlm", prefixed)
  with pytest.raises(_hf.CheckpointError, match=r"'cls\.predictions\.bias' matches no rule"):
    bert.load_bert(folder)
  key_map = bert.HF_KEY_MAP
  key_map = _hf.KeyMap(key_map.rules, key_map.ignore + (r"cls\..*",), key_map.prefixes)
  model = bert.load_bert(folder, key_map=key_map)
  np.testing.assert_array_equal(model.embeddings.position[...],
                                tensors["embeddings.position_embeddings.weight"])


def test_buffers_are_ignored_only_when_listed(tmp_path, hf_tiny):
  _, _, tensors = hf_tiny
  with_buffer = dict(tensors, **{"embeddings.position_ids": np.arange(64)[None]})
  folder = _write(tmp_path / "buffer", with_buffer)
  bert.load_bert(folder)  # all-MiniLM-L6-v2 ships this buffer
  strict = _hf.KeyMap(bert.HF_KEY_MAP.rules, ignore=(), prefixes=())
  with pytest.raises(_hf.CheckpointError, match=r"'embeddings\.position_ids'"):
    bert.load_bert(folder, key_map=strict)


def test_errors_name_the_key_or_parameter(tmp_path, hf_tiny):
  _, _, tensors = hf_tiny
  missing = dict(tensors)
  del missing["encoder.layer.1.attention.self.key.weight"]
  with pytest.raises(_hf.CheckpointError,
                     match=r"'layers/attention/key_kernel' slices \[\[1\]\] are not assigned"):
    bert.load_bert(_write(tmp_path / "missing", missing))

  no_norm = {k: v for k, v in tensors.items() if not k.startswith("embeddings.LayerNorm.")}
  with pytest.raises(_hf.CheckpointError, match=r"'embeddings/norm/bias' is not assigned"):
    bert.load_bert(_write(tmp_path / "no_norm", no_norm))

  wrong = dict(tensors, **{"encoder.layer.0.intermediate.dense.weight": np.zeros((64, 31))})
  with pytest.raises(_hf.CheckpointError, match=r"'encoder\.layer\.0\.intermediate\.dense\.weight"
                     r"' has shape \(64, 31\).*needs \(64, 32\)"):
    bert.load_bert(_write(tmp_path / "wrong", wrong))

  too_deep = dict(tensors, **{"encoder.layer.2.output.dense.bias": np.zeros(32, np.float32)})
  with pytest.raises(_hf.CheckpointError, match=r"'encoder\.layer\.2\.output\.dense\.bias' maps "
                     r"to layers/ffn/out_bias\[2\], outside"):
    bert.load_bert(_write(tmp_path / "deep", too_deep))


def test_rules_that_overlap_or_assign_twice_are_refused(tmp_path):
  class Pair(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.zeros((2, 3)))

  ckpt = {"a.0": np.ones(3, np.float32), "a.1": np.ones(3, np.float32),
          "b.1": np.ones(3, np.float32)}
  abstract = nnx.eval_shape(Pair)
  twice = _hf.KeyMap((_hf.KeyRule("a.{i}", "w", ("{i}",)), _hf.KeyRule("b.{i}", "w", ("{i}",))))
  with pytest.raises(_hf.CheckpointError, match=r"'b\.1' assigns w\[1\] a second time"):
    _hf.load_state(abstract, ckpt, twice)
  overlap = _hf.KeyMap((_hf.KeyRule("a.{i}", "w", ("{i}",)), _hf.KeyRule("a.{j}", "w", ("{j}",))))
  with pytest.raises(_hf.CheckpointError, match="matches several rules"):
    _hf.load_state(abstract, {"a.0": ckpt["a.0"]}, overlap)
  with pytest.raises(ValueError, match="placeholders"):
    _hf.KeyRule("a.{i}", "w")
  # Two-level indices: w[i, 0] from "a.{i}", w[i, 1] from "b.{i}"; b.0 is missing.
  class Grid(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.zeros((2, 2, 3)))

  grid = _hf.KeyMap((_hf.KeyRule("a.{i}", "w", ("{i}", 0)), _hf.KeyRule("b.{i}", "w", ("{i}", 1))))
  with pytest.raises(_hf.CheckpointError, match=r"'w' slices \[\[0, 1\]\] are not assigned"):
    _hf.load_state(nnx.eval_shape(Grid), ckpt, grid)
  full = dict(ckpt, **{"b.0": np.full(3, 2.0, np.float32)})
  loaded = _hf.load_state(nnx.eval_shape(Grid), full, grid)
  np.testing.assert_array_equal(loaded.w[...][0], [[1, 1, 1], [2, 2, 2]])
  assert sorted(_hf.export_state(loaded, grid)) == sorted(full)


def test_layer_lists_bf16_casting_and_export_of_a_generic_module():
  """A non-BERT module: a list of layers addressed by path ("{layer}" in the NNX path)."""

  class Stack(nnx.Module):
    def __init__(self, rngs):
      self.blocks = nnx.List([nnx.Linear(3, 4, rngs=rngs) for _ in range(2)])

  key_map = _hf.KeyMap((
      _hf.KeyRule("h.{layer}.fc.weight", "blocks/{layer}/kernel", transform=_hf.linear()),
      _hf.KeyRule("h.{layer}.fc.bias", "blocks/{layer}/bias")))
  rng = np.random.default_rng(0)
  ckpt = {f"h.{i}.fc.weight": rng.standard_normal((4, 3)).astype(ml_dtypes.bfloat16)
          for i in range(2)}
  ckpt |= {f"h.{i}.fc.bias": rng.standard_normal(4).astype(np.float32) for i in range(2)}
  model = _hf.load_state(nnx.eval_shape(lambda: Stack(nnx.Rngs(0))), ckpt, key_map)
  assert model.blocks[1].kernel[...].dtype == jnp.float32
  np.testing.assert_array_equal(model.blocks[1].kernel[...],
                                ckpt["h.1.fc.weight"].astype(np.float32).T)
  exported = _hf.export_state(model, key_map)
  assert sorted(exported) == sorted(ckpt)
  np.testing.assert_array_equal(exported["h.0.fc.weight"],
                                ckpt["h.0.fc.weight"].astype(np.float32))


def test_missing_shard_and_missing_files_are_reported(tmp_path, hf_tiny):
  _, sharded, _ = hf_tiny
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / _hf.SAFETENSORS_INDEX).write_text((sharded / _hf.SAFETENSORS_INDEX).read_text())
  with pytest.raises(FileNotFoundError, match="shard .* is missing"):
    _hf.SafetensorsCheckpoint(broken)
  with pytest.raises(FileNotFoundError, match="no model.safetensors"):
    _hf.SafetensorsCheckpoint(tmp_path)
  with pytest.raises(FileNotFoundError, match="no Hugging Face config"):
    _hf.read_config(tmp_path)


def test_transforms_know_the_checkpoint_shape():
  assert _hf.linear().hf_shape((32, 4, 8)) == (32, 32)
  assert _hf.linear(in_ndim=2).hf_shape((4, 8, 32)) == (32, 32)
  assert _hf.reshape().hf_shape((4, 8)) == (32,)
  x = np.arange(6.0).reshape(3, 2)
  np.testing.assert_array_equal(_hf.linear().to_hf(_hf.linear().to_nnx(x, (2, 3))), x)
