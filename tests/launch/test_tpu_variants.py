"""Every config file's ``tpu`` variant compiles under XLA and trains: the closest a CPU gets to a TPU.

A TPU compiles the whole replica step with XLA, in bfloat16, several steps per call, with static shapes. Here each
``tpu`` variant runs 2 steps with the strategy overridden to one CPU, XLA on (the per-replica forward and backward
are jit-compiled, so an op XLA can't compile, such as ``tf.py_function``, ``tf.print`` or a bicubic resize, fails
the test), ``mixed_bfloat16`` and 2 steps per compiled call. XLA under MirroredStrategy is tested in test_loop.py. Only what a
CPU can't hold is changed: the data (the embedded digits, so resolution at most 32), the global batch, and the
network widths (the papers' 128-512 feature maps take minutes to compile and run in emulated bfloat16 on a CPU;
the code paths are the same at any width).
"""

import glob
import importlib
import json
import os

import numpy as np
import pytest

from launch import loop
from tests.conftest import ROOT

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "launch", "configs", "*.py"))
                 if "def get_config" in open(p).read())


# Model keys that set network widths, and CPU-sized values for them; a family uses the ones it has.
_CPU_SIZED = {"channels": 16, "num_blocks": 1, "channel_base": 512, "channel_max": 32, "width_base": 512,
              "width_max": 32, "z_dim": 32, "w_dim": 32, "latent_dim": 32, "mbstd_group_size": 4,
              "sample_steps": 2}


def tpu_config(name):
  return importlib.import_module(f"launch.configs.{name}").get_config("tpu")


@pytest.mark.parametrize("name", CONFIGS)
def test_tpu_variant_is_what_a_tpu_needs(name):
  config = tpu_config(name)
  runtime = config.runtime
  assert runtime.strategy == "tpu" and runtime.precision == "mixed_bfloat16"
  assert runtime.steps_per_loop > 1
  assert config.batch_size % 8 == 0  # splits over the 8 replicas of a v2-8 or v3-8


@pytest.mark.parametrize("name", CONFIGS)
def test_tpu_variant_trains_two_steps_under_xla_in_bfloat16(name, tmp_path):
  config = tpu_config(name)
  with config.unlocked():
    config.data = "embedded:mnist"
    config.resolution = min(32, int(str(config.resolution).split("x")[0]))
    config.batch_size = 4
    config.steps = 2
    config.log_every = 2
    config.sample_every = 2
    config.sample_grid = 4
    config.checkpoint_every = 2
    for key, value in _CPU_SIZED.items():
      if key in config.model:
        config.model[key] = value
    config.runtime.strategy = "cpu"
    config.runtime.cpu_replicas = 1
    config.runtime.xla = True
    config.runtime.steps_per_loop = 2
  assert config.runtime.precision == "mixed_bfloat16"
  workdir = str(tmp_path / name)
  metrics = loop.train(config, workdir)
  assert metrics and all(np.isfinite(v) for v in metrics.values()), metrics
  with open(os.path.join(workdir, "status.json"), encoding="utf-8") as f:
    assert json.load(f)["step"] == 2
