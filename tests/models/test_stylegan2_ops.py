"""StyleGAN2 building blocks against closed forms and plain NumPy definitions: filters, modulated convolution,
minibatch standard deviation, R1 and path lengths, and the ADA pipeline (identity at p = 0, exact integer
transforms, XLA) and its p update."""

import numpy as np
import pytest
import tensorflow as tf

from models import base
from models.stylegan2 import augment
from models.stylegan2 import draws as sg_draws
from models.stylegan2 import ops

F1 = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0


def _rng(batch, seed=0):
  return base.BatchRng(tf.constant([seed, 7], tf.int64), 0, batch, 1)


# ---- NumPy references, written from the definitions


def np_upfirdn(x, up, down, pad0, pad1, gain):
  """Zero-insert by ``up``, zero-pad, correlate with the 2-D [1, 3, 3, 1] filter (times gain), keep every
  ``down``-th pixel. x: [b, H, W, C]."""
  b, h, w, c = x.shape
  z = np.zeros([b, h * up, w * up, c])
  z[:, ::up, ::up] = x
  z = np.pad(z, [[0, 0], [pad0, pad1], [pad0, pad1], [0, 0]])
  f = np.outer(F1, F1) * gain
  out_h, out_w = z.shape[1] - 3, z.shape[2] - 3
  y = np.zeros([b, out_h, out_w, c])
  for i in range(4):
    for j in range(4):
      y += f[i, j] * z[:, i:i + out_h, j:j + out_w]
  return y[:, ::down, ::down]


def np_conv_same(x, kernel):
  """'SAME' correlation, kernel [k, k, in, out] (odd k)."""
  k = kernel.shape[0]
  p = k // 2
  xp = np.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
  h, w = x.shape[1], x.shape[2]
  y = np.zeros([x.shape[0], h, w, kernel.shape[3]])
  for i in range(k):
    for j in range(k):
      y += np.einsum("bhwi,io->bhwo", xp[:, i:i + h, j:j + w], kernel[i, j])
  return y


def np_conv_transpose_up(x, kernel):
  """Stride-2 'VALID' transposed convolution: out[2i + t] += x[i] kernel[t] on both axes."""
  b, h, w, _ = x.shape
  k = kernel.shape[0]
  y = np.zeros([b, 2 * h + k - 2, 2 * w + k - 2, kernel.shape[3]])
  for i in range(h):
    for j in range(w):
      y[:, 2 * i:2 * i + k, 2 * j:2 * j + k] += np.einsum("bi,klio->bklo", x[:, i, j], kernel)
  return y


# ---- filters


def test_nearest_upsampling_copies_each_pixel_to_a_2x2_block():
  x = np.random.RandomState(0).randn(2, 3, 5, 4)
  np.testing.assert_array_equal(ops.upsample_nearest(tf.constant(x)).numpy(),
                                np.repeat(np.repeat(x, 2, axis=1), 2, axis=2))


@pytest.mark.parametrize("impl", ops.FILTER_IMPLS)
def test_upsample_and_downsample_match_upfirdn(impl):
  x = np.random.RandomState(0).randn(2, 6, 6, 3)
  np.testing.assert_allclose(ops.upsample2d(tf.constant(x), impl).numpy(), np_upfirdn(x, 2, 1, 2, 1, 4.0),
                             atol=1e-12)
  np.testing.assert_allclose(ops.downsample2d(tf.constant(x), impl).numpy(), np_upfirdn(x, 1, 2, 1, 1, 1.0),
                             atol=1e-12)
  # Constant images stay constant away from the zero-padded border (the filters keep the mean).
  ones = tf.ones([1, 8, 8, 1])
  np.testing.assert_allclose(ops.upsample2d(ones, impl)[0, 2:-2, 2:-2].numpy(), 1.0, atol=1e-6)


