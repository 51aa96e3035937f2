"""CycleGAN: the image pool, instance normalisation, the losses against hand values, the schedule, two-domain data,
resume, and the command line (train, translate, evaluate)."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import rundir
from models import base
from models import layers
from models.cyclegan import model as cyclegan_model
from models.cyclegan import networks
from models.cyclegan.pool import ImagePool
from pipelines import embedded
import pipelines

DATA = "unpaired:embedded:mnist-a|embedded:mnist-b"


def tiny(**model):
  from launch.configs import cyclegan  # pylint: disable=g-import-not-at-top
  c = cyclegan.get_config("cpu")
  c.update(resolution=16, batch_size=8, steps=4, log_every=2, checkpoint_every=2, sample_every=4)
  c.runtime.steps_per_loop = 1
  c.model.update(**{"g_width": 4, "d_width": 4, "residual_blocks": 1, "pool_size": 12, **model})
  return c


def _build(config):
  import models  # pylint: disable=g-import-not-at-top
  config = rundir.prepare_config(config)
  return models.build(config, pipelines.open_source(config.data).info, base.Hardware())


def _rng(step, batch, replica=0, replicas=1):
  return base.BatchRng(tf.stack([tf.constant(7, tf.int64), tf.cast(step, tf.int64)]), replica, batch, replicas)


def _images(count, seed, side=4):
  return tf.random.stateless_uniform([count, side, side, 1], [seed, 1], -1.0, 1.0)


def _query_and_update(pool, images, step, replicas=1):
  """One step of the pool over a global batch split over ``replicas``: (returned images, the summed writes)."""
  per = images.shape[0] // replicas
  outs, sums = [], {}
  for r in range(replicas):
    out, stats = pool.query(images[r * per:(r + 1) * per], _rng(step, per, r, replicas), "pool")
    outs.append(out)
    for name, stat in stats.items():
      sums[name] = sums.get(name, 0.0) + stat.total
  pool.update(sums, "pool")
  return tf.concat(outs, 0), sums


# ---- the image pool


def test_the_pool_returns_its_input_until_full_then_swaps_about_half():
  pool = ImagePool(6, (4, 4, 1), "pool")
  first = _images(4, 1)
  out, _ = _query_and_update(pool, first, 0)
  np.testing.assert_array_equal(out, first)
  assert int(pool.count) == 4
  np.testing.assert_array_equal(pool.images[:4], first)
  second = _images(4, 2)  # fills slots 4 and 5; the last two images find the pool full within the step
  out, _ = _query_and_update(pool, second, 1)
  np.testing.assert_array_equal(out, second)
  assert int(pool.count) == 6
  np.testing.assert_array_equal(pool.images[4:], second[:2])
  swapped = 0
  for step in range(2, 10):
    batch = _images(32, 10 + step)
    out = _query_and_update(pool, batch, step)[0].numpy()
    swapped += int(np.sum(np.any(out != batch.numpy(), axis=(1, 2, 3))))
  assert 96 <= swapped <= 160, swapped  # 256 draws of probability 1/2: mean 128, sd 8


def test_a_swapped_image_comes_from_the_pool_and_takes_its_slot():
  pool = ImagePool(5, (4, 4, 1), "pool")
  _query_and_update(pool, _images(5, 1), 0)
  before = pool.images.numpy()
  batch = _images(16, 2)
  out, writes = _query_and_update(pool, batch, 1)
  slots = np.round(writes["pool/slots"].numpy()).astype(int) - 1
  after = pool.images.numpy()
  assert (slots >= 0).any() and (slots < 0).any()
  for i, slot in enumerate(slots):
    if slot < 0:  # kept: returned as it is
      np.testing.assert_array_equal(out[i], batch[i])
    else:  # swapped: the stored image comes back, the new one is stored (the last writer of a slot stays)
      np.testing.assert_array_equal(out[i], before[slot])
      if i == max(j for j, s in enumerate(slots) if s == slot):
        np.testing.assert_array_equal(after[slot], batch[i])
  untouched = sorted(set(range(5)) - set(slots))
  np.testing.assert_array_equal(after[untouched], before[untouched])


def test_the_pool_is_the_same_however_the_batch_is_split():
  pools = [ImagePool(10, (4, 4, 1), "pool") for _ in range(2)]
  for step in range(4):
    batch = _images(8, step)
    one, _ = _query_and_update(pools[0], batch, step, replicas=1)
    two, _ = _query_and_update(pools[1], batch, step, replicas=2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(pools[0].images, pools[1].images)
  assert int(pools[0].count) == 10


def test_the_pool_compiles_with_xla_to_static_shapes():
  pool = ImagePool(6, (4, 4, 1), "pool")


  def query(x, step):
    out, stats = pool.query(x, _rng(step, 4), "pool")
    return out, {name: stat.total for name, stat in stats.items()}

  out, stats = tf.function(query, jit_compile=True)(_images(4, 3), tf.constant(0, tf.int64))
  assert out.shape == (4, 4, 4, 1) and stats["pool/images"].shape == (4, 4, 4, 1)
  off = ImagePool(0, (4, 4, 1), "off")
  x = _images(4, 3)
  assert off.query(x, _rng(0, 4), "off")[0] is x


# ---- layers, losses and schedule


def test_instance_norm_gives_each_example_and_channel_zero_mean_and_unit_variance():
  x = tf.random.stateless_normal([3, 5, 6, 4], [1, 2]) * [1.0, 10.0, 0.1, 3.0] + [0.0, 5.0, -2.0, 7.0]
  y = layers.instance_norm(x).numpy()
  np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.var(axis=(1, 2)), 1.0, atol=2e-3)  # the 0.1-scaled channel: v / (v + 1e-5)
  assert layers.instance_norm(tf.cast(x, tf.bfloat16)).dtype == tf.bfloat16
  one = layers.instance_norm(x[:1]).numpy()  # per example: the others don't change it
  np.testing.assert_allclose(one, y[:1], atol=1e-6)


def test_reflection_padding_keeps_a_constant_image_constant_to_the_border():
  conv = layers.Conv2D(1, 1, 3, layers.Keys(0), padding="REFLECT", use_bias=False)
  conv.w.assign(tf.ones([3, 3, 1, 1]))
  out = conv(tf.fill([1, 5, 5, 1], 2.0)).numpy()
  np.testing.assert_allclose(out, 18.0)  # zero padding would give 8 at the corners
  with pytest.raises(ValueError, match="odd kernel"):
    layers.Conv2D(1, 1, 4, layers.Keys(0), padding="REFLECT")


def test_the_patch_discriminator_sees_the_papers_fields():
  assert networks.receptive_field(3) == 70 and networks.receptive_field(2) == 34
  d = networks.PatchDiscriminator(1, 4, 2, layers.Keys(0), tf.float32, "d")
  assert d(tf.zeros([2, 32, 32, 1])).shape == (2, 8, 8)


def test_the_losses_match_hand_values():
  model = _build(tiny(pool_size=0, identity_weight=0.5))  # the paper's λ_id (the cpu variant has none)
  a, b = _images(2, 1, 16), _images(2, 2, 16)
  model.generator_ab = lambda x: 0.5 * x
  model.generator_ba = lambda x: x + 0.25
  model.discriminator_a = lambda x: tf.fill([x.shape[0], 3, 3], 0.2) + tf.reduce_mean(x, [1, 2, 3])[:, None, None]
  model.discriminator_b = lambda x: tf.fill([x.shape[0], 3, 3], -0.4)
  loss, metrics = model.generator_loss({"image": a, "image_b": b}, _rng(0, 2))
  a_, b_ = a.numpy(), b.numpy()
  l1 = lambda x, y: np.abs(x - y).mean(axis=(1, 2, 3))
  adversarial = (-0.4 - 1) ** 2 + (0.2 + (b_ + 0.25).mean(axis=(1, 2, 3)) - 1) ** 2
  cycle = l1(0.5 * a_ + 0.25, a_) + l1(0.5 * (b_ + 0.25), b_)
  identity = l1(0.5 * b_, b_) + l1(a_ + 0.25, a_)
  np.testing.assert_allclose(metrics["G/cycle_l1"], cycle, rtol=1e-5)
  np.testing.assert_allclose(loss, adversarial + 10.0 * cycle + 5.0 * identity, rtol=1e-5)
  d_loss, _ = model.discriminator_loss({"image": a, "image_b": b}, _rng(0, 2))
  real_a = 0.2 + a_.mean(axis=(1, 2, 3))
  fake_a = 0.2 + (b_ + 0.25).mean(axis=(1, 2, 3))
  expected = 0.5 * (-0.4 - 1) ** 2 + 0.5 * 0.4**2 + 0.5 * (real_a - 1) ** 2 + 0.5 * fake_a**2
  np.testing.assert_allclose(d_loss, expected, rtol=1e-5)
  no_identity = _build(tiny(pool_size=0, identity_weight=0.0))
  assert "G/identity_l1" not in no_identity.generator_loss({"image": a, "image_b": b}, _rng(0, 2))[1]


def test_the_learning_rate_holds_for_half_the_run_then_falls_to_zero():
  schedule = cyclegan_model.ConstantThenLinear(2e-4, 50, 100)
  values = [float(schedule(s)) for s in (0, 25, 50, 75, 100, 120)]
  np.testing.assert_allclose(values, [2e-4, 2e-4, 2e-4, 1e-4, 0.0, 0.0], atol=1e-12)
  config = tiny()
  config.steps = 40
  optimizer = _build(config).optimizers["g"]  # the schedule spans the run's steps
  rates = []
  for step in (0, 20, 30):
    optimizer.iterations.assign(step)
    rates.append(float(optimizer.learning_rate))
  np.testing.assert_allclose(rates, [2e-4, 2e-4, 1e-4], rtol=1e-6)


# ---- data


def test_the_two_embedded_domains_split_the_digits_and_thicken_b():
  digits, labels = embedded.load("test")
  a, a_labels = embedded.load_domain("mnist-a", "test")
  b, b_labels = embedded.load_domain("mnist-b", "test")
  np.testing.assert_array_equal(a, digits[0::2])
  np.testing.assert_array_equal(b, embedded.thicken(digits[1::2]))
  np.testing.assert_array_equal(np.bincount(a_labels), np.bincount(b_labels))
  assert (b >= digits[1::2]).all() and (b > 127).mean() > 1.6 * (digits[1::2] > 127).mean()
  one = np.zeros([1, 5, 5, 1], np.uint8)
  one[0, 2, 2, 0] = 200
  assert embedded.thicken(one)[0, 1:4, 1:4, 0].min() == 200 and embedded.thicken(one).sum() == 9 * 200
  np.testing.assert_array_equal(embedded.thin(embedded.thicken(one)), one)


def test_an_unpaired_source_batches_both_domains():
  source = pipelines.open_source(DATA)
  assert source.info.domain_b.count == 2250 and source.info.count == 2250
  layout = pipelines.InputLayout(8)
  batch = next(iter(source.dataset(layout, seed=0, start_step=0, resolution=32, channels=1)))
  assert set(batch) == {"image", "label", "image_b", "label_b"} and batch["image_b"].shape == (8, 32, 32, 1)
  thick = lambda x: float(np.mean(x > 0.0))
  assert thick(batch["image_b"]) > 1.5 * thick(batch["image"])
  resumed = next(iter(source.dataset(layout, seed=0, start_step=3, resolution=32, channels=1)))
  third = list(source.dataset(layout, seed=0, start_step=0, resolution=32, channels=1).take(4))[3]
  for key in batch:
    np.testing.assert_array_equal(resumed[key], third[key])
  assert pipelines.DataInfo.from_dict(dataclasses.asdict(source.info)) == source.info  # as a run stores it


def test_tfds_cycle_gan_domains_through_mock_data():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=8):
    source = pipelines.open_source("unpaired:tfds:cycle_gan/horse2zebra:trainA|tfds:cycle_gan/horse2zebra:trainB")
    batch = next(iter(source.dataset(pipelines.InputLayout(4), seed=0, start_step=0, resolution=16, channels=3)))
  assert batch["image"].shape == (4, 16, 16, 3) and batch["image_b"].shape == (4, 16, 16, 3)
  from evaluation import translation  # pylint: disable=g-import-not-at-top
  assert translation.heldout_domain("tfds:cycle_gan/horse2zebra:trainB") == "tfds:cycle_gan/horse2zebra:testB"


@pytest.mark.parametrize("spec,message", [
    ("unpaired:embedded:mnist-a", "give two domains"),
    ("unpaired:embedded:mnist-a|", "give two domains"),
    ("unpaired:embedded:mnist-a|unpaired:embedded:mnist-b|embedded:mnist", "give two domains"),
    ("unpaired:embedded:mnist-a|{rgb}", "domain A has 1 channels and domain B 3"),
    ("embedded:mnist-c", "use one of embedded:mnist, embedded:mnist-a, embedded:mnist-b"),
])
def test_bad_unpaired_specs_are_one_line_errors(tmp_path, spec, message):
  if "{rgb}" in spec:  # TFRecords store their channels (a folder's vary by file, and are converted)
    spec = spec.format(rgb=_rgb_records(tmp_path))
  with pytest.raises(UserError, match=message) as caught:
    pipelines.open_source(spec)
  assert "\n" not in str(caught.value)


def _rgb_records(tmp_path):
  from pipelines import records  # pylint: disable=g-import-not-at-top
  directory = str(tmp_path / "rgb")
  os.makedirs(directory)
  with tf.io.TFRecordWriter(f"{directory}/shard-00000-of-00001.tfrecord") as w:
    w.write(records.serialize(np.zeros([8, 8, 3], np.uint8), 0))
  records.write_metadata(directory, {"count": 1, "resolution": [8, 8], "channels": 3, "label_names": [],
                                     "shards": [{"file": "shard-00000-of-00001.tfrecord", "count": 1}]})
  return f"tfrecord:{directory}"


def test_one_domain_models_and_translators_refuse_the_other_kind_of_data(tiny_dcgan):
  tiny_dcgan.data = DATA
  with pytest.raises(UserError, match="only a translator"):
    _build(tiny_dcgan)
  config = tiny()
  config.data = "embedded:mnist"
  with pytest.raises(UserError, match="set --config.data=unpaired:SPEC_A"):
    _build(config)
  with pytest.raises(UserError, match="--config.model.decay_start"):
    _build(tiny(decay_start=1.5))


# ---- training


def _run_config(steps):
  config = tiny(decay_start=1.0)  # a constant rate: the schedule spans config.steps, which differs in a resume
  config.update(resolution=32, batch_size=4, steps=steps, sample_every=4, histogram_every=0)
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The workdir of a 4-step run at 32x32 from the command line (``_run_config(4)`` as flags): the 12-image pools
  fill in steps 0-2 and swap in step 3."""
  from tests.conftest import run_module  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("cyclegan") / "unbroken")
  flags = {"resolution": 32, "batch_size": 4, "steps": 4, "sample_every": 4, "histogram_every": 0, "log_every": 2,
           "checkpoint_every": 2, "runtime.steps_per_loop": 1, "model.g_width": 4, "model.d_width": 4,
           "model.residual_blocks": 1, "model.pool_size": 12, "model.decay_start": 1.0}
  done = run_module("launch.train", "--config=launch/configs/cyclegan.py:cpu", f"--workdir={workdir}",
                    *(f"--config.{k}={v}" for k, v in flags.items()))
  assert done.returncode == 0, done.stderr[-2000:]
  assert rundir.read_run(workdir)[0].to_dict() == rundir.prepare_config(_run_config(4)).to_dict()  # the same run
  return workdir


