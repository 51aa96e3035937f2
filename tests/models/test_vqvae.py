"""VQ-VAE: the quantiser against brute force and closed forms, the straight-through gradient, the EMA codebook and
dead-code restarts, the same codebook on one and two replicas, codebook use after training on digits, the
tokenizer and its command, resume, and the config checks."""

import os

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import rundir
from launch.configs import vqvae as vqvae_config
from models import base
from models.autoencoder import quantizer
from tests.conftest import build_trainer
from tests.models.test_autoencoder import INFO, _digits, resumed_and_unbroken
from tests.models.test_autoencoder import _model as build_model


def tiny(**model):
  c = vqvae_config.get_config("cpu")
  c.model.update({"widths": "8,16", "codebook_size": 16, "code_dim": 4, **model})
  c.batch_size = 8
  c.runtime.steps_per_loop = 1
  return c


def _rng(batch, replica=0, replicas=1):
  return base.BatchRng(tf.constant([3, 4], tf.int64), replica, batch, replicas)


def _codebook(**options):
  settings = dict(size=8, dim=3, seed=0, ema=True, decay=0.0, restart_below=0.0)
  settings.update(options)
  return quantizer.Codebook(**settings)


def _grid(batch=2, seed=1):
  return tf.random.stateless_normal([batch, 2, 2, 3], seed=[seed, 0]) * 0.5