@pytest.mark.parametrize("impl", ops.FILTER_IMPLS)
@pytest.mark.parametrize("size,pad0,pad1,stride,gain", [
    (9, 1, 1, 1, 4.0),  # after the upsampling transposed convolution (2H + 1 -> 2H)
    (8, 2, 2, 1, 1.0),  # before a stride-2 3x3 convolution (H -> H + 1)
    (8, 1, 1, 2, 1.0),  # downsampling (H -> H / 2)
    (7, 1, 1, 2, 2.0),  # an odd size with stride 2
])
def test_fir_matches_upfirdn(impl, size, pad0, pad1, stride, gain):
  x = np.random.RandomState(1).randn(2, size, size, 3)
  np.testing.assert_allclose(ops.fir(tf.constant(x), pad0, pad1, gain=gain, stride=stride, impl=impl).numpy(),
                             np_upfirdn(x, 1, stride, pad0, pad1, gain), atol=1e-12)


def test_filter_implementations_agree_under_xla_with_gradients():
  x = tf.random.stateless_normal([2, 8, 8, 4], seed=[3, 4])

  def loss_and_grad(impl):
    @tf.function(jit_compile=True)
    def run(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = ops.upsample2d(ops.fir(x, 2, 2, impl=impl), impl)
        loss = tf.reduce_sum(tf.square(ops.downsample2d(y, impl)) * tf.range(1.0, 10.0)[:, None, None])
      return loss, tape.gradient(loss, x)
    return run(x)

  (loss_d, grad_d), (loss_s, grad_s) = loss_and_grad("depthwise"), loss_and_grad("slices")
  np.testing.assert_allclose(loss_s.numpy(), loss_d.numpy(), rtol=1e-5)
  np.testing.assert_allclose(grad_s.numpy(), grad_d.numpy(), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="unknown filter implementation"):
    ops.fir(x, 1, 1, impl="fft")


# ---- modulated convolution


@pytest.mark.parametrize("impl", ops.MODCONV_IMPLS)
def test_demodulation_gives_unit_output_variance_for_unit_input(impl):
  rs = np.random.RandomState(1)
  x = tf.constant(rs.randn(4, 40, 40, 32), tf.float32)
  weight = tf.constant(rs.randn(3, 3, 32, 16) * 5.0, tf.float32)  # any scale: demodulation removes it
  styles = tf.constant(np.exp(rs.randn(4, 32)), tf.float32)
  y = ops.modulated_conv(x, weight, styles, impl=impl).numpy()[:, 1:-1, 1:-1]  # away from the zero padding
  assert y.std() == pytest.approx(1.0, abs=0.02)
  # Per example and output channel: a unit-norm combination of unit-variance inputs.
  assert np.abs(y.std(axis=(1, 2)) - 1.0).max() < 0.1
  undemodulated = ops.modulated_conv(x, weight, styles, demodulate=False, impl=impl).numpy()
  assert undemodulated.std() > 10.0


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
def test_modulated_conv_matches_per_example_kernels(up, demodulate):
  rs = np.random.RandomState(2)
  x = rs.randn(3, 5, 5, 4)
  weight, styles = rs.randn(3, 3, 4, 6), rs.randn(3, 4)
  expected = []
  for b in range(3):
    kernel = weight * styles[b][None, None, :, None]
    if demodulate:
      kernel = kernel / np.sqrt(np.sum(kernel**2, axis=(0, 1, 2), keepdims=True) + 1e-8)
    xb = x[b:b + 1]
    expected.append(np_conv_transpose_up(xb, kernel) if up else np_conv_same(xb, kernel))
  expected = np.concatenate(expected)
  for impl in ops.MODCONV_IMPLS:
    got = ops.modulated_conv(tf.constant(x, tf.float32), tf.constant(weight, tf.float32),
                             tf.constant(styles, tf.float32), demodulate=demodulate, up=up, impl=impl)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4, err_msg=impl)


