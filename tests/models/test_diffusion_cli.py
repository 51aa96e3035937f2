"""End-to-end smoke test of the commands a user runs: train a conditional EDM, then sample with guidance.

Two subprocess runs share one tiny training run (16x16 digits, widths 8-16, 2 steps of 8 images); what the
options do is tested in-process in test_diffusion_model.py.
"""

import os

import numpy as np
from PIL import Image
import pytest

from genscale import images as image_lib
from tests.conftest import error_lines, run_module

TINY = ["--config.resolution=16", "--config.batch_size=8", "--config.model.channels=8",
        "--config.model.channel_mults=1,2", "--config.model.attention_resolutions=8", "--config.steps=2",
        "--config.log_every=2", "--config.sample_every=2", "--config.checkpoint_every=2", "--config.sample_grid=4",
        "--config.model.sample_steps=2", "--config.runtime.steps_per_loop=2", "--config.histogram_every=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("diffusion_cli") / "edm_cond")
  result = run_module("launch.train", "--config=launch/configs/edm.py:cpu", f"--workdir={workdir}", *TINY)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


def _grid_shape(path):
  return np.asarray(Image.open(path)).shape[:2]


def test_smoke_train_logs_loss_buckets_and_writes_a_grid(run):
  workdir, result = run
  assert "step 2/2" in result.stdout and "loss_bucket/sigma_" in result.stdout
  # 4 images of 16x16 in a grid one class per column wide (10 columns).
  assert _grid_shape(os.path.join(workdir, "samples", "ema_0000002.png")) == image_lib.grid_shape(4, 16, 16, 10)


def test_smoke_sample_a_class_with_guidance_and_heun(run, tmp_path):
  out = str(tmp_path / "threes.png")
  result = run_module("launch.sample", f"--workdir={run[0]}", "--label=3", "--guidance=2", "--sampler=heun",
                      "--steps=3", "--churn=5", "--num=6", f"--out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "wrote 6 samples" in result.stdout
  assert _grid_shape(out) == image_lib.grid_shape(6, 16, 16)


def test_bad_sampling_flag_exits_with_one_line(run, tmp_path):
  result = run_module("launch.sample", f"--workdir={run[0]}", "--num=2", f"--out={tmp_path / 'x.png'}",
                      "--sampler=heun", "--eta=0.5")
  assert result.returncode == 2
  errors = error_lines(result.stderr)
  assert len(errors) == 1 and "--eta applies to the ddim sampler only" in errors[0], result.stderr[-2000:]
