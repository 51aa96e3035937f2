"""The transformer family (ImageGPT, MaskGIT; models/transformer/): the causal mask, the key/value cache against the
full forward, the exact likelihood against one-slot-at-a-time conditionals (and summing to one over every image of a
tiny size), the pixel tokens as a bijection, the MaskGIT schedule and decoding, top-k / top-p filtering, the same
per-example loss at any batch split and the same SGD step on one device and two replicas, a resumed run equal to the
unbroken one, bfloat16, the attention preview, and the config and sampling-option checks."""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import rundir
from launch.configs import imagegpt as imagegpt_config
from launch.configs import maskgit as maskgit_config
from models import base
from models import binary
from models.transformer import model as transformer
from models.transformer.tokens import PixelTokens
from tests.conftest import build_trainer
from tests.models.test_autoencoder import resumed_and_unbroken
import pipelines

INFO = pipelines.DataInfo(spec="test", count=10, resolution=8, channels=1, num_classes=10)
CONFIGS = {"imagegpt": imagegpt_config, "maskgit": maskgit_config}
FAMILIES = sorted(CONFIGS)


def tiny(family="imagegpt", resolution=8, channels=1, **model):
  """8x8 binarised images in 2x2 blocks (16 tokens of a vocabulary of 16), 2 blocks of width 32 with 2 heads."""
  c = CONFIGS[family].get_config("cpu_pixels" if family == "maskgit" else "cpu")
  c.model.update({"width": 32, "depth": 2, "heads": 2, "dropout": 0.0, "conditional": False, **model})
  c.update(resolution=resolution, channels=channels, batch_size=8, histogram_every=0, sample_grid=16)
  c.runtime.steps_per_loop = 1
  return c


def _model(config, info=INFO, dtype=tf.float32):
  import models  # pylint: disable=g-import-not-at-top
  return models.build(rundir.prepare_config(config), info, base.Hardware(compute_dtype=dtype))


def _randomize(net, seed=0):
  """Weights far from the N(0, 0.02) start, so attention is far from uniform and the logits are O(1): a check of
  the cache or the mask then compares numbers that differ from slot to slot."""
  state = np.random.RandomState(seed)
  for variable in net.variables:
    name = variable.name.split(":")[0].split("/")[-1]
    shape = variable.shape
    if name == "gamma":
      value = 1.0 + 0.2 * state.normal(size=shape)
    elif name in ("beta", "b"):
      value = 0.2 * state.normal(size=shape)
    elif name == "table":
      value = state.normal(size=shape)
    else:  # a Dense kernel [in, out]
      value = 1.5 * state.normal(size=shape) / math.sqrt(shape[0])
    variable.assign(value.astype(np.float32))


def _rng(batch, replica=0, replicas=1, seed=3, step=0):
  return base.BatchRng(tf.constant([seed, step], tf.int64), replica, batch, replicas)


def _ids(batch, slots, maxval, seed=0):
  return tf.random.stateless_uniform([batch, slots], [seed, 7], 0, maxval, tf.int32)


def _binary_images(batch, shape=(8, 8, 1), seed=0):
  bits = np.random.RandomState(seed).randint(0, 2, size=[batch, *shape])
  return tf.constant(bits * 2.0 - 1.0, tf.float32)


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def _stepwise_log_likelihood(model, tokens, start):
  """sum_i log p(t_i | t_<i, start) of tokens [b, N], one slot at a time from the key/value cache (NumPy sum)."""
  tokens = tf.constant(tokens, tf.int32)
  cache = model.net.init_cache(int(tokens.shape[0]))
  ids, total = start, 0.0
  for t in range(int(tokens.shape[1])):
    logits, cache = model.net.step(ids, tf.constant(t), cache)
    total = total + np.take_along_axis(_log_softmax(logits.numpy()), tokens[:, t:t + 1].numpy(), axis=1)[:, 0]
    ids = tokens[:, t]
  return total


# ---- the causal mask

