"""The transformers on the command line (train, sample with --label/--temperature/--top_k, evaluate --metrics=nll)
and over the codes of a trained VQ-VAE (its weights taken from the VQ-VAE run, its vocabulary checked)."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import loop, rundir

_TINY = {"resolution": 16, "batch_size": 8, "steps": 4, "log_every": 2, "checkpoint_every": 2, "sample_every": 4,
         "histogram_every": 0, "sample_grid": 4, "runtime.steps_per_loop": 1, "model.width": 16, "model.depth": 1,
         "model.heads": 2, "model.warmup_steps": 1}


def _config(family, **changes):
  import importlib  # pylint: disable=g-import-not-at-top
  from launch.configs import common  # pylint: disable=g-import-not-at-top
  c = importlib.import_module(f"launch.configs.{family}").get_config("cpu")
  with c.unlocked():
    common.apply(c, {**_TINY, **changes})
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  from tests.conftest import run_module  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("imagegpt") / "run")
  done = run_module("launch.train", "--config=launch/configs/imagegpt.py:cpu", f"--workdir={workdir}",
                    *(f"--config.{k}={v}" for k, v in _TINY.items()))
  assert done.returncode == 0, done.stderr[-2000:]
  assert "GPT/nll_nats" in done.stdout + done.stderr
  return workdir


def test_sample_and_evaluate_a_trained_run_from_the_command_line(trained, tmp_path):
  from evaluation.evaluator import EvalSettings  # pylint: disable=g-import-not-at-top
  from launch import scoring  # pylint: disable=g-import-not-at-top
  from tests.conftest import run_module  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "threes.npz")
  sampled = run_module("launch.sample", f"--workdir={trained}", "--label=3", "--temperature=0.8", "--top_k=4",
                       "--num=4", f"--out={out}")
  assert sampled.returncode == 0, sampled.stderr[-2000:]
  images = np.load(out)["images"]
  assert images.shape[1:] == (16, 16, 1) and set(np.unique(images)) <= {0, 255}  # binary pixels
  refused = run_module("launch.sample", f"--workdir={trained}", "--top_k=99", "--num=4", f"--out={out}")
  assert refused.returncode != 0 and "--top_k=99 must be in [0, 16]" in refused.stderr
  stream = io.StringIO()
  evaluator = scoring.evaluate_checkpoint(trained, EvalSettings(metrics="nll", nll_num=20), stream=stream,
                                          progress=False)
  record = evaluator.last_record
  values = record["metrics"]
  assert record["likelihood_method"] == "exact" and record["nll_count"] == 20
  assert 0 < values["nll_exact"] < 16 * 16 * np.log(2) * 1.5  # near the uniform model's after 4 steps
  assert values["bpd_exact"] == pytest.approx(values["nll_exact"] / (16 * 16 * np.log(2)), rel=1e-6)


# ---- VQ tokens


@pytest.fixture(scope="module")
def vq_run(tiny_vq_runs):
  return tiny_vq_runs(16)


def _vq_config(vq_run, **model):
  return _config("imagegpt", eval_every=0, **{"model.tokens": "vq", "model.vq_workdir": vq_run,
                                **{f"model.{k}": v for k, v in model.items()}})


def test_a_transformer_over_vq_codes_starts_from_the_vqvae_run_and_draws_through_its_decoder(vq_run, tmp_path):
  from launch.sampling import Sampler  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "gpt")
  loop.train(_vq_config(vq_run, vocab_size=8), workdir)
  run = rundir.load_run(workdir)
  vq = rundir.load_run(vq_run)
  assert run.model.vocab == 8 and run.model.length == 16  # a 4x4 grid of 8 codes
  codec = run.model.tokens.codec
  for mine, theirs in zip(codec.variables, vq.model.variables):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.name)  # frozen: never trained here
  tokens = tf.random.stateless_uniform([4, 16], [1, 2], 0, 8, tf.int32)
  np.testing.assert_array_equal(run.model.tokens.decode(tokens).numpy(),
                                vq.model.decode_tokens(tf.reshape(tokens, [4, 4, 4])).numpy())
  images = run.model.tokens.decode(tokens).numpy()
  np.testing.assert_array_equal(run.model.tokens.encode(images).numpy(),
                                tf.reshape(vq.model.encode(images), [4, 16]).numpy())
  samples = Sampler(run.runtime, run.model, 4).batch([0, 1])
  assert samples.shape == (4, 16, 16, 1) and np.isfinite(samples).all() and samples.std() > 0
  assert rundir.read_run(workdir)[0].model.vq.model.codebook_size == 8  # the run keeps the VQ-VAE's settings


def test_vq_settings_that_do_not_fit_are_one_line_errors(vq_run):
  cases = [(_vq_config(vq_run, vocab_size=9), "--config.model.vocab_size=9 but the tokens have a vocabulary of 8"),
           (_config("imagegpt", **{"model.tokens": "vq"}), "needs --config.model.vq_workdir"),
           (_config("imagegpt", resolution=8, **{"model.tokens": "vq", "model.vq_workdir": vq_run}),
            "--config.resolution=8 but the VQ-VAE"),
           (_config("imagegpt", **{"model.tokens": "vq", "model.vq_workdir": os.path.dirname(vq_run)}),
            "is not a run directory")]
  for config, message in cases:
    with pytest.raises(UserError) as error:
      rundir.prepare_config(config)
    assert message in str(error.value) and "\n" not in str(error.value)
