"""Test session setup: two logical CPU devices (so MirroredStrategy runs on a CPU) and shared helpers."""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# One thread per op in each test process (and the commands the tests start): three xdist workers share two cores,
# and TensorFlow's default of one thread per core in every process oversubscribes them (the suite ran 23% faster).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

_CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module, *args, env=None, timeout=600):
  """Runs ``python -m module args`` from the repository root; returns the CompletedProcess (text)."""
  full_env = dict(os.environ)
  full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
  full_env.update(env or {})
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env, capture_output=True,
                        text=True, timeout=timeout, check=False)


def error_lines(stderr):
  """The ``genscale: error:`` lines of a command's standard error."""
  return [line for line in stderr.splitlines() if line.startswith("genscale: error:")]


def config_from_flags(*args):
  """The config that ``launch.train`` builds from these ``--config=...`` and ``--config.key=value`` arguments."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ["genscale", *args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=False, sys_argv=argv)
  cwd = os.getcwd()
  os.chdir(ROOT)  # config paths are relative to the repository, as the tests' commands run there
  try:
    flag_values(argv)
    return flag_values.config
  finally:
    os.chdir(cwd)


def build_trainer(config, **runtime_overrides):
  """A Trainer for ``config`` (a new run, at step 0) with ``runtime`` overrides."""
  from launch import rundir  # pylint: disable=g-import-not-at-top
  from launch import runtime as runtime_lib  # pylint: disable=g-import-not-at-top
  from launch.trainer import Trainer  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top
  config = rundir.prepare_config(config)
  config.runtime.update(runtime_overrides)
  runtime = runtime_lib.create(config.runtime)
  return Trainer(config, runtime, pipelines.open_source(config.data))


@pytest.fixture(scope="session")
def tiny_vq_runs(tmp_path_factory):
  """``runs(resolution)``: the workdir of a VQ-VAE of 8 codes trained for 2 steps on the embedded digits at that
  resolution (a 4x smaller token grid), made once per resolution: the tokenizer a transformer over codes needs."""
  made = {}

  def runs(resolution):
    if resolution not in made:
      from launch import loop  # pylint: disable=g-import-not-at-top
      from launch.configs import vqvae  # pylint: disable=g-import-not-at-top
      c = vqvae.get_config("cpu")
      c.update(resolution=resolution, batch_size=8, steps=2, log_every=1, checkpoint_every=2, sample_every=2,
               histogram_every=0)
      c.runtime.steps_per_loop = 1
      c.model.update(widths="4,4", codebook_size=8, code_dim=4)
      made[resolution] = str(tmp_path_factory.mktemp("vqvae") / f"run{resolution}")
      loop.train(c, made[resolution])
    return made[resolution]

  return runs


@pytest.fixture
def tiny_dcgan():
  """A DCGAN config small enough for a step in well under a second."""
  from launch.configs import dcgan  # pylint: disable=g-import-not-at-top
  c = dcgan.get_config("cpu")
  c.model.g_width = 8
  c.model.d_width = 8
  c.model.latent_dim = 16
  c.batch_size = 8
  c.runtime.steps_per_loop = 1
  return c


def _shares_a_module_fixture(item):
  """Whether the test uses a fixture built once per module or session (a trained run that several tests read)."""
  definitions = getattr(item, "_fixtureinfo", None)
  if definitions is None:
    return False
  return any(d.scope in ("module", "package", "session") and d.baseid
             for defs in definitions.name2fixturedefs.values() for d in defs)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
  """Tests that share a module fixture join their file's xdist group, so ``--dist loadgroup`` builds the fixture
  once; every other test without a group is a group of its own, so a long file spreads over the workers."""
  for item in items:
    if not item.get_closest_marker("xdist_group"):
      shared = _shares_a_module_fixture(item)
      item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0] if shared else item.nodeid))


def in_ci():
  """True where missing test machinery must fail rather than skip (CI sets CI=true)."""
  return os.environ.get("CI", "").lower() in ("1", "true", "yes")
