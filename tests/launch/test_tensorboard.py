"""Everything the monitor writes, read back through a real TensorBoard server's HTTP data API."""

import io
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
from PIL import Image
import pytest

from genscale import images as image_lib
from tests.conftest import ROOT, run_module
from tests.gcs_rig import free_port

ARGS = ["--config=launch/configs/dcgan.py:cpu", "--config.model.g_width=8", "--config.model.d_width=8",
        "--config.model.latent_dim=16", "--config.batch_size=16", "--config.sample_grid=16",
        "--config.runtime.steps_per_loop=5", "--config.steps=20", "--config.log_every=5",
        "--config.sample_every=10", "--config.histogram_every=10", "--config.checkpoint_every=20",
        "--config.profile_steps=10,15"]


def _model_of_args():
  """The model the ARGS run trains, built here (same config, same data shape)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top
  from launch import rundir  # pylint: disable=g-import-not-at-top
  from launch.configs import dcgan as dcgan_config  # pylint: disable=g-import-not-at-top
  from models import dcgan  # pylint: disable=g-import-not-at-top
  config = dcgan_config.get_config("cpu")
  config.model.g_width = config.model.d_width = 8
  config.model.latent_dim = 16
  info = pipelines.DataInfo(spec="embedded:mnist", count=1, resolution=32, channels=1, num_classes=10)
  from models import base  # pylint: disable=g-import-not-at-top
  return dcgan.DCGAN(rundir.prepare_config(config), info, base.Hardware(compute_dtype=tf.float32))


@pytest.fixture(scope="module")
def board(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("tb") / "run")
  result = run_module("launch.train", *ARGS, f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  port = free_port()
  tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
  process = subprocess.Popen([tensorboard, "--logdir", workdir, "--host", "127.0.0.1", "--port", str(port),
                              "--load_fast", "false"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             cwd=ROOT)
  base = f"http://127.0.0.1:{port}"
  deadline = time.monotonic() + 90
  while True:
    try:
      if json.loads(urllib.request.urlopen(f"{base}/data/runs", timeout=2).read()):
        break
    except OSError:
      pass
    assert process.poll() is None, process.stderr.read()[-2000:]
    assert time.monotonic() < deadline, "TensorBoard did not serve the run"
    time.sleep(0.5)
  yield base, workdir
  process.terminate()
  process.wait(timeout=30)


def _get(base, route, **params):
  url = f"{base}{route}" + (("?" + urllib.parse.urlencode(params)) if params else "")
  return urllib.request.urlopen(url, timeout=30).read()


def _json(base, route, **params):
  return json.loads(_get(base, route, **params))


def test_scalars_are_served_with_their_steps(board):
  base, _ = board
  tags = _json(base, "/data/plugin/scalars/tags")["tensorboard"]
  for tag in ("D/loss", "G/loss", "D/real", "D/fake", "grad_norm/D", "grad_norm/G", "optimizer/d/lr",
              "perf/img_per_sec", "perf/input_wait_fraction", "progress/kimg", "progress/ema_beta"):
    assert tag in tags, tag
  steps = [s for _, s, _ in _json(base, "/data/plugin/scalars/scalars", run="tensorboard", tag="D/loss")]
  assert steps == [5, 10, 15, 20]
  lr = _json(base, "/data/plugin/scalars/scalars", run="tensorboard", tag="optimizer/d/lr")
  assert lr[-1][2] == pytest.approx(2e-4)


def test_images_are_decodable_grids_that_change(board):
  base, _ = board
  tags = _json(base, "/data/plugin/images/tags")["tensorboard"]
  assert {"samples/ema", "samples/raw", "data/reals"} <= set(tags)
  entries = _json(base, "/data/plugin/images/images", run="tensorboard", tag="samples/raw", sample=0)
  assert [e["step"] for e in entries] == [0, 10, 20]  # the untrained generator, then every 10 steps
  grids = []
  for entry in entries:
    png = _get(base, "/data/plugin/images/individualImage?" + entry["query"])
    grids.append(np.asarray(Image.open(io.BytesIO(png))))
  assert grids[0].shape[:2] == image_lib.grid_shape(16, 32, 32)
  assert not np.array_equal(grids[1], grids[2])  # the generator moved between steps 10 and 20


def test_histograms_of_weights_and_gradients(board):
  base, _ = board
  tags = _json(base, "/data/plugin/histograms/tags")["tensorboard"]
  # One tag per variable, named by its place in the model (layers' own names, w and b, repeat).
  weights = sorted(t for t in tags if t.startswith("weights/"))
  assert len(weights) == len(_model_of_args().trainable_variables)
  assert "weights/generator/project/w" in weights and "weights/discriminator/logit/w" in weights
  assert any(t.startswith("gradients/D/discriminator/") for t in tags)
  assert any(t.startswith("gradients/G/generator/") for t in tags)
  tag = next(t for t in tags if t.startswith("gradients/G/"))
  steps = [h[1] for h in _json(base, "/data/plugin/histograms/histograms", run="tensorboard", tag=tag)]
  assert steps == [10, 20]


def test_config_and_versions_text(board):
  base, _ = board
  config = _json(base, "/data/plugin/text/text", run="tensorboard", tag="run/config")
  assert "&quot;loss&quot;: &quot;nonsaturating&quot;" in config[0]["text"] or '"loss": "nonsaturating"' in \
      config[0]["text"]
  versions = _json(base, "/data/plugin/text/text", run="tensorboard", tag="run/versions")
  assert "tensorflow 2." in versions[0]["text"]


def test_hparams_row(board):
  base, _ = board
  request = urllib.request.Request(f"{base}/data/plugin/hparams/experiment", data=json.dumps(
      {"experimentName": ""}).encode(), headers={"Content-Type": "application/json"}, method="POST")
  experiment = json.loads(urllib.request.urlopen(request, timeout=30).read())
  names = {h["name"] for h in experiment["hparamInfos"]}
  assert {"model.loss", "batch_size", "runtime.precision"} <= names
  metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
  assert "D/loss" in metrics


def test_profile_trace_is_written(board):
  _, workdir = board
  profile = os.path.join(workdir, "tensorboard", "plugins", "profile")
  traces = [f for _, _, files in os.walk(profile) for f in files if f.endswith(".xplane.pb")]
  assert traces
