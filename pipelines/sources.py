"""Data sources, named by one spec string (``config.data``), and how each becomes per-replica batches.

  embedded:mnist[:train|test|all]  5,000 real MNIST digits stored in pipelines/data (pipelines.embedded)
  embedded:mnist-a|mnist-b[:split] two disjoint halves of them, B's strokes thickened (a translation task)
  folder:DIR                       png, jpeg, webp, bmp and gif files under DIR, recursively (local or gs://);
                                   with input.folder_labels, the first sub-folder name is the class
  tfrecord:DIR_OR_GLOB             records written by ``python -m pipelines.prepare`` (local or gs://)
  tfds:NAME[:SPLIT]                a TensorFlow Datasets dataset (split default "train"), under
                                   input.tfds_data_dir (may be gs://)
  unpaired:SPEC_A|SPEC_B           two domains of unpaired images (CycleGAN), each any spec above, e.g.
                                   unpaired:embedded:mnist-a|embedded:mnist-b or
                                   unpaired:tfds:cycle_gan/horse2zebra:trainA|tfds:cycle_gan/horse2zebra:trainB;
                                   batches also hold "image_b" and "label_b" (see UnpairedSource)

Every source gives a ``DataInfo`` and builds, for one input pipeline (``InputLayout``), a dataset of per-replica
batches ``{"image": float32 [b, H, W, C] in [-1, 1], "label": int32 [b]}`` at any training resolution up to the
stored one, so a progressive GAN rebuilds its input at each new resolution from the same source.

Order and resume:
  - In-memory sources (embedded, and any source with input.cache) use ``input.indexed_batches``: global step g
    reads stream positions [g*B, (g+1)*B) of a seeded per-epoch permutation, for any number of replicas and
    workers, so resume is exact.
  - File sources shard their files over the input pipelines (examples, when there are fewer files than
    pipelines), shuffle the file order every epoch and the examples in a buffer, both seeded, and interleave
    files in a fixed order. A resumed run skips the examples the earlier steps consumed before decoding them:
    a deterministic skip, exact unless input.deterministic is off or a folder holds undecodable files.
"""

import dataclasses
import os

from absl import logging
import numpy as np
import tensorflow as tf

from genscale.errors import UserError, require
from pipelines import embedded
from pipelines import input as input_lib
from pipelines import records
from pipelines import transforms
from pipelines.source import ArraySource, DataInfo, InputOptions, Source, fit_uint8, model_transform

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


