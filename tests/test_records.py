"""ArrayRecord storage: round trips, per-shard reading, resumable iteration, refusals."""

import json

import numpy as np
import pytest

from erpjax.data import DataError, RewardSamples, RoutingDataset
from erpjax.data import _records as records


def _dataset() -> RoutingDataset:
  samples = RewardSamples.build(
      prompt_index=[0, 0, 1, 1, 1, 2],
      llm_index=[0, 1, 0, 0, 1, 1],
      reward=[0.5, 1.0, 0.0, 0.25, 1.0, 0.75],
      cost=[0.1, float("nan"), 0.2, 0.2, 0.3, 0.4],
      response=["a", "b", "c", "c2", "d", "e"],
  )
  return RoutingDataset(
      name="tiny", prompt_ids=("p0", "p1", "p2"), prompts=("one", "two", "three"),
      categories=("x", None, "y"), llms=("small", "large"), costs=np.array([0.1, 0.3]),
      reward_models=("reward",), samples=samples, notes=("a note",))


def test_arrays_round_trip_bit_exact():
  x = np.array([1.5, -0.0, np.inf], np.float32)
  y = np.array([[1, 2], [3, 4]], np.int64)
  ident, arrays = records.decode_arrays(records.encode_arrays("id-1", {"x": x, "y": y}))
  assert ident == "id-1"
  assert arrays["x"].tobytes() == x.tobytes() and arrays["y"].dtype == np.int64
  np.testing.assert_array_equal(arrays["y"], y)


def test_samples_round_trip(tmp_path):
  data = _dataset()
  records.write_samples(data, tmp_path / "s", num_shards=2)
  back = records.read_samples(tmp_path / "s")
  assert back.llms == data.llms and back.reward_models == data.reward_models
  assert back.notes == data.notes
  np.testing.assert_array_equal(back.costs, data.costs)
  # Shards interleave records, so compare sample sets keyed by (prompt, llm, response).
  def rows(d):
    s = d.samples
    return sorted((d.prompt_ids[p], d.prompts[p], d.categories[p] or "", d.llms[m], r,
                   -1.0 if np.isnan(c) else c, resp)
                  for p, m, r, c, resp in zip(s.prompt_index, s.llm_index, s.reward, s.cost,
                                              s.response))
  assert rows(back) == rows(data)


def test_feature_chunks_cover_every_record_once_across_shards(tmp_path):
  rng = np.random.default_rng(0)
  n, d, m = 103, 8, 3
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.normal(size=(n, m))
  ids = [f"p{i}" for i in range(n)]
  chunks = ((ids[i:i + 25], x[i:i + 25], y[i:i + 25]) for i in range(0, n, 25))
  folder = records.write_features(tmp_path / "f", chunks, llms=["a", "b", "c"], num_shards=3)
  assert json.loads((folder / records.MANIFEST).read_text())["meta"]["dim"] == d
  seen = {}
  for shard in range(2):
    for chunk in records.feature_chunks(folder, batch_size=10, shard_index=shard, shard_count=2):
      assert chunk.features.shape[1:] == (d,) and chunk.rewards.shape[1:] == (m,)
      for ident, xi, yi in zip(chunk.ids, chunk.features, chunk.rewards):
        assert ident not in seen
        seen[ident] = (xi, yi)
  assert sorted(seen) == sorted(ids)
  for k, ident in enumerate(ids):
    np.testing.assert_array_equal(seen[ident][0], x[k])
    np.testing.assert_array_equal(seen[ident][1], y[k])


def test_feature_iterator_resumes_from_its_state(tmp_path):
  x = np.arange(40, dtype=np.float32).reshape(20, 2)
  ids = [f"p{i}" for i in range(20)]
  folder = records.write_features(tmp_path / "f", [(ids, x, np.zeros((20, 1)))], llms=["a"])
  first = records.feature_chunks(folder, batch_size=4)
  next(first)
  state = first.get_state()
  expected = [c.ids for c in first]
  resumed = records.feature_chunks(folder, batch_size=4)
  resumed.set_state(state)
  assert [c.ids for c in resumed] == expected and len(expected) == 4


def test_writer_refuses_foreign_folder_and_keeps_it(tmp_path):
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("keep me")
  with pytest.raises(ValueError, match="erpjax did not write"):
    records.write_samples(_dataset(), foreign)
  assert (foreign / "notes.txt").read_text() == "keep me"


def test_failed_write_leaves_previous_records_intact(tmp_path):
  folder = records.write_samples(_dataset(), tmp_path / "s")
  with pytest.raises(ValueError, match="expected"):
    records.write_features(folder.parent / "f", [(["a"], np.zeros((1, 2)), np.zeros((1, 5)))],
                           llms=["x"])
  assert not (tmp_path / "f").exists()
  assert [p.name for p in tmp_path.iterdir()] == ["s"]
  assert records.read_samples(folder).num_prompts == 3


def test_missing_shard_is_named(tmp_path):
  folder = records.write_samples(_dataset(), tmp_path / "s", num_shards=2)
  victim = sorted(folder.glob("*.array_record"))[1]
  victim.unlink()
  with pytest.raises(DataError, match=victim.name):
    records.read_samples(folder)


def test_convert_command_writes_records_and_refuses_foreign_output(tmp_path, capsys):
  from erpjax import cli
  from erpjax.data import write_dataset

  source = write_dataset(_dataset(), tmp_path / "tiny")
  assert cli.main(["convert", str(source), "-o", str(tmp_path / "rec"), "--shards", "2"]) == 0
  back = records.read_samples(tmp_path / "rec")
  assert len(back.samples) == 6 and back.num_prompts == 3
  assert len(list((tmp_path / "rec").glob("*.array_record"))) == 2
  # Converting again replaces the records; converting into the dataset folder is refused.
  assert cli.main(["convert", str(source), "-o", str(tmp_path / "rec")]) == 0
  assert len(list((tmp_path / "rec").glob("*.array_record"))) == 1
  capsys.readouterr()
  assert cli.main(["convert", str(source), "-o", str(source)]) != 0
  assert "dataset output, not records output" in capsys.readouterr().err
  assert records.read_samples(tmp_path / "rec").num_prompts == 3