def test_the_causal_network_changed_at_slot_j_keeps_the_logits_of_earlier_slots_and_moves_slot_j():
  model = _model(tiny())
  _randomize(model.net)
  n = model.length
  ids = _ids(4, n, model.vocab)
  logits = model.net(ids).numpy()
  for j in range(n):
    changed = ids.numpy().copy()
    changed[:, j] = (changed[:, j] + 1 + np.arange(4)) % model.vocab
    moved = model.net(tf.constant(changed)).numpy()
    np.testing.assert_allclose(moved[:, :j], logits[:, :j], rtol=0, atol=1e-6, err_msg=f"slot {j}")
    assert np.abs(moved[:, j] - logits[:, j]).max(axis=-1).min() > 1e-3, j  # every example's slot j moved


def test_the_bidirectional_network_changed_at_the_last_slot_moves_every_slot():
  model = _model(tiny("maskgit"))
  _randomize(model.net)
  ids = _ids(2, model.length + 1, model.vocab)
  changed = ids.numpy().copy()
  changed[:, -1] = (changed[:, -1] + 1) % model.vocab
  difference = np.abs(model.net(tf.constant(changed)).numpy() - model.net(ids).numpy()).max(axis=-1)
  assert difference.min() > 1e-3, difference  # no mask: slot 0 sees the last slot too


def test_imagegpt_changed_at_token_j_keeps_the_conditionals_up_to_j_and_moves_a_later_one():
  """log p(t_i | t_<i) for i < j does not read t_j; at i = j the distribution is the same (slot j predicts t_j from
  t_<j), so the new value is that distribution's log-probability of the new token."""
  model = _model(tiny(conditional=True))
  _randomize(model.net)
  n, labels = model.length, tf.constant([0, 3, 9])
  tokens = _ids(3, n, model.vocab, seed=1)
  log_p = model.token_log_probs(tokens, labels).numpy()
  distributions = _log_softmax(model.net(model.inputs(tokens, labels)).numpy())  # [b, N, V]
  np.testing.assert_allclose(np.take_along_axis(distributions, tokens.numpy()[..., None], axis=-1)[..., 0], log_p,
                             rtol=1e-5, atol=1e-5)
  for j in range(n):
    changed = tokens.numpy().copy()
    changed[:, j] = (changed[:, j] + 1 + np.arange(3)) % model.vocab
    moved = model.token_log_probs(tf.constant(changed), labels).numpy()
    np.testing.assert_allclose(moved[:, :j], log_p[:, :j], rtol=0, atol=1e-6, err_msg=f"token {j}")
    np.testing.assert_allclose(moved[:, j], distributions[np.arange(3), j, changed[:, j]], rtol=1e-5, atol=1e-5)
    if j + 1 < n:
      assert np.abs(moved[:, j + 1:] - log_p[:, j + 1:]).max(axis=1).min() > 1e-4, j


# ---- the key/value cache

@pytest.mark.parametrize("context", [0, 24], ids=["one-image", "longer-cache"])
def test_each_cached_step_gives_the_full_forwards_logits_at_its_slot(context):
  model = _model(tiny(context=context))
  _randomize(model.net)
  slots = model.net.slots
  assert slots == (context or model.length)
  ids = _ids(3, slots, model.class_base + 1, seed=2)
  full = model.net(ids).numpy()
  cache = model.net.init_cache(3)
  for t in range(slots):
    logits, cache = model.net.step(ids[:, t], tf.constant(t), cache)
    assert logits.dtype == tf.float32
    assert np.abs(logits.numpy() - full[:, t]).max() < 1e-4, t
  assert np.abs(full[:, 1:] - full[:, :1]).max() > 1e-2  # the slots differ: the check could fail


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, 0, 1.0), (1.0, 0, 1.0), (1.0, 5, 0.9)],
                         ids=["greedy", "temperature-1", "top-k-and-p"])
def test_sampling_from_the_cache_draws_the_tokens_of_recomputing_every_slot(temperature, top_k, top_p):
  model = _model(tiny(conditional=True))
  _randomize(model.net)
  start = model.start_ids(tf.constant([0, 1, 2, 3, 4, 5]), 6)
  uniforms = _rng(6).per_step([], "gpt/sample", kind="uniform")
  cached, recomputed = (model.sample_tokens(start, uniforms, temperature, top_k, top_p, cache=cache).numpy()
                        for cache in (True, False))
  np.testing.assert_array_equal(cached, recomputed)
  assert cached.shape == (6, model.length) and cached.min() >= 0 and cached.max() < model.vocab
  assert len({row.tobytes() for row in cached}) > 1  # the labels (and the draws) reach the tokens
  if temperature == 0:  # greedy: each token is the argmax of the full forward given the tokens before it
    logits = model.net(model.inputs(tf.constant(cached), tf.constant([0, 1, 2, 3, 4, 5]))).numpy()
    np.testing.assert_array_equal(cached, logits.argmax(-1))