def test_grouped_and_scaled_agree_under_xla_and_in_bfloat16():
  rs = np.random.RandomState(3)
  x = tf.constant(rs.randn(2, 8, 8, 8), tf.float32)
  weight = tf.constant(rs.randn(3, 3, 8, 8) / np.sqrt(72), tf.float32)
  styles = tf.constant(rs.randn(2, 8) + 1.0, tf.float32)
  reference = ops.modulated_conv(x, weight, styles, up=True, impl="scaled").numpy()
  for impl in ops.MODCONV_IMPLS:
    compiled = tf.function(lambda a, i=impl: ops.modulated_conv(a, weight, styles, up=True, impl=i),
                           jit_compile=True)
    np.testing.assert_allclose(compiled(x).numpy(), reference, rtol=1e-4, atol=1e-4, err_msg=impl)
    low = ops.modulated_conv(tf.cast(x, tf.bfloat16), weight, styles, up=True, impl=impl)
    assert low.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(low, tf.float32).numpy(), reference, atol=0.1, err_msg=impl)


def test_minibatch_stddev_is_the_spread_within_groups_of_consecutive_examples():
  x = np.random.RandomState(4).randn(8, 2, 2, 6).astype(np.float32)
  y = ops.minibatch_stddev(tf.constant(x), group_size=4, num_channels=2).numpy()
  assert y.shape == (8, 2, 2, 8)
  np.testing.assert_array_equal(y[..., :6], x)
  for group in range(2):
    members = x[group * 4:(group + 1) * 4]
    for part in range(2):
      expected = np.sqrt(members[..., part * 3:(part + 1) * 3].var(axis=0) + 1e-8).mean()
      np.testing.assert_allclose(y[group * 4:(group + 1) * 4, :, :, 6 + part], expected, rtol=1e-5)


def test_minibatch_stddev_refuses_a_batch_that_groups_do_not_divide():
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="not a multiple of --config.model.mbstd_group_size=4"):
    ops.minibatch_stddev(tf.zeros([6, 4, 4, 2]), group_size=4)


# ---- regularisers


def test_r1_of_a_quadratic_critic():
  # D(x) = sum(c x²) -> ∇D = 2 c x -> R1 = sum(4 c² x²).
  rs = np.random.RandomState(5)
  x, c = rs.randn(3, 4, 4, 2), rs.randn(4, 4, 2)
  r1, logits = sg_draws.r1_penalty_and_logits(lambda v: tf.reduce_sum(c * v**2, axis=[1, 2, 3]), tf.constant(x))
  np.testing.assert_allclose(r1.numpy(), np.sum(4 * c**2 * x**2, axis=(1, 2, 3)), rtol=1e-6)
  np.testing.assert_allclose(logits.numpy(), np.sum(c * x**2, axis=(1, 2, 3)), rtol=1e-5)


def test_path_length_of_a_linear_synthesis():
  # images = reshape(ws_flat @ A): J^T y = A y, so the length is sqrt(mean over layers of the squared norm).
  rs = np.random.RandomState(6)
  b, num_ws, w_dim, h, c = 2, 3, 5, 4, 2
  a = rs.randn(num_ws * w_dim, h * h * c)
  ws, y = rs.randn(b, num_ws, w_dim), rs.randn(b, h, h, c)
  synthesis = lambda w: tf.reshape(tf.reshape(w, [b, -1]) @ tf.constant(a, tf.float32), [b, h, h, c])
  lengths, images = sg_draws.path_lengths(synthesis, tf.constant(ws, tf.float32), tf.constant(y, tf.float32))
  grads = (y.reshape(b, -1) @ a.T).reshape(b, num_ws, w_dim)
  np.testing.assert_allclose(lengths.numpy(), np.sqrt(np.mean(np.sum(grads**2, axis=2), axis=1)), rtol=1e-5)
  assert images.shape == (b, h, h, c)


# ---- ADA


def _images(channels=3, batch=8, size=8, seed=7):
  return tf.constant(np.random.RandomState(seed).uniform(-1, 1, [batch, size, size, channels]), tf.float32)


