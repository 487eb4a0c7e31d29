"""Bad input, as a new user would give it: every case ends in one message naming what is wrong
(exit status 2, no traceback), and nothing written earlier is lost or changed.

The CLI runs in-process (`erpjax.cli.main`), so most cases take milliseconds: each is refused
before the encoder or a model loads. Subprocesses only where a process must be killed.
"""

import gc
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml

from erpjax import cli, files
from erpjax.config import ConfigError, RunConfig
from erpjax.data import read_prompts

REPO = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE_DATA = REPO / "docs" / "examples" / "folder_data"


def _cli(capsys, *argv) -> tuple[int, str, str]:
  """(exit status, stdout, stderr) of `erpjax argv...`."""
  capsys.readouterr()  # drop what earlier steps printed
  code = cli.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def _refused(capsys, *argv) -> str:
  """stderr of a command that must fail with one message and no traceback."""
  code, _, err = _cli(capsys, *argv)
  assert code == 2, err
  assert "Traceback" not in err
  assert err.startswith(f"erpjax {argv[0] if argv[0] != '-v' else argv[1]}: error: ")
  return err


def _config(tmp_path, **sections) -> pathlib.Path:
  raw = {"data": {"source": "synthetic", "options": {"num_train": 30, "num_test": 10}},
         "output_dir": str(tmp_path / "run"), **sections}
  path = tmp_path / "config.yaml"
  path.write_text(yaml.safe_dump(raw))
  return path


def _user_folder(tmp_path) -> pathlib.Path:
  folder = tmp_path / "docs"
  folder.mkdir()
  (folder / "thesis.txt").write_text("years of work")
  return folder


def _assert_untouched(folder: pathlib.Path) -> None:
  assert sorted(os.listdir(folder)) == ["thesis.txt"]
  assert (folder / "thesis.txt").read_text() == "years of work"


# Never destroy what erpjax did not write.


def test_fit_refuses_a_router_folder_of_user_files(tmp_path, capsys):
  docs = _user_folder(tmp_path)
  err = _refused(capsys, "fit", _config(tmp_path), "--router", docs)
  assert f"{docs}: exists and holds files erpjax did not write (thesis.txt)" in err
  _assert_untouched(docs)
  assert not (tmp_path / "run").exists()  # refused before anything was written


def test_run_refuses_an_output_folder_of_user_files_before_the_work(tmp_path, capsys):
  docs = _user_folder(tmp_path)
  err = _refused(capsys, "run", _config(tmp_path, output_dir=str(docs)))
  assert f"{docs}: exists and holds files erpjax did not write" in err
  _assert_untouched(docs)
  (tmp_path / "a_file").write_text("x")
  err = _refused(capsys, "run", _config(tmp_path, output_dir=str(tmp_path / "a_file")))
  assert "a_file: exists and is a file" in err


def test_output_of_another_kind_is_not_replaced(tmp_path):
  run = files.claim_output_dir(tmp_path / "run", "run")
  with pytest.raises(files.OutputPathError, match="holds erpjax run output, not router output"):
    files.write_dir_atomically(run, "router", lambda tmp: tmp.mkdir())
  assert os.listdir(run) == [files.MARKER]


def test_a_folder_write_replaces_erpjax_output_in_one_step_with_umask_modes(tmp_path):
  def write(content):
    def _write(tmp):
      tmp.mkdir()
      (tmp / "weights").write_text(content)
    return _write

  old_mask = os.umask(0o027)
  try:
    path = files.write_dir_atomically(tmp_path / "router", "router", write("old"))
    files.write_dir_atomically(path, "router", write("new"))
    files.atomic_write_text(tmp_path / "note.txt", "x")
  finally:
    os.umask(old_mask)
  assert (path / "weights").read_text() == "new"
  assert sorted(os.listdir(tmp_path)) == ["note.txt", "router"]  # no staging folder left
  # tempfile makes 0600 files and 0700 folders; outputs get what open/mkdir would give.
  assert (path / "weights").stat().st_mode & 0o777 == 0o640
  assert path.stat().st_mode & 0o777 == 0o750
  assert (tmp_path / "note.txt").stat().st_mode & 0o777 == 0o640


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from erpjax.files import write_dir_atomically

    def write(tmp):
      tmp.mkdir()
      (tmp / "weights").write_text("new, half written")
      print("writing", flush=True)
      time.sleep(60)

    write_dir_atomically(sys.argv[1], "router", write)