def _checkpoint_values(workdir):
  from launch import checkpoints  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(checkpoints.latest(workdir))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k}


def test_a_resumed_run_equals_the_unbroken_one(trained, tmp_path):
  from launch import loop  # pylint: disable=g-import-not-at-top
  loop.train(_run_config(2), str(tmp_path / "resumed"))
  loop.train(_run_config(4), str(tmp_path / "resumed"))
  unbroken, resumed = _checkpoint_values(trained), _checkpoint_values(str(tmp_path / "resumed"))
  assert any("generator_ab" in k for k in unbroken)
  assert unbroken["model/pool_b/count/.ATTRIBUTES/VARIABLE_VALUE"] == 12
  assert (np.abs(unbroken["model/pool_a/images/.ATTRIBUTES/VARIABLE_VALUE"]).max(axis=(1, 2, 3)) > 0).all()
  for key, value in unbroken.items():
    np.testing.assert_array_equal(resumed[key], value, err_msg=key)


def test_translate_and_evaluate_a_trained_run(trained, tmp_path):
  import io  # pylint: disable=g-import-not-at-top
  from evaluation.evaluator import EvalSettings  # pylint: disable=g-import-not-at-top
  from launch import scoring  # pylint: disable=g-import-not-at-top
  from tests.conftest import run_module  # pylint: disable=g-import-not-at-top
  for name in ("a_to_b_to_a", "b_to_a_to_b"):
    assert os.path.exists(os.path.join(trained, "samples", f"{name}_0000004.png")), name
  out = str(tmp_path / "grid.png")  # the command line is the point here: the one subprocess
  translated = run_module("launch.translate", f"--workdir={trained}", "--input=embedded:mnist:test", "--num=6",
                          "--cycle", f"--out={out}")
  assert translated.returncode == 0, translated.stderr[-2000:]
  from PIL import Image  # pylint: disable=g-import-not-at-top
  assert Image.open(out).size == (2 * (3 * 32 + 1) + 1, 3 * 33 + 1)  # 6 rows of 3 images in a 2-wide grid
  stream = io.StringIO()
  evaluator = scoring.evaluate_checkpoint(trained, EvalSettings(metrics="translation", nll_num=20), stream=stream,
                                          progress=False)
  values = evaluator.last_record["metrics"]
  assert "paired error" in stream.getvalue() and "embedded:mnist-a:test" in stream.getvalue()
  assert values["identity_baseline"] == pytest.approx(0.10, abs=0.02)  # thickening changes a tenth of the ink
  assert 0 <= values["label_agreement"] <= 1 and values["label_reference"] >= 0.9


def test_an_exported_translator_serves_both_directions_without_genscale(trained, tmp_path):
  from launch import serving  # pylint: disable=g-import-not-at-top
  run = rundir.load_run(trained)
  path = serving.export(run, str(tmp_path / "export"))
  loaded = tf.saved_model.load(path)
  assert set(loaded.signatures) == {"serving_default", "b_to_a"}
  digits = embedded.load("test")[0][:3]
  for name, direction in (("serving_default", "AtoB"), ("b_to_a", "BtoA")):
    out = loaded.signatures[name](images=tf.constant(digits))
    expected = serving.to_uint8(run.model.translate(tf.constant(digits, tf.float32) / 127.5 - 1.0, direction))
    np.testing.assert_array_equal(out["images"], expected)
    assert out["images_bytes"].shape == (3,)
  assert not serving.graph_ops(path) & serving.FORBIDDEN_OPS
  with pytest.raises(UserError, match="a translator is exported as a SavedModel"):
    serving.export(run, str(tmp_path / "tflite"), tflite=True)