# ---- the exact likelihood

def test_the_log_likelihood_is_the_sum_of_the_conditionals_one_slot_at_a_time():
  model = _model(tiny())
  _randomize(model.net)
  images = _binary_images(5)
  tokens = model.tokens.encode(images)
  expected = _stepwise_log_likelihood(model, tokens, model.start_ids(None, 5))
  got = model.log_likelihood(images)
  assert got.shape == (5,) and got.dtype == tf.float32
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
  assert model.likelihood_method == "exact" and model.likelihood_data() == "binary"


def test_a_conditional_models_likelihood_is_the_class_average_of_its_conditional_likelihoods():
  model = _model(tiny(conditional=True))
  _randomize(model.net)
  images = _binary_images(3, seed=1)
  tokens = model.tokens.encode(images)
  per_class = np.stack([_stepwise_log_likelihood(model, tokens, model.start_ids(tf.fill([3], c), 3))
                        for c in range(10)])  # [classes, b]
  assert np.abs(per_class - per_class[:1]).max() > 1e-2  # the class token matters: a row mix-up would show
  expected = np.logaddexp.reduce(per_class, axis=0) - math.log(10)
  np.testing.assert_allclose(model.log_likelihood(images).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("patch,conditional", [(1, False), (2, False), (2, True)])
def test_the_probabilities_of_every_binary_2x6_image_sum_to_one(patch, conditional):
  model = _model(tiny(resolution="2x6", patch=patch, conditional=conditional))
  assert model.vocab == 2**(patch * patch) and model.length == 12 // (patch * patch)
  _randomize(model.net)
  bits = (np.arange(4096)[:, None] >> np.arange(12)) & 1
  log_p = model.log_likelihood(tf.constant(bits.reshape([4096, 2, 6, 1]) * 2.0 - 1.0, tf.float32))
  assert abs(float(tf.reduce_logsumexp(log_p))) < 1e-5
  assert float(tf.reduce_max(log_p) - tf.reduce_min(log_p)) > 1.0  # not the uniform distribution


@pytest.mark.parametrize("resolution,channels,patch", [(8, 1, 2), (4, 3, 2)])
def test_the_loss_is_the_nll_of_a_fresh_binarisation_and_bits_per_dim_divide_it_by_hwc_ln2(resolution, channels,
                                                                                             patch):
  model = _model(tiny(resolution=resolution, channels=channels, patch=patch))
  _randomize(model.net)
  images = tf.random.stateless_uniform([6, resolution, resolution, channels], [1, 2], -1.0, 1.0)  # grey levels
  loss, metrics = model.loss({"image": images}, _rng(6))
  bits = binary.dynamic_binarize(images, _rng(6), "gpt/binarize")
  np.testing.assert_allclose(loss.numpy(), -model.log_likelihood(bits).numpy(), rtol=1e-5)
  np.testing.assert_array_equal(metrics["GPT/nll_nats"].numpy(), loss.numpy())
  dims = resolution * resolution * channels  # 64, 48
  np.testing.assert_allclose(metrics["GPT/bits_per_dim"].numpy(), loss.numpy() / (dims * math.log(2.0)), rtol=1e-6)


# ---- pixel tokens

@pytest.mark.parametrize("levels,patch,channels", list(itertools.product([2, 4], [1, 2], [1, 3])))
def test_pixel_tokens_are_a_bijection_of_quantised_images(levels, patch, channels):
  tokens = PixelTokens(4, channels, levels, patch)
  vocab = levels**(patch * patch * channels)
  assert tokens.vocab_size == vocab and tokens.grid == (4 // patch, 4 // patch)
  state = np.random.RandomState(levels * 10 + patch * 3 + channels)
  values = state.randint(0, levels, size=[8, 4, 4, channels])
  images = tf.constant(values / (levels - 1) * 2.0 - 1.0, tf.float32)
  encoded = tokens.encode(images).numpy()
  assert encoded.shape == (8, (4 // patch)**2) and encoded.min() >= 0 and encoded.max() < vocab
  np.testing.assert_allclose(tokens.decode(encoded).numpy(), images.numpy(), rtol=0, atol=1e-6)
  # Noise below half a level quantises to the same tokens.
  jitter = state.uniform(-0.45, 0.45, size=images.shape) * 2.0 / (levels - 1)
  np.testing.assert_array_equal(tokens.encode(images + jitter).numpy(), encoded)
  drawn = state.randint(0, vocab, size=[8, (4 // patch)**2])
  np.testing.assert_array_equal(tokens.encode(tokens.decode(drawn)).numpy(), drawn)


def test_a_pixel_token_reads_its_block_in_raster_order_with_channels_last_as_base_levels_digits():
  # A 2x2 block at 3 levels, 2 channels: positions (0,0) (0,1) (1,0) (1,1), each (c0, c1): digit j = value j.
  values = np.array([[[0, 1], [2, 0]], [[1, 1], [0, 2]]])  # [2, 2, 2]: rows, cols, channels
  digits = values.reshape(-1)  # 0 1 2 0 1 1 0 2
  expected = sum(int(d) * 3**j for j, d in enumerate(digits))
  tokens = PixelTokens(2, 2, 3, 2)
  image = tf.constant(values[None] / 2.0 * 2.0 - 1.0, tf.float32)
  np.testing.assert_array_equal(tokens.encode(image).numpy(), [[expected]])


# ---- MaskGIT's schedule and decoding

def test_mask_counts_follow_the_cosine_schedule_by_hand():
  # floor(256 cos(π/2 · (t+1)/8)): cos(π/16) = 0.98079 -> 251.08, cos(π/8) = 0.92388 -> 236.51, 0.83147 -> 212.86,
  # 0.70711 -> 181.02, 0.55557 -> 142.23, 0.38268 -> 97.97, 0.19509 -> 49.94; 0 at the end.
  assert transformer.mask_counts(256, 8) == [251, 236, 212, 181, 142, 97, 49, 0]
  # T = 12, steps of 7.5°: 0.99144 -> 253.81, 0.96593 -> 247.28, 0.92388 -> 236.51, 0.86603 -> 221.70,
  # 0.79335 -> 203.10, 0.70711 -> 181.02, 0.60876 -> 155.84, cos 60° -> 128, 0.38268 -> 97.97, 0.25882 -> 66.26,
  # 0.13053 -> 33.41; 0.
  assert transformer.mask_counts(256, 12) == [253, 247, 236, 221, 203, 181, 155, 128, 97, 66, 33, 0]
  # At least one fewer each step (4 cos(π/8) = 3.7 would keep 3), but at least 1 until the end.
  assert transformer.mask_counts(4, 8) == [3, 2, 1, 1, 1, 1, 1, 0]
  assert transformer.mask_counts(1, 3) == [1, 1, 0]
  assert transformer.mask_counts(16, 1) == [0]


class _Recording:
  """Stands in for a network and keeps the ids of every call."""

  def __init__(self, net):
    self.net, self.inputs = net, []

  def __call__(self, ids, **kwargs):
    self.inputs.append(ids.numpy())
    return self.net(ids, **kwargs)


@pytest.mark.parametrize("steps,choice_temperature", [(8, 4.5), (12, 0.0)])
def test_maskgit_decoding_unmasks_by_the_schedule_and_never_masks_a_kept_token_again(steps, choice_temperature,
                                                                                      monkeypatch):
  model = _model(tiny("maskgit", conditional=True))
  _randomize(model.net)
  recording = _Recording(model.net)
  monkeypatch.setattr(model, "net", recording)
  start = model.start_ids(tf.constant([1, 2, 3, 4]), 4)
  ids, history = model.decode(start, _rng(4), steps, temperature=1.0, choice_temperature=choice_temperature,
                              trace=True)
  expected = transformer.mask_counts(model.length, steps)
  np.testing.assert_array_equal(np.stack([h.numpy() for h in history]), np.array(expected)[:, None] * np.ones([1, 4]))
  ids = ids.numpy()
  assert ids.min() >= 0 and ids.max() < model.vocab  # no [MASK] left
  assert len(recording.inputs) == steps
  before = [x[:, 1:] for x in recording.inputs] + [ids]  # the tokens before each step, then the result
  assert (before[0] == model.mask_id).all()
  for t in range(steps):
    np.testing.assert_array_equal((before[t + 1] == model.mask_id).sum(axis=1), expected[t])
    kept = before[t] != model.mask_id
    np.testing.assert_array_equal(before[t + 1][kept], before[t][kept], err_msg=f"step {t}")
  for x in recording.inputs:
    np.testing.assert_array_equal(x[:, 0], start.numpy())


def test_maskgit_generates_binary_images_and_refuses_a_zero_temperature():
  model = _model(tiny("maskgit"))
  images = model.generate(_rng(3), steps=4).numpy()
  assert images.shape == (3, 8, 8, 1) and set(np.unique(images)) <= {-1.0, 1.0}
  with pytest.raises(UserError, match="--temperature"):
    model.generate(_rng(3), temperature=0.0)


def test_the_maskgit_loss_is_the_mean_cross_entropy_over_ceil_cos_r_n_masked_tokens():
  model = _model(tiny("maskgit"))
  _randomize(model.net)
  images = _binary_images(6, seed=4)
  rng = _rng(6)
  loss, metrics = model.loss({"image": images}, rng)
  n = model.length
  tokens = model.tokens.encode(images).numpy()  # binary images: binarising again keeps them
  counts = np.clip(np.ceil(np.cos(np.pi / 2 * rng.uniform([], "maskgit/ratio").numpy()) * n), 1, n).astype(int)
  order = np.argsort(rng.uniform([n], "maskgit/positions").numpy(), axis=1)
  expected = []
  for i in range(6):
    masked = np.zeros(n, bool)
    masked[order[i, :counts[i]]] = True
    ids = np.where(masked, model.mask_id, tokens[i])
    logits = model.net(tf.constant([[model.class_base + model.num_classes, *ids]]))[0, 1:].numpy()
    ce = -np.take_along_axis(_log_softmax(logits), tokens[i][:, None], axis=1)[:, 0]
    expected.append(ce[masked].mean())
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["MaskGIT/masked_fraction"].numpy(), counts / n, rtol=1e-6)
  assert len(set(counts)) > 1


# ---- top-k, top-p and greedy picks

def test_top_k_keeps_exactly_the_k_best_tokens_scaled_by_the_temperature():
  logits = tf.random.stateless_normal([3, 16], [5, 6]) * 3.0
  for k in (1, 3, 16):
    filtered = transformer.filter_logits(logits, 2.0, k, 1.0).numpy()
    best = np.argsort(-logits.numpy(), axis=1)[:, :k]
    kept = np.isfinite(filtered)
    assert (kept.sum(axis=1) == k).all()
    assert all(set(np.flatnonzero(kept[i])) == set(best[i]) for i in range(3))
    np.testing.assert_allclose(filtered[kept], logits.numpy()[kept] / 2.0, rtol=1e-6)


def test_top_p_keeps_the_smallest_set_whose_probability_reaches_p():
  probabilities = np.array([0.15, 0.05, 0.5, 0.1, 0.2])  # by rank: 0.5 (2), 0.2 (4), 0.15 (0), 0.1 (3), 0.05 (1)
  logits = tf.constant(np.log(probabilities)[None], tf.float32)
  for p, expected in ((0.4, {2}), (0.6, {2, 4}), (0.8, {2, 4, 0}), (0.9, {2, 4, 0, 3}), (1.0, {0, 1, 2, 3, 4})):
    filtered = transformer.filter_logits(logits, 1.0, 0, p).numpy()[0]
    assert set(np.flatnonzero(np.isfinite(filtered))) == expected, p
  # With top_k = 2 first: 0.5 and 0.2 renormalise to 5/7 and 2/7, so p = 0.7 keeps the first alone, 0.75 both.
  assert set(np.flatnonzero(np.isfinite(transformer.filter_logits(logits, 1.0, 2, 0.7).numpy()[0]))) == {2}
  assert set(np.flatnonzero(np.isfinite(transformer.filter_logits(logits, 1.0, 2, 0.75).numpy()[0]))) == {2, 4}


def test_pick_draws_by_inverse_cdf_of_the_filtered_distribution_and_temperature_zero_is_argmax():
  logits = tf.random.stateless_normal([64, 10], [8, 9]) * 2.0
  uniforms = tf.random.stateless_uniform([64], [1, 1])
  greedy = transformer.pick(logits, uniforms, temperature=0.0, top_k=5, top_p=0.5).numpy()
  np.testing.assert_array_equal(greedy, logits.numpy().argmax(axis=1))
  for temperature, k, p in ((1.0, 0, 1.0), (0.5, 4, 1.0), (2.0, 0, 0.7)):
    drawn = transformer.pick(logits, uniforms, temperature, k, p).numpy()
    filtered = transformer.filter_logits(logits, temperature, k, p).numpy().astype(np.float64)
    probabilities = np.exp(filtered - filtered.max(axis=1, keepdims=True))
    cdf = np.cumsum(probabilities / probabilities.sum(axis=1, keepdims=True), axis=1)
    expected = [min(int(np.searchsorted(c, u, side="right")), 9) for c, u in zip(cdf, uniforms.numpy())]
    np.testing.assert_array_equal(drawn, expected)
    assert np.isfinite(filtered[np.arange(64), drawn]).all()


# ---- batches, replicas, resume

@pytest.mark.parametrize("family", FAMILIES)
def test_the_loss_of_each_example_is_the_same_at_batch_1_batch_32_and_split_over_two_replicas(family):
  """Dropout, binarisation and MaskGIT's masks come from the step's BatchRng: the draw of example i is the same
  however the global batch is split."""
  model = _model(tiny(family, dropout=0.1, conditional=True))
  images = tf.random.stateless_uniform([32, 8, 8, 1], [3, 3], -1.0, 1.0)
  labels = tf.range(32) % 10
  whole, _ = model.loss({"image": images, "label": labels}, _rng(32))
  alone, _ = model.loss({"image": images[:1], "label": labels[:1]}, _rng(1))
  halves = [model.loss({"image": images[16 * r:16 * r + 16], "label": labels[16 * r:16 * r + 16]},
                       _rng(16, replica=r, replicas=2))[0] for r in (0, 1)]
  np.testing.assert_allclose(alone.numpy(), whole.numpy()[:1], rtol=1e-5)
  np.testing.assert_allclose(np.concatenate([h.numpy() for h in halves]), whole.numpy(), rtol=1e-5)
  # Dropout is on: another step's draw gives other losses.
  assert not np.allclose(model.loss({"image": images, "label": labels}, _rng(32, step=1))[0].numpy(), whole.numpy())
  if family == "imagegpt":
    tokens = model.tokens.encode(binary.dynamic_binarize(images, _rng(32), "gpt/binarize"))
    no_dropout = -tf.reduce_sum(model.token_log_probs(tokens, labels), axis=1)
    assert not np.allclose(no_dropout.numpy(), whole.numpy(), rtol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_one_device_and_two_replicas_take_the_same_sgd_step_with_dropout(family):
  updates, losses = [], []
  for replicas in (1, 2):
    config = tiny(family, optimizer="sgd", lr=0.1, dropout=0.1, conditional=True)
    config.batch_size = 32
    trainer = build_trainer(config, cpu_replicas=replicas)
    variables = trainer.model.net.trainable_variables
    before = [v.numpy() for v in variables]
    result = trainer.run(1)
    assert result.finite
    name = "GPT/nll_nats" if family == "imagegpt" else "MaskGIT/masked_ce_nats"
    losses.append(result.metrics[name].value)
    updates.append([v.numpy() - b for v, b in zip(variables, before)])
  moved = [np.abs(u).max() for u in updates[0]]
  assert min(moved) > 0, moved
  for one, two, size in zip(updates[0], updates[1], moved):
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-4 * size)
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_a_resumed_imagegpt_run_equals_the_unbroken_one(tmp_path):
  """ImageGPT alone (MaskGIT's extra draws come from the same per-step BatchRng; each run costs ~5 s of tracing).
  Dropout, binarisation, AdamW's moments, and a sample grid with its preview at the end."""

  def config(steps):
    c = tiny(dropout=0.1, conditional=True)  # AdamW in its warm-up: the same rates for 2 and 4 steps
    c.update(steps=steps, log_every=2, checkpoint_every=2, sample_every=4)
    return c

  unbroken, resumed = resumed_and_unbroken(config, tmp_path)
  assert any("net" in k for k in unbroken) and any("optimizer" in k for k in unbroken)
  for key, value in unbroken.items():
    np.testing.assert_array_equal(resumed[key], value, err_msg=key)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for name in ("ema_0000004.png", "attention_first_last_layer_0000004.png"):
    a, b = (np.asarray(Image.open(tmp_path / run / "samples" / name)) for run in ("unbroken", "resumed"))
    np.testing.assert_array_equal(b, a, err_msg=name)


# ---- bfloat16 and the preview

def test_bfloat16_keeps_float32_variables_logits_and_attention_rows_that_sum_to_one():
  model = _model(tiny(conditional=True), dtype=tf.bfloat16)
  reference = _model(tiny(conditional=True))  # the same seed: the same initial weights
  for m in (model, reference):
    _randomize(m.net)
  assert all(v.dtype == tf.float32 for v in model.variables)
  ids = _ids(3, model.length, model.class_base + model.num_classes + 1)
  logits, maps = model.net(ids, with_attention=True)
  assert logits.dtype == tf.float32 and len(maps) == 2
  for probs in maps:
    assert probs.dtype == tf.float32 and probs.shape == (3, 2, 16, 16)
    np.testing.assert_allclose(tf.reduce_sum(probs, axis=-1).numpy(), 1.0, atol=1e-5)
    assert not np.triu(probs.numpy(), k=1).any()  # causal: nothing above the diagonal
  # The same function as in float32, to bfloat16's precision.
  expected = reference.net(ids).numpy()
  assert np.abs(logits.numpy() - expected).max() < 0.1 * np.abs(expected).max()
  step, _ = model.net.step(ids[:, 0], tf.constant(0), model.net.init_cache(3))
  assert step.dtype == tf.float32
  images = model.generate(_rng(3), tf.constant([1, 2, 3]))
  assert images.dtype == tf.float32 and images.shape == (3, 8, 8, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_preview_shows_each_image_beside_the_centre_tokens_attention_in_the_first_and_last_layer(family):
  model = _model(tiny(family, conditional=True))
  _randomize(model.net)
  images, labels = _binary_images(2, seed=5), tf.constant([4, 5])
  panels = model.preview(images, labels, _rng(2))["attention_first_last_layer"].numpy()
  assert panels.shape == (2, 8, 24, 1)
  assert panels.min() >= -1.0 and panels.max() <= 1.0
  np.testing.assert_array_equal(panels[:, :, :8], images.numpy())
  # The 4x4 token grid's centre is token 2·4 + 2 = 10: the slot that predicts it is ImageGPT's slot 10 (which sees
  # tokens 0-9 in slots 1-10) and MaskGIT's slot 11 (after the class). Token j's cell shows the attention to the
  # slot that holds it: ImageGPT's slot j + 1 (the start token's share left out), MaskGIT's slot j + 1.
  query = 10 if family == "imagegpt" else 11
  _, maps = model.net(model.inputs(model.tokens.encode(images), labels), with_attention=True)
  for panel, probs in zip((panels[:, :, 8:16], panels[:, :, 16:]), (maps[0], maps[-1])):
    cells = panel[:, ::2, ::2, 0].reshape(2, 16)  # one value per token (2x2 pixels each)
    np.testing.assert_array_equal(np.repeat(np.repeat(cells.reshape(2, 4, 4), 2, 1), 2, 2), panel[..., 0])
    row = probs.numpy()[:, :, query, :].mean(axis=1)  # heads averaged
    held = np.concatenate([row[:, 1:16], np.zeros([2, 1])], axis=1) if family == "imagegpt" else row[:, 1:17]
    np.testing.assert_allclose(cells, held / held.max(axis=1, keepdims=True) * 2.0 - 1.0, atol=1e-5)
    if family == "imagegpt":
      assert (cells[:, 10:] == -1.0).all()  # tokens 10-15 are not seen by the slot that predicts token 10


def test_at_the_initial_weights_imagegpts_preview_shows_even_attention_on_the_tokens_before_the_centre():
  model = _model(tiny())  # N(0, 0.02) weights: near-uniform attention over the 11 visible slots
  panels = model.preview(_binary_images(2, seed=6), None, _rng(2))["attention_first_last_layer"].numpy()
  for panel in (panels[:, :, 8:16], panels[:, :, 16:]):
    cells = panel[:, ::2, ::2, 0].reshape(2, 16)
    assert (cells[:, :10] > 0.9).all() and (cells[:, 10:] == -1.0).all(), cells


# ---- settings and sampling options

@pytest.mark.parametrize("family,key,value,fragment", [
    ("imagegpt", "model.vocab_size", 7, "--config.model.vocab_size"),
    ("maskgit", "model.vocab_size", 7, "--config.model.vocab_size"),
    ("imagegpt", "model.width", 33, "--config.model.width"),
    ("maskgit", "model.heads", 3, "--config.model.heads"),
    ("imagegpt", "model.tokens", "vq", "--config.model.vq_workdir"),
    ("imagegpt", "model.tokens", "bpe", "--config.model.tokens"),
    ("imagegpt", "model.levels", 1, "--config.model.levels"),
    ("imagegpt", "model.patch", 3, "--config.model.patch"),
    ("imagegpt", "channels", 3, "vocabulary"),  # with levels 4 below: 4^12 tokens
    ("imagegpt", "model.dropout", 1.0, "--config.model.dropout"),
    ("imagegpt", "model.optimizer", "rmsprop", "--config.model.optimizer"),
    ("imagegpt", "model.context", -1, "--config.model.context"),
    ("imagegpt", "model.top_k", -1, "--config.model.top_k"),
    ("imagegpt", "model.top_p", 0.0, "--config.model.top_p"),
    ("maskgit", "model.decode_steps", 0, "--config.model.decode_steps"),
    ("maskgit", "model.choice_temperature", -1.0, "--config.model.choice_temperature"),
    ("imagegpt", "model.top_k", 17, "--config.model.top_k=17 must be in [0, 16]"),  # the vocabulary is 16
    ("maskgit", "model.temperature", 0.0, "--config.model.temperature"),  # MaskGIT draws at a positive temperature
])
def test_bad_settings_are_one_line_errors(family, key, value, fragment):
  config = tiny(family, levels=4) if key == "channels" else tiny(family)
  section, leaf = (config.model, key[6:]) if key.startswith("model.") else (config, key)
  section[leaf] = value
  with pytest.raises(UserError) as error:
    rundir.prepare_config(config)
  assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_vocab_size_equal_to_the_tokens_is_accepted():
  assert _model(tiny(vocab_size=16)).vocab == 16


def test_a_context_shorter_than_an_image_is_a_one_line_error_when_imagegpt_is_built():
  with pytest.raises(UserError) as error:
    _model(tiny(context=8))  # 16 tokens per image
  assert "--config.model.context" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("family,options,fragment", [
    ("imagegpt", {"top_k": 17}, "--top_k"),
    ("imagegpt", {"top_k": -1}, "--top_k"),
    ("imagegpt", {"temperature": -0.5}, "--temperature"),
    ("imagegpt", {"top_p": 0.0}, "--top_p"),
    ("imagegpt", {"top_p": 1.5}, "--top_p"),
    ("imagegpt", {"truncation": 0.7}, "--truncation"),
    ("imagegpt", {"steps": 4}, "--steps"),
    ("maskgit", {"temperature": 0.0}, "--temperature"),
    ("maskgit", {"steps": 0}, "--steps"),
    ("maskgit", {"choice_temperature": -1.0}, "--choice_temperature"),
    ("maskgit", {"top_k": 4}, "--top_k"),
])
def test_bad_sampling_options_are_one_line_errors(family, options, fragment):
  model = _model(tiny(family))
  with pytest.raises(UserError) as error:
    model.check_sampling_options(**options)
  assert fragment in str(error.value) and "\n" not in str(error.value)
  model.check_sampling_options()  # the defaults are good
  model.check_sampling_options(temperature=0.5)