""")


def test_a_folder_write_killed_midway_leaves_the_old_output(tmp_path):
  def write_old(tmp):
    tmp.mkdir()
    (tmp / "weights").write_text("old")

  path = files.write_dir_atomically(tmp_path / "router", "router", write_old)
  worker = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path)],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert worker.stdout.readline().strip() == "writing"
    worker.send_signal(signal.SIGKILL)
  finally:
    worker.wait(timeout=60)
  assert worker.returncode == -signal.SIGKILL
  assert (path / "weights").read_text() == "old"
  # The killed write's staging folder is hidden beside it; the next write goes through.
  files.write_dir_atomically(path, "router", write_old)
  assert (path / "weights").read_text() == "old"


# Typed configs.


def test_wrong_types_are_all_reported_with_their_dotted_paths(tmp_path, capsys):
  config = _config(
      tmp_path,
      data={"source": "synthetic", "options": {"num_trian": 30}},
      predictor={"beta": "one", "standardize": "no"},
      encoder={"max_length": 25.5},
      routing={"num_cost_weights": "50", "budget": "1e-3"},
  )
  err = _refused(capsys, "run", config)
  assert f"{config}: 6 problems:" in err
  for line in [
      "data.options: unknown key(s) ['num_trian']",
      "predictor.beta: expected float, got str 'one'",
      "predictor.standardize: expected bool, got str 'no'",  # was read as True
      "encoder.max_length: expected int, got float 25.5",
      "routing.num_cost_weights: expected int, got str '50' (a quoted number: remove the quotes)",
      "routing.budget: expected float, got str '1e-3' (YAML reads a number without a dot",
  ]:
    assert line in err
  assert not (tmp_path / "run").exists()


def test_real_booleans_and_ints_as_floats_are_accepted():
  config = RunConfig.from_dict({"data": {"source": "synthetic"},
                                "predictor": {"standardize": False}, "routing": {"budget": 1}})
  assert config.predictor.standardize is False and config.routing.budget == 1.0
  with pytest.raises(ConfigError, match=r"predictor.standardize: expected bool, got int 0"):
    RunConfig.from_dict({"data": {"source": "synthetic"}, "predictor": {"standardize": 0}})


def test_yaml_syntax_error_is_one_message_with_line_and_column(tmp_path, capsys):
  path = tmp_path / "config.yaml"
  path.write_text("data:\n  source: synthetic\n  options: {num_train: 10\nrouting:\n  budget: 1\n")
  err = _refused(capsys, "run", path)
  assert f"{path}: line 4, column 8: YAML syntax error: expected ',' or '}}'" in err
  assert "flow mapping that starts at line 3, column 12" in err
  assert err.count("\n") == 1


def test_verbose_works_with_every_subcommand_and_shows_the_traceback(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:  # was AttributeError: no attribute 'func'
    cli.main(["-v", "train-rm", "--help"])
  assert exit_info.value.code == 0
  assert "usage:" in capsys.readouterr().out
  path = tmp_path / "missing.yaml"
  for argv in (["-v", "run", path], ["run", path, "-v"]):
    code, _, err = _cli(capsys, *argv)
    assert code == 2 and "Traceback" in err
    assert f"erpjax run: error: {path}: No such file or directory" in err


# Prompts: .txt ids are line numbers, blank lines and empty files refused, decoding errors located.


def test_txt_prompts_keep_their_line_numbers_and_refuse_blank_lines(tmp_path, capsys):
  good = tmp_path / "good.txt"
  good.write_text("first\nsecond\n\n\n")  # blank lines at the very end are ignored
  assert read_prompts(good) == (["line-1", "line-2"], ["first", "second"])
  bad = tmp_path / "prompts.txt"
  bad.write_text("first\nsecond\n\nfourth\n")  # was: "fourth" silently became line-3
  out = tmp_path / "out.parquet"
  err = _refused(capsys, "embed", bad, "-o", out)
  assert f"{bad}, row 3: blank line" in err
  assert not out.exists()


@pytest.mark.parametrize("name, content", [("empty.txt", ""), ("empty.jsonl", "\n"),
                                           ("blank.txt", "\n \n")])
def test_an_empty_prompts_file_is_an_error(tmp_path, capsys, name, content):
  path = tmp_path / name
  path.write_text(content)
  # Was: exit 0 with numpy warnings and "mean cost nan". Refused before the router is read.
  err = _refused(capsys, "route", path, "--router", tmp_path / "no_router", "-o",
                 tmp_path / "out.parquet")
  assert f"{path}: no prompts in it" in err


@pytest.mark.parametrize("name, content, row", [
    ("prompts.txt", b"fine\ncaf\xe9 latte\n", 2),
    ("prompts.jsonl", b'{"prompt_id": "a", "text": "ok"}\n{"prompt_id": "b", "text": "\xff"}\n', 2),
])
def test_non_utf8_input_names_file_and_row(tmp_path, capsys, name, content, row):
  path = tmp_path / name
  path.write_bytes(content)
  err = _refused(capsys, "embed", path, "-o", tmp_path / "out.parquet")
  assert f"{path}, row {row}: not UTF-8 text: byte 0x" in err


def test_an_unwritable_output_is_refused_before_the_work(tmp_path, capsys):
  (tmp_path / "a_file").write_text("x")
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("hello\n")
  err = _refused(capsys, "embed", prompts, "-o", tmp_path / "a_file" / "out.parquet")
  assert "a_file is a file" in err
  err = _refused(capsys, "embed", prompts, "-o", tmp_path)
  assert f"{tmp_path}: is a folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused_before_the_work(tmp_path, capsys):
  out = tmp_path / "read_only"
  out.mkdir()
  out.chmod(0o500)
  try:
    err = _refused(capsys, "run", _config(tmp_path, output_dir=str(out)))
    assert f"{out}: no permission to write in it" in err
  finally:
    out.chmod(0o700)


# Own data (data.source: folder) and the dataset classes of bad input.


def _folder_data(tmp_path) -> pathlib.Path:
  root = tmp_path / "data"
  shutil.copytree(EXAMPLE_DATA, root)
  return root


def _folder_config(tmp_path, root, **options) -> pathlib.Path:
  return _config(tmp_path, data={"source": "folder", "root": str(root), "options": options})


def _rewrite_jsonl(path: pathlib.Path, edit) -> None:
  records = [json.loads(line) for line in path.read_text().splitlines()]
  path.write_text("".join(json.dumps(r) + "\n" for r in edit(records)))


def test_the_folder_example_config_loads_and_reports_its_overlap():
  from erpjax import pipeline

  config = RunConfig.from_yaml(REPO / "configs" / "folder_example.yaml")
  assert config.data.root == "docs/examples/folder_data" and config.data.options == {"dedupe": True}
  config = RunConfig.from_dict({"data": {**json.loads(json.dumps(config.data.__dict__)),
                                         "root": str(EXAMPLE_DATA)}})
  train, tests = pipeline.load_splits(config.data)
  (test,) = tests.values() if isinstance(tests, dict) else (tests,)
  assert train.num_prompts == 30 and test.num_prompts == 9
  assert "1 of 10 test prompts also occur in train" in test.notes[0]


@pytest.mark.parametrize("edit, message", [
    (lambda root: shutil.rmtree(root / "test"), "test split folder 'test' is missing"),
    (lambda root: _rewrite_jsonl(root / "train" / "samples.jsonl",
                                 lambda rs: [r for r in rs if r["llm"] != "large-llm"]),
     "LLM(s) ['large-llm'] have no samples in the train split"),  # was "test: unknown LLM(s)"
    (lambda root: _rewrite_jsonl(root / "train" / "samples.jsonl",
                                 lambda rs: [{k: v for k, v in r.items() if k != "reward"}
                                             for r in rs]),
     "samples.jsonl, row 1, field 'reward': missing required field"),
    (lambda root: _rewrite_jsonl(root / "train" / "samples.jsonl",
                                 lambda rs: rs[:4] + [{**rs[4], "reward": "NaN"}] + rs[5:]),
     "samples.jsonl, row 5, field 'reward': expected a number, found str"),
    (lambda root: (root / "train" / "samples.jsonl").write_text(
        (root / "train" / "samples.jsonl").read_text().replace('"reward": 1.0', '"reward": NaN')),
     "field 'reward': reward is nan (must be finite)"),
    (lambda root: _rewrite_jsonl(root / "test" / "prompts.jsonl",
                                 lambda rs: rs + [{**rs[0], "text": "another"}]),
     "prompts.jsonl, row 11, field 'prompt_id': duplicate prompt_id 'p100' (first at row 1)"),
    (lambda root: (root / "train" / "prompts.jsonl").write_text(""),
     "prompt_id 'p000' is not declared in prompts.jsonl"),
])
def test_bad_folder_data_is_named_by_file_row_and_field(tmp_path, capsys, edit, message):
  root = _folder_data(tmp_path)
  edit(root)
  err = _refused(capsys, "run", _folder_config(tmp_path, root))
  assert message in err


def test_extra_columns_are_ignored_and_unknown_options_refused_at_once(tmp_path, capsys):
  root = _folder_data(tmp_path)
  _rewrite_jsonl(root / "train" / "prompts.jsonl", lambda rs: [{**r, "source": "web"} for r in rs])
  from erpjax.data import load_folder

  train, _ = load_folder(root)  # docs/data_format.md: extra columns and keys are ignored
  assert train.num_prompts == 30
  err = _refused(capsys, "run", _folder_config(tmp_path, root, dedup=True, prefix="strip"))
  assert "data.options: unknown key(s) ['dedup', 'prefix']; known: ['dedupe']" in err


# Scores follow the reward model's weights, not its path.


@pytest.fixture
def tiny_reward_model(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from erpjax.encode import default_model_dir

  folder = tmp_path / "rm"
  config = transformers.BertConfig(
      vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
      intermediate_size=32, max_position_embeddings=128, num_labels=1,
      architectures=["BertForSequenceClassification"])

  def save(seed: int) -> None:
    torch.manual_seed(seed)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)

  save(0)
  transformers.AutoTokenizer.from_pretrained(default_model_dir()).save_pretrained(folder)
  return folder, save


def test_a_retrained_reward_model_is_not_mixed_with_old_scores(tmp_path, capsys,
                                                                tiny_reward_model):
  from erpjax.data import RewardSamples, RoutingDataset, read_dataset, write_dataset

  folder, save = tiny_reward_model
  n = 4
  prompt_index, llm_index = np.repeat(np.arange(n), 2), np.tile([0, 1], n)
  write_dataset(RoutingDataset(
      name="d", prompt_ids=tuple(f"p{i}" for i in range(n)),
      prompts=tuple(f"question {i}" for i in range(n)), categories=(None,) * n,
      llms=("a", "b"), costs=np.array([1.0, 2.0]), reward_models=("r",),
      samples=RewardSamples.build(prompt_index, llm_index, np.zeros(2 * n),
                                  response=[f"answer {k}" for k in range(2 * n)])), tmp_path / "in")
  argv = ["score", tmp_path / "in", "--model", folder, "--max-length", "128",
          "-o", tmp_path / "out"]
  assert _cli(capsys, *argv)[0] == 0
  before = read_dataset(tmp_path / "out").samples.reward.copy()
  save(1)  # retrained: other weights at the same path (was: every old score reused)
  err = _refused(capsys, *argv)
  assert f"{tmp_path / 'out.scores'} holds scores of another" in err
  assert "the reward model's checkpoint files have changed since" in err
  np.testing.assert_array_equal(read_dataset(tmp_path / "out").samples.reward, before)
  # A fresh score folder scores the new weights.
  assert _cli(capsys, *argv, "--scores", tmp_path / "new_scores")[0] == 0
  assert not np.array_equal(read_dataset(tmp_path / "out").samples.reward, before)


def test_score_refuses_an_output_folder_of_user_files_before_loading(tmp_path, capsys):
  docs = _user_folder(tmp_path)
  (tmp_path / "in").mkdir()
  err = _refused(capsys, "score", EXAMPLE_DATA / "train", "--model", tmp_path / "no_model",
                 "-o", docs)
  assert f"{docs}: exists and holds files erpjax did not write" in err
  _assert_untouched(docs)


# Router checkpoints through `erpjax route` (the checks themselves: erpjax.routing, H5's tests).


@pytest.fixture(scope="module")
def encoder():
  from erpjax import pipeline
  from erpjax.config import EncoderConfig

  return pipeline.load_encoder(EncoderConfig())


def _router(encoder_identifier: str, seed: int = 0):
  from erpjax.routing import fit_router

  rng = np.random.default_rng(seed)
  return fit_router(rng.standard_normal((40, 384)).astype(np.float32), rng.random((40, 3)),
                    np.array([1.0, 2.0, 3.0]), llms=("a", "b", "c"), encoder=encoder_identifier,
                    reward_model="r")


def _largest_file(folder: pathlib.Path) -> pathlib.Path:
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage, message", [
    ("flip", "corrupted router checkpoint: ['kernel: checksum differs (corrupted bytes)']"),
    # (orbax's abandoned read coroutine: filtered in pyproject.toml.)
    ("truncate", "router arrays cannot be read (damaged or does not match its metadata)"),
    ("other_encoder", "router was fit on embeddings of encoder 'another-encoder'"),
])
def test_a_damaged_or_foreign_router_is_refused_by_route(tmp_path, capsys, encoder, damage,
                                                         message):
  from erpjax.routing import save_router

  identifier = "another-encoder" if damage == "other_encoder" else encoder.identifier
  router = save_router(_router(identifier), tmp_path / "router")
  weights = _largest_file(router)
  data = bytearray(weights.read_bytes())
  if damage == "flip":  # was: loaded and routed with predicted rewards ~1e20 and -inf
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
  elif damage == "truncate":  # was: an orbax/tensorstore traceback
    weights.write_bytes(bytes(data[: len(data) // 2]))
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("hello\nworld\n")
  out = tmp_path / "routed.parquet"
  err = _refused(capsys, "route", prompts, "--router", router, "-o", out)
  gc.collect()  # orbax's abandoned read (truncate) is reported now, not in a later test
  assert str(router) in err and message in err
  assert len(err.strip().splitlines()) == 1  # not pages of TensorStore's specs
  assert not out.exists()


_KILLED_ROUTER_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from erpjax.routing import fit_router, save_router

    rng = np.random.default_rng(1)
    router = fit_router(rng.standard_normal((40, 8)).astype(np.float32), rng.random((40, 3)),
                        np.array([1.0, 2.0, 3.0]), llms=("a", "b", "c"), encoder="e",
                        reward_model="r")
    print("saving", flush=True)
    while True:  # killed at some point of some save
      save_router(router, sys.argv[1])
""")