@pytest.mark.parametrize("op", augment.ALL)
def test_each_augmentation_is_the_identity_at_p0_and_acts_at_p1(op):
  images = _images()
  values = augment.random_values(_rng(8), "a")
  np.testing.assert_array_equal(augment.augment(images, 0.0, values, (op,)).numpy(), images.numpy())
  changed = augment.augment(images, 1.0, values, (op,)).numpy()
  assert not np.allclose(changed, images.numpy()), op


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_the_branch_free_pipeline_xla_uses_gives_the_same_images(p):
  images, values = _images(), augment.random_values(_rng(8), "a")
  with_cond = augment.augment(images, p, values, augment.ALL).numpy()
  np.testing.assert_array_equal(augment.augment(images, p, values, augment.ALL, branch_free=True).numpy(), with_cond)


def test_pipeline_at_p0_is_the_identity_and_compiles_with_xla():
  images = _images(channels=1)
  rng = _rng(8)

  @tf.function(jit_compile=True)
  def run(x, p):
    return augment.augment(x, p, augment.random_values(rng, "a"), augment.ALL)

  np.testing.assert_array_equal(run(images, tf.constant(0.0)).numpy(), images.numpy())
  eager = augment.augment(images, 1.0, augment.random_values(rng, "a"), augment.ALL).numpy()
  np.testing.assert_allclose(run(images, tf.constant(1.0)).numpy(), eager, atol=1e-4)


def test_integer_transforms_move_pixels_exactly():
  images = _images(channels=1, batch=16).numpy()
  values = augment.random_values(_rng(16), "a")
  flipped = augment.augment(tf.constant(images), 1.0, values, ("xflip",)).numpy()
  rotated = augment.augment(tf.constant(images), 1.0, values, ("rotate90",)).numpy()
  kinds = set()
  for i in range(16):
    if np.array_equal(flipped[i], images[i]):
      kinds.add("same")
    else:
      np.testing.assert_array_equal(flipped[i], images[i, :, ::-1])
      kinds.add("flip")
    rotations = [np.rot90(images[i], k, axes=(0, 1)) for k in range(4)]
    assert any(np.array_equal(rotated[i], r) for r in rotations)
  assert kinds == {"same", "flip"}


def test_r1_through_the_augmentation_compiles_with_xla():
  """R1 differentiates D(augment(x)) with respect to x, and training differentiates that again."""
  images = _images(channels=3)
  kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 2], [0, 1]))

  @tf.function(jit_compile=True)
  def penalty_gradient(x):
    with tf.GradientTape() as outer:
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = augment.augment(x, 0.8, augment.random_values(_rng(8), "a"), augment.ALL)
        total = tf.reduce_sum(tf.tanh(tf.nn.conv2d(y, kernel, 1, "SAME")))
      grads = tape.gradient(total, x)
      penalty = tf.reduce_sum(grads**2)
    return grads, outer.gradient(penalty, kernel)

  grads, second = penalty_gradient(images)
  assert np.all(np.isfinite(grads.numpy())) and np.abs(grads.numpy()).sum() > 0
  assert np.all(np.isfinite(second.numpy())) and np.abs(second.numpy()).sum() > 0


@pytest.mark.parametrize("r_t,direction", [(0.9, 1), (0.1, -1)])
def test_ada_p_moves_towards_the_target_and_stays_in_0_1(r_t, direction):
  step = 64 * 4 / (500 * 1000)
  moved = float(augment.adjust_p(0.5, r_t, 0.6, 64 * 4, 500))
  assert moved == pytest.approx(0.5 + direction * step)
  p = 0.0
  for _ in range(3):
    p = float(augment.adjust_p(p, r_t, 0.6, 1000, 0.4))  # 1000 images move p by 2.5
  assert p == (1.0 if direction > 0 else 0.0)


def test_parse_ops():
  assert augment.parse_ops("bgc") == augment.ALL
  assert augment.parse_ops("xflip, hue") == ("xflip", "hue")
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="augment_ops='cutout'"):
    augment.parse_ops("cutout")
