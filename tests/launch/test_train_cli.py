"""The train and sample commands as a user runs them: files written, resume, and one-line errors."""

import glob
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import checkpoints
from tests.conftest import error_lines, run_module

SMALL = ["--config=launch/configs/dcgan.py:cpu", "--config.model.g_width=8", "--config.model.d_width=8",
         "--config.batch_size=16", "--config.log_every=5", "--config.sample_every=10",
         "--config.checkpoint_every=10", "--config.sample_grid=16", "--config.histogram_every=0"]


def _event_steps(workdir, tag):
  steps = []
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      steps += [event.step for v in event.summary.value if v.tag == tag]
  return sorted(steps)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 20-step run, then the same command with steps=30 (a resume)."""
  workdir = str(tmp_path_factory.mktemp("cli") / "run")
  first = run_module("launch.train", *SMALL, f"--workdir={workdir}", "--config.steps=20")
  assert first.returncode == 0, first.stderr[-3000:]
  saved = {name: tf.train.load_variable(checkpoints.latest(workdir), name)
           for name, _ in tf.train.list_variables(checkpoints.latest(workdir)) if name.startswith("model/")}
  events_after_first = _event_steps(workdir, "D/loss")
  second = run_module("launch.train", *SMALL, f"--workdir={workdir}", "--config.steps=30")
  assert second.returncode == 0, second.stderr[-3000:]
  return workdir, first, second, saved, events_after_first


def test_a_run_writes_checkpoints_events_samples_and_config(trained):
  workdir, first, _, _, events_after_first = trained
  assert "step 20/20" in first.stdout
  assert os.path.exists(os.path.join(workdir, "config.json"))
  assert os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-10.index"))
  assert os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-20.index"))
  assert events_after_first == [5, 10, 15, 20]
  grid = np.asarray(Image.open(os.path.join(workdir, "samples", "ema_0000020.png")))
  assert grid.shape[:2] == (4 * 33 + 1, 4 * 33 + 1)  # 16 images of 32x32 with 1-pixel borders
  assert os.path.exists(os.path.join(workdir, "samples", "reals.png"))


def test_rerunning_resumes_where_the_run_stopped(trained):
  workdir, _, second, saved, _ = trained
  assert "resuming at step 20" in second.stdout
  assert "step 30/30" in second.stdout and "step 5/30" not in second.stdout
  assert checkpoints.saved_step(checkpoints.latest(workdir)) == 30
  assert _event_steps(workdir, "D/loss") == [5, 10, 15, 20, 25, 30]  # no restart in the curves


def _small_config(**changes):
  """SMALL as a config for ``loop.train`` in this process."""
  from launch.configs import common, dcgan  # pylint: disable=g-import-not-at-top
  values = {"model.g_width": 8, "model.d_width": 8, "batch_size": 16, "log_every": 5, "sample_every": 10,
            "checkpoint_every": 10, "sample_grid": 16, "histogram_every": 0, **changes}
  return common.apply(dcgan.get_config("cpu"), values)


def test_a_finished_run_exits_at_once(trained, capsys):
  from launch import loop  # pylint: disable=g-import-not-at-top
  workdir = trained[0]
  assert loop.train(_small_config(steps=30), workdir) == {}
  assert "already reached step 30" in capsys.readouterr().out


def test_sample_writes_a_grid_and_raw_samples(trained, tmp_path):
  workdir = trained[0]
  png = str(tmp_path / "grid.png")
  npz = str(tmp_path / "samples.npz")
  result = run_module("launch.sample", f"--workdir={workdir}", "--num=10", f"--out={png}", "--batch_size=4")
  assert result.returncode == 0, result.stderr[-2000:]
  assert np.asarray(Image.open(png)).shape[:2] == (3 * 33 + 1, 4 * 33 + 1)  # 10 images: 4 columns, 3 rows
  result = run_module("launch.sample", f"--workdir={workdir}", "--num=10", f"--out={npz}", "--batch_size=4")
  assert result.returncode == 0, result.stderr[-2000:]
  images = np.load(npz)["images"]
  assert images.shape == (10, 32, 32, 1) and images.dtype == np.uint8
  np.testing.assert_array_equal(np.load(npz)["arr_0"], images)  # the key outside evaluators read
  # The same seed and batch give the same images, in a grid or raw. (Not across batch sizes: DCGAN's generator
  # normalises with the statistics of the batch it generates.)
  grid = np.asarray(Image.open(png))
  cell = grid[1:33, 1:33].reshape(32, 32, -1)[..., :1]
  np.testing.assert_array_equal(cell, images[0])  # the first cell of the grid is the first sample
  outdir = tmp_path / "seeds"
  result = run_module("launch.sample", f"--workdir={workdir}", "--seeds=12,3-4", f"--outdir={outdir}",
                      "--batch_size=2")
  assert result.returncode == 0, result.stderr[-2000:]
  assert sorted(os.listdir(outdir)) == ["seed0003.png", "seed0004.png", "seed0012.png"]
  assert np.asarray(Image.open(outdir / "seed0012.png")).shape[:2] == (32, 32)
  walk = tmp_path / "walk.gif"
  result = run_module("launch.sample", f"--workdir={workdir}", "--walk=2,5", "--frames=3", f"--out={walk}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "a walk of 4 frames through seeds 2,5" in result.stdout and Image.open(walk).n_frames == 4



def test_dry_run_prints_the_resolved_config_and_the_variants_and_trains_nothing(tmp_path):
  result = run_module("launch.train", "--config=dcgan:cpu", "--dry_run", "--config.steps=7")
  assert result.returncode == 0, result.stderr[-2000:]
  assert '"steps": 7' in result.stdout and '"name": "dcgan"' in result.stdout
  assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("variant ")] == [
      "variant cpu", "variant cpu_mlp", "variant gpu", "variant tpu"]
  assert "genscale: dcgan on" not in result.stdout  # nothing was built


@pytest.mark.parametrize("changes,message", [
    ({"batch_size": 3, "runtime.cpu_replicas": 2}, "--config.batch_size 3 is not divisible by 2 replicas"),
    ({"model.name": "stylegan9"}, "unknown --config.model.name='stylegan9'"),
    ({"model.loss": "wasserstein"}, "unknown --config.model.loss='wasserstein'"),
    ({"runtime.precision": "float16"}, "unknown --config.runtime.precision='float16'"),
    ({"data": "embedded:cifar"}, "unknown embedded dataset"),
    ({"data": "folder:/no/such/images"}, "data path /no/such/images does not exist"),
    ({"data": "tfrecord:/no/such/*.tfrecord"}, "/no/such/*.tfrecord matches no files"),
])
def test_a_bad_config_is_one_line_before_anything_is_written(tmp_path, changes, message):
  from launch import loop  # pylint: disable=g-import-not-at-top
  from launch.configs import common, dcgan  # pylint: disable=g-import-not-at-top
  config = common.apply(dcgan.get_config("cpu"), {"steps": 1, **changes})
  with pytest.raises(UserError) as error:
    loop.train(config, str(tmp_path / "w"))
  assert message in str(error.value) and "\n" not in str(error.value)
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


@pytest.mark.parametrize("args,message", [
    (["--config=launch/configs/dcgan.py:nope"], "unknown variant 'nope' of launch/configs/dcgan.py: choose one of"),
    (["--config=launch/configs/dcgan.py:cpu", "--config.modle.lr=1"], "did you mean --config.model.lr?"),
    (["--config=launch/configs/dcgan.py:cpu", "--config.steps=-1"], "--config.steps=-1 must be non-negative"),
])
def test_the_command_exits_2_with_one_line(tmp_path, args, message):
  result = run_module("launch.train", *args, f"--workdir={tmp_path / 'w'}")
  assert result.returncode == 2
  errors = error_lines(result.stderr)
  assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_resume_with_a_different_shape_is_refused(trained):
  from launch import loop  # pylint: disable=g-import-not-at-top
  workdir = trained[0]
  with pytest.raises(UserError) as error:
    loop.train(_small_config(steps=40, **{"model.g_width": 16}), workdir)
  assert str(error.value) == (
      f"--workdir {workdir} holds a run with model.g_width=8, but this config has "
      "model.g_width=16; resume with --config.model.g_width=8 or use a new --workdir")


def test_devices_prints_what_a_config_would_train_on():
  result = run_module("launch.devices", "--config=launch/configs/dcgan.py:cpu", "--config.runtime.cpu_replicas=2",
                      "--config.batch_size=31")
  assert result.returncode == 2 and "--config.batch_size 31 is not divisible by 2 replicas" in result.stderr
  result = run_module("launch.devices", "--config=launch/configs/dcgan.py:cpu", "--config.runtime.cpu_replicas=2")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "strategy=cpu replicas=2 workers=1 precision=float32" in result.stdout and "CPU:1" in result.stdout
  assert "global batch 64: 32 per replica, 10 steps per compiled call" in result.stdout


def test_a_run_stored_before_a_shape_key_existed_resumes(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from launch import rundir  # pylint: disable=g-import-not-at-top
  config = rundir.prepare_config(_small_config(steps=40))
  stored = config.to_dict()
  for key in ("architecture", "g_mlp_widths", "d_mlp_widths"):  # shape keys that came later: conv, the default
    del stored["model"][key]
  (tmp_path / "config.json").write_text(json.dumps(stored))
  rundir.check_resume_compatible(config, str(tmp_path))
  config.model.g_width = 16  # a key the stored run has is still checked
  with pytest.raises(UserError, match="holds a run with model.g_width=8"):
    rundir.check_resume_compatible(config, str(tmp_path))