def test_fit_killed_while_writing_the_router_leaves_a_router(tmp_path):
  from erpjax.routing import fit_router, load_router, save_router

  rng = np.random.default_rng(0)
  old = fit_router(rng.standard_normal((40, 8)).astype(np.float32), rng.random((40, 3)),
                   np.array([1.0, 2.0, 3.0]), llms=("a", "b", "c"), encoder="e", reward_model="r")
  path = save_router(old, tmp_path / "router")
  worker = subprocess.Popen([sys.executable, "-c", _KILLED_ROUTER_WRITER, str(path)],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert worker.stdout.readline().strip() == "saving"
    time.sleep(3.0)  # several saves in, one under way
    worker.send_signal(signal.SIGKILL)
  finally:
    worker.wait(timeout=60)
  assert worker.returncode == -signal.SIGKILL
  # The old router or the new one, whole (load_router verifies every array's checksum).
  x = np.ones((2, 8), np.float32)
  loaded = load_router(path, expect_encoder="e")
  assert np.isfinite(np.asarray(loaded.predict(x))).all()


def test_embed_reports_how_many_prompts_the_encoder_truncated(tmp_path, capsys, monkeypatch,
                                                              caplog):
  monkeypatch.setenv("ERPJAX_CACHE", str(tmp_path / "cache"))
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("short\n" + "a much longer prompt than eight tokens can hold, surely\n")
  code, _, _ = _cli(capsys, "embed", prompts, "-o", tmp_path / "e.parquet", "--max-length", 8)
  assert code == 0  # was: truncated with no note
  assert "1 of 2 prompts are longer than the encoder's 8 tokens and were truncated" in caplog.text


def test_an_unusable_embedding_cache_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
  (tmp_path / "not_a_folder").write_text("x")
  monkeypatch.setenv("ERPJAX_CACHE", str(tmp_path / "not_a_folder"))
  err = _refused(capsys, "run", _config(tmp_path))
  assert "the embedding cache is not writable" in err and "ERPJAX_CACHE" in err
  assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs")
def test_an_output_folder_that_cannot_be_created_is_refused_before_the_work(tmp_path, capsys):
  # sysfs refuses new folders even to root: a stand-in for a read-only file system.
  err = _refused(capsys, "run", _config(tmp_path, output_dir="/sys/kernel/erpjax_run"))
  assert "/sys/kernel/erpjax_run: cannot write there (Operation not permitted)" in err


def test_train_rm_errors_are_messages_too(tmp_path, capsys):
  config = tmp_path / "train_rm.yaml"
  config.write_text("epochs: two\nlearning_rat: 0.001\n")
  err = _refused(capsys, "train-rm", "--config", config)
  assert f"{config}: 2 problems:" in err
  assert "unknown key(s) ['learning_rat']" in err and "epochs: expected int, got str 'two'" in err


def test_a_missing_model_folder_is_refused_before_the_work(tmp_path, capsys):
  # The encoder loads after the data and after all scoring: a typo must not cost that work.
  err = _refused(capsys, "run", _config(tmp_path, encoder={"path": str(tmp_path / "no_encoder")}))
  assert f"{tmp_path / 'no_encoder'}: encoder.path not found" in err
  err = _refused(capsys, "run", _config(tmp_path, rewards={"model": str(tmp_path / "no_rm")}))
  assert f"{tmp_path / 'no_rm'}: rewards.model not found" in err
  assert not (tmp_path / "run").exists()