def _finish(batches, layout, options, flip, seed, start_step, transform_batch):
  """Per-replica batches of (uint8 images, labels) -> flipped, transformed model batches, prefetched.

  Flips depend on the seed and the example's position in this pipeline's stream, so a resumed run flips the
  same examples.
  """
  positions_from = int(start_step) * layout.per_replica_batch * layout.replicas_per_pipeline

  def per_batch(position, example):
    images, labels = example
    if flip:
      images = transforms.flip_where(images, input_lib.flip_mask(position, seed))
    return {"image": transform_batch(images), "label": tf.cast(labels, tf.int32)}

  dataset = batches.enumerate(positions_from // layout.per_replica_batch)
  dataset = dataset.map(lambda i, ex: per_batch(i * layout.per_replica_batch + tf.range(
      layout.per_replica_batch, dtype=tf.int64), ex), num_parallel_calls=tf.data.AUTOTUNE)
  data_options = tf.data.Options()
  data_options.deterministic = options.deterministic
  return dataset.with_options(data_options).prefetch(tf.data.AUTOTUNE)


def _shard_and_shuffle(items, layout, seed):
  """This pipeline's share of ``items`` (files or examples) for one epoch, in a seeded order that changes every
  epoch when the result is repeated. Returns (dataset, sharded); unsharded when there are fewer items than
  pipelines, and the caller then shards the examples."""
  count = int(items.cardinality())
  sharded = count >= layout.num_pipelines
  if sharded and layout.num_pipelines > 1:
    items = items.shard(layout.num_pipelines, layout.pipeline_id)
    count = int(items.cardinality())
  return items.shuffle(max(count, 1), seed=seed, reshuffle_each_iteration=True), sharded


class FolderSource(Source):
  """Image files under a directory, decoded on the fly (or once, with input.cache)."""

  def __init__(self, spec, root, options):
    self.options = options
    require(root, "--config.data=folder: needs a directory, e.g. folder:/data/faces")
    if not tf.io.gfile.isdir(root):
      raise UserError(f"data path {root} does not exist or is not a directory (--config.data={spec})")
    paths = []
    for directory, _, names in tf.io.gfile.walk(root):
      paths += [os.path.join(directory, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    paths.sort()
    require(paths, f"{root} holds no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files (--config.data={spec})")
    label_names = ()
    labels = [-1] * len(paths)
    if options.folder_labels:
      classes = [os.path.relpath(p, root).split(os.sep)[0] for p in paths]
      loose = [p for p, c in zip(paths, classes) if c == os.path.basename(p)]
      if loose:
        raise UserError(f"input.folder_labels needs every image in a class sub-folder of {root}; {loose[0]} is not")
      label_names = tuple(sorted(set(classes)))
      labels = [label_names.index(c) for c in classes]
    self.paths, self.labels = paths, labels
    self.info = DataInfo(spec=spec, count=len(paths), resolution=0, channels=0, num_classes=len(label_names),
                         label_names=label_names)

  def _decode(self, resolution, channels):
    crop = self.options.crop

    def decode(path, label):
      image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
      return fit_uint8(image, resolution, channels, crop), label

    return decode

  def _items(self):
    return tf.data.Dataset.from_tensor_slices((self.paths, np.asarray(self.labels, np.int32)))

  def examples_at(self, resolution, channels):
    """Every (uint8 image, label) once, in file order, at ``resolution``; undecodable files are skipped."""
    return self._items().map(self._decode(resolution, channels), num_parallel_calls=tf.data.AUTOTUNE,
                             deterministic=True).ignore_errors(log_warning=True)

  def stream(self, layout, seed, start_step, resolution, channels, flip, shuffle):
    del shuffle  # the file order is always shuffled; a folder source has no example buffer
    items, sharded = _shard_and_shuffle(self._items(), layout, seed)
    items = items.repeat()  # every epoch a new full permutation of the files
    if not sharded:
      items = items.shard(layout.num_pipelines, layout.pipeline_id)
    items = items.skip(int(start_step) * layout.per_replica_batch * layout.replicas_per_pipeline)
    examples = items.map(self._decode(resolution, channels), num_parallel_calls=tf.data.AUTOTUNE,
                         deterministic=self.options.deterministic).ignore_errors(log_warning=True)
    return _finish(examples.batch(layout.per_replica_batch, drop_remainder=True), layout, self.options, flip, seed,
                   start_step, transforms.to_model_range)


class TFRecordSource(Source):
  """Records written by ``pipelines.prepare``: raw uint8 pixels, cheap to read, downsampled on the fly."""

  def __init__(self, spec, pattern, options):
    self.options = options
    require(pattern, "--config.data=tfrecord: needs a directory or glob, e.g. tfrecord:/data/faces-256")
    if tf.io.gfile.isdir(pattern):
      directory = pattern
      files = tf.io.gfile.glob(os.path.join(pattern, "*.tfrecord"))
    else:
      # The metadata and the bad-file report sit beside the shards, so DIR/* matches them too.
      files = [f for f in tf.io.gfile.glob(pattern) if os.path.basename(f) not in records.SIDECARS]
      require(files, f"--config.data={spec}: {pattern} matches no files")
      directory = os.path.dirname(files[0])
    meta = records.read_metadata(directory)
    if tf.io.gfile.isdir(pattern):
      files = [os.path.join(directory, s["file"]) for s in meta["shards"]]
    require(files, f"{directory} holds no .tfrecord shards")
    self.files = sorted(files)
    for path in self.files:
      if not tf.io.gfile.exists(path):
        raise UserError(f"{path} is listed in {directory}/{records.METADATA} but missing")
      try:
        next(iter(tf.data.TFRecordDataset(path).take(1)), None)
      except tf.errors.OpError as e:
        raise UserError(f"can't read TFRecord file {path}: {e.message.splitlines()[0]}") from e
    self.height, self.width = meta["resolution"]
    self.channels = int(meta["channels"])
    names = tuple(meta.get("label_names") or ())
    self.info = DataInfo(spec=spec, count=int(meta["count"]), resolution=self.height, channels=self.channels,
                         num_classes=len(names), label_names=names, width=self.width)

  def check_resolution(self, resolution):
    height, width = resolution
    if height > self.height or width > self.width:
      raise UserError(f"{self.info.spec} holds {self.height}x{self.width} images, smaller than the requested "
                      f"{height}x{width}; prepare the data at that resolution (python -m pipelines.prepare "
                      f"--resolution={height if height == width else f'{height}x{width}'}) or lower "
                      "--config.resolution")

  def examples_at(self, resolution, channels):
    """Every (uint8 image, label) once, in shard order, at ``resolution``."""
    crop, height, width, stored = self.options.crop, self.height, self.width, self.channels

    def to_uint8(serialized):
      images, labels = records.parse_batch(serialized, height, width, stored)
      return fit_uint8(images, resolution, channels, crop), labels

    return tf.data.TFRecordDataset(self.files).batch(256).map(to_uint8).unbatch()

  def stream(self, layout, seed, start_step, resolution, channels, flip, shuffle):
    files, sharded = _shard_and_shuffle(tf.data.Dataset.from_tensor_slices(self.files), layout, seed)
    serialized = files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(self.files), 8), block_length=1,
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if not sharded:
      serialized = serialized.shard(layout.num_pipelines, layout.pipeline_id)
    if shuffle:
      # Shuffle within an epoch, then repeat: every example once per epoch, a new order every epoch.
      serialized = serialized.shuffle(self.options.shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    serialized = serialized.repeat().skip(int(start_step) * layout.per_replica_batch * layout.replicas_per_pipeline)
    # Parse whole batches: one vectorised op instead of one per example.
    height, width, stored = self.height, self.width, self.channels
    batches = serialized.batch(layout.per_replica_batch, drop_remainder=True).map(
        lambda b: records.parse_batch(b, height, width, stored), num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(batches, layout, self.options, flip, seed, start_step,
                   model_transform(resolution, channels, self.options.crop))


class TFDSSource(Source):
  """A TensorFlow Datasets dataset. Images are decoded after the resume skip, not before."""

  def __init__(self, spec, rest, options):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.options = options
    name, _, split = rest.partition(":")
    require(name, "--config.data=tfds: needs a dataset name, e.g. tfds:mnist or tfds:cifar10:test")
    self.split = split or "train"
    try:
      self.builder = tfds.builder(name, data_dir=options.tfds_data_dir)
    except Exception as e:  # pylint: disable=broad-except
      raise UserError(f"unknown TFDS dataset {name!r} (--config.data={spec}): {str(e).splitlines()[0]}") from e
    if not self._prepared():
      if not options.tfds_download:
        raise UserError(f"TFDS dataset {name} is not prepared in {self.builder.data_dir}; build it with `tfds build "
                        f"{name}` or set --config.input.tfds_download=true")
      self.builder.download_and_prepare()
    features = self.builder.info.features
    require(options.image_key in features, f"TFDS dataset {name} has no feature {options.image_key!r}; set "
            f"--config.input.image_key to one of {', '.join(features.keys())}")
    image = features[options.image_key]
    label = features[options.label_key] if options.label_key and options.label_key in features else None
    names = tuple(label.names) if label is not None and hasattr(label, "names") else ()
    splits = self.builder.info.splits
    if splits:
      if self.split not in splits:
        raise UserError(f"TFDS dataset {name} has no split {self.split!r}: choose one of {', '.join(splits.keys())}")
      count = int(splits[self.split].num_examples)
    else:  # no split metadata (as under tfds.testing.mock_data): count by reading
      count = int(self.builder.as_dataset(split=self.split).reduce(0, lambda n, _: n + 1))
    height, width, channels = (image.shape + (None, None, None))[:3]
    self.has_labels = label is not None
    self.info = DataInfo(spec=spec, count=count, resolution=int(height or 0), channels=int(channels or 0),
                         num_classes=len(names), label_names=names, width=int(width or 0))

  def _prepared(self):
    return tf.io.gfile.exists(self.builder.data_dir) and bool(tf.io.gfile.glob(
        os.path.join(self.builder.data_dir, "*.json")))

  def _read(self, layout=None, seed=None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    context = None
    if layout is not None and layout.num_pipelines > 1:
      context = tf.distribute.InputContext(layout.num_pipelines, layout.pipeline_id, layout.num_replicas)
    read_config = tfds.ReadConfig(input_context=context, shuffle_seed=seed, interleave_cycle_length=4,
                                  shuffle_reshuffle_each_iteration=True)
    decoders = {self.options.image_key: tfds.decode.SkipDecoding()}
    ds = self.builder.as_dataset(split=self.split, shuffle_files=seed is not None, read_config=read_config,
                                 decoders=decoders)
    image_key, label_key, has_labels = self.options.image_key, self.options.label_key, self.has_labels
    return ds.map(lambda ex: (ex[image_key], ex[label_key] if has_labels else tf.constant(-1, tf.int64)))

  def _decode(self, resolution, channels):
    crop = self.options.crop

    def decode(encoded, label):
      image = encoded if encoded.dtype == tf.uint8 else tf.io.decode_image(encoded, expand_animations=False)
      return fit_uint8(image, resolution, channels, crop), tf.cast(label, tf.int32)

    return decode

  def examples_at(self, resolution, channels):
    return self._read().map(self._decode(resolution, channels), num_parallel_calls=tf.data.AUTOTUNE)

  def stream(self, layout, seed, start_step, resolution, channels, flip, shuffle):
    examples = self._read(layout, seed)
    if shuffle:
      examples = examples.shuffle(self.options.shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    examples = examples.repeat().skip(int(start_step) * layout.per_replica_batch * layout.replicas_per_pipeline)
    examples = examples.map(self._decode(resolution, channels), num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=self.options.deterministic)
    return _finish(examples.batch(layout.per_replica_batch, drop_remainder=True), layout, self.options, flip, seed,
                   start_step, transforms.to_model_range)


def _embedded(spec, rest, options):
  parts = rest.split(":") if rest else []
  name = parts[0] if parts else "mnist"
  names = ("mnist", *embedded.DOMAINS)
  if name not in names:
    raise UserError(f"unknown embedded dataset {name!r} in --config.data={spec}: use one of "
                    + ", ".join(f"embedded:{n}" for n in names))
  split = parts[1] if len(parts) > 1 else "train"
  images, labels = embedded.load(split) if name == "mnist" else embedded.load_domain(name, split)
  return ArraySource(spec, images, labels, embedded.LABEL_NAMES, options)


class UnpairedSource(Source):
  """Two domains of images that are not paired (``unpaired:SPEC_A|SPEC_B``), read together for translation.

  Each domain is a source of its own, read as it would be alone (sharded over the input pipelines, shuffled,
  resumed at the step's position), with its own order (domain B's seed is offset from A's), so the i-th images of
  the two domains are an arbitrary pair that changes every epoch. A batch is A's ``{"image", "label"}`` with B's
  as ``"image_b"`` and ``"label_b"``. ``info`` is domain A's with ``domain_b`` set to B's info; ``arrays`` and
  ``examples_at`` read domain A.
  """

  B_SEED_OFFSET = 0xB

  def __init__(self, spec, rest, options):
    first, bar, second = rest.partition("|")
    require(bar and first and second and "|" not in second,
            f"--config.data={spec}: give two domains, unpaired:SPEC_A|SPEC_B, e.g. "
            "unpaired:embedded:mnist-a|embedded:mnist-b")
    require(not first.startswith("unpaired:") and not second.startswith("unpaired:"),
            f"--config.data={spec}: a domain of unpaired: can't be unpaired: itself")
    self.options = options
    self.a, self.b = open_source(first, options), open_source(second, options)
    channels = (self.a.info.channels, self.b.info.channels)
    require(0 in channels or channels[0] == channels[1],
            f"--config.data={spec}: domain A has {channels[0]} channels and domain B {channels[1]}; a translator maps "
            "images with one channel count: pick domains that match (or a folder source, which converts)")
    self.info = dataclasses.replace(self.a.info, spec=spec, domain_b=self.b.info)

  def check_resolution(self, resolution):
    self.a.check_resolution(resolution)
    self.b.check_resolution(resolution)

  def dataset(self, layout, *, seed, start_step, resolution, channels, flip=False, shuffle=True):
    common = dict(start_step=start_step, resolution=resolution, channels=channels, flip=flip, shuffle=shuffle)
    domains = (self.a.dataset(layout, seed=seed, **common),
               self.b.dataset(layout, seed=seed + self.B_SEED_OFFSET, **common))
    both = lambda a, b: {**a, "image_b": b["image"], "label_b": b["label"]}
    return tf.data.Dataset.zip(domains).map(both).prefetch(tf.data.AUTOTUNE)

  def examples_at(self, resolution, channels):
    return self.a.examples_at(resolution, channels)

  def arrays(self, resolution, channels):
    return self.a.arrays(resolution, channels)


_KINDS = {
    "embedded": _embedded,
    "folder": FolderSource,
    "tfrecord": TFRecordSource,
    "tfds": TFDSSource,
    "unpaired": UnpairedSource,
}


def open_source(spec, options=None):
  """Opens the source named by a spec string. Raises UserError naming what to change."""
  kind, _, rest = str(spec).partition(":")
  if kind not in _KINDS:
    raise UserError(f"unknown data source {spec!r} in --config.data: use one of "
                    + ", ".join(f"{k}:..." for k in _KINDS))
  options = options if isinstance(options, InputOptions) else InputOptions.from_config(options)
  source = _KINDS[kind](spec, rest, options)
  logging.info("opened %s: %d examples", spec, source.info.count)
  return source