def test_each_vector_takes_its_nearest_code_and_the_gradient_passes_straight_through():
  book = _codebook(ema=False)
  z = _grid()
  weights = tf.reshape(tf.range(24, dtype=tf.float32), z.shape)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(z)
    z_st, indices, commitment, codebook_error, _ = book.quantize(z, _rng(2), 1)
    weighted = tf.reduce_sum(z_st * weights)
  flat, codes = z.numpy().reshape(-1, 3), book.vectors.numpy()
  nearest = np.argmin(((flat[:, None, :] - codes[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(indices.numpy().ravel(), nearest)
  np.testing.assert_allclose(z_st.numpy().reshape(-1, 3), codes[nearest], atol=1e-6)  # the decoder sees the codes
  np.testing.assert_array_equal(tape.gradient(weighted, z).numpy(), weights.numpy())  # d z_q / d z_e = identity
  squared = ((flat - codes[nearest]) ** 2).sum(-1).reshape(2, 4).sum(1)
  np.testing.assert_allclose(commitment.numpy(), squared, rtol=1e-5)
  np.testing.assert_allclose(codebook_error.numpy(), squared, rtol=1e-5)
  assert tape.gradient(commitment, book.vectors) is None  # sg[e]: the commitment term moves the encoder only
  assert np.abs(tf.convert_to_tensor(tape.gradient(codebook_error, book.vectors)).numpy()).max() > 0


def test_the_reconstruction_gradient_reaches_the_encoder():
  model = build_model(tiny(commitment=0.0))
  images, _ = _digits(8)
  with tf.GradientTape() as tape:
    loss, _ = model.loss({"image": images}, _rng(8))
  grads = tape.gradient(loss, model.encoder.trainable_variables)
  assert grads and all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_the_ema_update_moves_each_used_code_to_the_mean_of_its_vectors():
  book = _codebook(decay=0.0)
  z = _grid(batch=4)
  _, indices, _, _, statistics = book.quantize(z, _rng(4), 1)
  book.update({k: s.total for k, s in statistics.items()}, step=None)
  flat, picked = z.numpy().reshape(-1, 3), indices.numpy().ravel()
  for code in np.unique(picked):
    np.testing.assert_allclose(book.vectors.numpy()[code], flat[picked == code].mean(0), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(book.usage.numpy(), np.bincount(picked, minlength=8))


def test_dead_codes_restart_on_encoder_outputs_and_used_codes_stay():
  book = _codebook(decay=0.0, restart_below=1.0, ema=False)
  far = np.full([8, 3], 50.0, np.float32)
  far[0] = 0.0  # every vector picks code 0; the seven others are dead
  book.vectors.assign(far)
  z = _grid(batch=8)
  _, indices, _, _, statistics = book.quantize(z, _rng(8), 1)
  assert (indices.numpy() == 0).all()
  book.update({k: s.total for k, s in statistics.items()}, step=tf.constant(5, tf.int64))
  vectors, outputs = book.vectors.numpy(), z.numpy().reshape(-1, 3)
  np.testing.assert_array_equal(vectors[0], far[0])
  for code in range(1, 8):
    assert np.abs(outputs - vectors[code]).sum(-1).min() < 1e-6, code  # an encoder output of the batch
  assert len({tuple(v) for v in vectors[1:]}) == 7  # each on a different one
  np.testing.assert_array_equal(book.usage.numpy()[1:], 1.0)


def test_global_rows_put_each_replica_in_its_place():
  values = [tf.fill([2, 3], float(r + 1)) for r in range(2)]
  total = sum(_rng(2, r, 2).global_rows(v) for r, v in enumerate(values))
  np.testing.assert_array_equal(total.numpy(), np.repeat([[1.0], [2.0]], 2, axis=0) * np.ones([4, 3]))


def _codebook_after_a_step(replicas):
  trainer = build_trainer(tiny(), cpu_replicas=replicas)
  assert trainer.run(2).finite
  book = trainer.model.codebook
  return book.vectors.numpy(), book.usage.numpy(), book.sums.numpy()


def test_one_device_and_two_replicas_update_the_same_codebook():
  one, two = _codebook_after_a_step(1), _codebook_after_a_step(2)
  assert one[1].sum() > 0
  for a, b in zip(one, two):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


# ---- a trained run: codebook use, the tokenizer and its command

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  from launch import loop  # pylint: disable=g-import-not-at-top
  config = vqvae_config.get_config("cpu")  # the defaults: 128 codes of 16 values
  config.model.widths = "16,32"
  config.update(steps=300, log_every=100, checkpoint_every=300, sample_every=300, histogram_every=0)
  workdir = str(tmp_path_factory.mktemp("vqvae"))
  loop.train(config, workdir)
  from launch.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  return workdir, Tokenizer.load(workdir)


def test_training_on_digits_uses_more_than_half_of_the_codebook(trained):
  workdir, tokenizer = trained
  images, _ = _digits(500, split="test")
  tokens = tokenizer.encode(images)
  assert tokens.shape == (500, 8, 8)
  assert len(np.unique(tokens)) > 64, len(np.unique(tokens))
  # Reconstructions beat the mean image by far: the codes carry the digits.
  error = np.mean((tokenizer.decode(tokens) - images.numpy()) ** 2)
  assert error < 0.3 * np.mean((images.numpy() - images.numpy().mean(0)) ** 2), error
  scalars = tokenizer.model.scalars()
  assert float(scalars["codebook_perplexity"]) > 32 and float(scalars["codes_in_use"]) > 64
  assert os.path.exists(os.path.join(workdir, "samples", "reconstructions_0000300.png"))


def test_tokens_decode_to_the_models_reconstructions_and_the_command_writes_them(trained, tmp_path):
  workdir, tokenizer = trained
  images, labels = _digits(16, split="test")
  np.testing.assert_allclose(tokenizer.decode(tokenizer.encode(images)), tokenizer.model.reconstruct(images).numpy(),
                             atol=1e-6)
  from tests.conftest import run_module  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "tokens.npz")
  done = run_module("launch.tokens", f"--workdir={workdir}", "--data=embedded:mnist:test", f"--out={out}")
  assert done.returncode == 0, done.stderr[-2000:]
  with np.load(out) as arrays:
    assert int(arrays["codebook_size"]) == 128 and int(arrays["step"]) == 300
    np.testing.assert_array_equal(arrays["tokens"][:16], tokenizer.encode(images))
    np.testing.assert_array_equal(arrays["labels"][:16], labels.numpy())
  with pytest.raises(UserError, match="tokens must lie in"):
    tokenizer.decode(np.full([1, 8, 8], 128))


def test_a_resumed_run_equals_the_unbroken_one(tmp_path):

  def config(steps):
    c = tiny()
    c.update(steps=steps, log_every=2, checkpoint_every=2, sample_every=4, histogram_every=0)
    return c

  unbroken, resumed = resumed_and_unbroken(config, tmp_path)
  assert any("usage" in k for k in unbroken) and any("sums" in k for k in unbroken)
  for key, value in unbroken.items():
    np.testing.assert_array_equal(resumed[key], value, err_msg=key)


@pytest.mark.parametrize("key,value,fragment", [
    ("codebook", "kmeans", "--config.model.codebook"),
    ("codebook_size", 1, "--config.model.codebook_size"),
    ("ema_decay", 1.0, "--config.model.ema_decay"),
    ("restart_below", -1.0, "--config.model.restart_below"),
    ("widths", "8,16,32,64,128,256", "multiple of 64"),
])
def test_bad_settings_are_one_line_errors(key, value, fragment):
  config = tiny(**{key: value})
  with pytest.raises(UserError) as error:
    rundir.prepare_config(config)
  assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_vqvae_refuses_to_sample_and_a_tokenizer_needs_a_vqvae():
  from launch.sampling import Sampler  # pylint: disable=g-import-not-at-top
  from launch import runtime as runtime_lib  # pylint: disable=g-import-not-at-top
  from launch.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  config = rundir.prepare_config(tiny())
  with pytest.raises(UserError, match="no prior to sample from"):
    Sampler(runtime_lib.create(config.runtime), build_model(tiny(), INFO), 4)
  import types  # pylint: disable=g-import-not-at-top
  ae_run = types.SimpleNamespace(model=object(), workdir="W", config=config.copy_and_resolve_references())
  ae_run.config.model.name = "ae"
  with pytest.raises(UserError, match="a tokenizer is a trained VQ-VAE"):
    Tokenizer(ae_run)
