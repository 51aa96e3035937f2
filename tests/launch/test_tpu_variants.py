"""Every config file's ``tpu`` variant compiles as a TPU compiles it: the closest a CPU gets to a TPU.

What is compiled here, for each family, in ``mixed_bfloat16`` with the strategy moved to one CPU:
  - the training step's whole device work as ONE XLA computation (``runtime.xla_whole_step``): every phase's loss
    and gradients, the optimizer updates, the lazy phases' conditions, ``update_state`` (ADA p, lod, path-length
    mean...), the EMA and the counters. Only reading the next batch stays outside, as on a TPU, where the host
    feeds the compiled step. Two steps run: the lazy phases run at step 0 (each phase must report a loss) and are
    skipped at step 1.
  - the sampler (``model.generate`` as ``launch.sample`` and the sample grids call it) and the previews (an
    autoencoder's reconstructions), XLA-compiled.
An op XLA can't compile (``tf.py_function``, ``tf.print``, a bicubic resize, a dynamic shape) fails the test. XLA
under MirroredStrategy (per-replica gradients only) is tested in test_loop.py. Only what a CPU can't hold is
changed: the data (the embedded digits, so resolution at most 32; StyleGAN2 at 8; CycleGAN's two domains are
their halves), the global batch, and the network widths (the papers' 128-512 feature maps take minutes to compile
on a CPU; the code paths are the same at any width and depth).
"""

import glob
import importlib
import os

import numpy as np
import pytest
import tensorflow as tf

from launch import rundir
from launch import runtime as runtime_lib
from launch.sampling import Previewer, Sampler, has_previews
from launch.trainer import Trainer
from tests.conftest import ROOT
import pipelines

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "launch", "configs", "*.py"))
                 if "def get_config" in open(p).read())


# Model keys that set network widths, and CPU-sized values for them; a family uses the ones it has.
_CPU_SIZED = {"channels": 16, "num_blocks": 1, "channel_base": 512, "channel_max": 32, "width_base": 512,
              "width_max": 32, "z_dim": 32, "w_dim": 32, "latent_dim": 32, "mbstd_group_size": 4,
              "sample_steps": 2, "mapping_layers": 2, "channel_mults": "1,2", "attention_resolutions": "16"}


# Smaller images than the embedded digits' 32x32 where a family's CPU-sized network takes them: fewer blocks
# compile faster. StyleGAN2 at 8x8 still has a synthesis block that upsamples and a discriminator block that
# downsamples.
_RESOLUTION = {"stylegan2": 8, "ddpm": 16, "edm": 16, "imagegpt": 16, "maskgit": 16}

# Per family: the DDPM U-Net keeps two levels (the down- and upsampling paths compile there); EDM's own parts
# (preconditioning, loss weighting, the Heun sampler) compile around the same U-Net code with one level, at half
# the compile time.
# CycleGAN: one residual block at narrow widths (the block's code is the same for 1 or 9).
# The transformers: two blocks of width 32 (the block's code is the same for 8 of 512).
_FAMILY = {"edm": {"channel_mults": "1"}, "cyclegan": {"g_width": 8, "d_width": 8, "residual_blocks": 1},
           "imagegpt": {"width": 32, "depth": 2, "heads": 2}, "maskgit": {"width": 32, "depth": 2, "heads": 2}}


def tpu_config(name):
  return importlib.import_module(f"launch.configs.{name}").get_config("tpu")


def _on_one_cpu(config):
  with config.unlocked():
    # The embedded digits; a translator's two domains are their halves.
    config.data = "unpaired:embedded:mnist-a|embedded:mnist-b" if config.model.name == "cyclegan" else "embedded:mnist"
    config.resolution = _RESOLUTION.get(config.model.name, min(32, int(str(config.resolution).split("x")[0])))
    config.batch_size = 4
    for key, value in {**_CPU_SIZED, **_FAMILY.get(config.model.name, {})}.items():
      if key in config.model:
        config.model[key] = value
    config.runtime.update(strategy="cpu", cpu_replicas=1, xla_whole_step=True)
  return rundir.prepare_config(config)


@pytest.fixture(autouse=True)
def _reset_keras_policy():
  yield
  import keras  # pylint: disable=g-import-not-at-top
  keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xdist_group(f"tpu-{n}")) for n in CONFIGS])
def test_tpu_variant_compiles_its_whole_step_and_its_sampler_with_xla_in_bfloat16(name):
  config = _on_one_cpu(tpu_config(name))
  assert config.runtime.precision == "mixed_bfloat16" and config.runtime.xla  # what the variant itself sets
  runtime = runtime_lib.create(config.runtime)
  assert runtime.xla_whole_step and runtime.compute_dtype == tf.bfloat16
  trainer = Trainer(config, runtime, pipelines.open_source(config.data))
  before = [v.numpy() for v in trainer.model.trainable_variables]
  result = trainer.run(2)
  assert result.finite and result.step == 2, result.values()
  assert all(np.isfinite(v) for v in result.values().values()), result.values()
  # Every phase ran, the lazy ones (StyleGAN2's R1 and path length) at step 0, in bfloat16 under XLA.
  assert all(result.values()[f"{p.name}/loss"] != 0 for p in trainer.phases), result.values()
  assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, trainer.model.trainable_variables))
  # The steps ran as the jit-compiled function (a jit_compile function runs only once XLA has compiled it).
  step_fn = trainer._steps[0]  # pylint: disable=protected-access
  assert step_fn._jit_compile and step_fn.experimental_get_tracing_count() >= 1  # pylint: disable=protected-access
  height = int(config.resolution)
  if trainer.model.samples_from_prior:
    images = Sampler(runtime, trainer.model, 4, ema=True).batch([0, 1])
    assert images.shape == (4, height, height, int(config.channels)) and np.isfinite(images).all()
    assert images.std() > 0  # not a constant image
  if has_previews(trainer.model):  # reconstructions, interpolations
    outputs, _ = Previewer(runtime, trainer.model, seed=0)([next(iter(trainer.dataset(0)))])
    assert outputs and all(np.isfinite(v).all() and v.shape[0] == 4 for v in outputs.values())
