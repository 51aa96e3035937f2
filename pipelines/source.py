"""The data-source protocol, the information a model gets about its data, and the in-memory source.

Every source (pipelines/sources.py) is a ``Source``: it gives a ``DataInfo`` and builds, for one input pipeline,
batches of images in [-1, 1] at any resolution up to its stored one, decoded by the same ``fit`` chain.
"""

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from genscale.errors import require
from pipelines import input as input_lib
from pipelines import transforms


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What a model needs to know about its data."""
  spec: str
  count: int
  resolution: int  # stored height (0 when it varies, as in a folder of images)
  channels: int  # stored channels (0 when it varies)
  num_classes: int  # 0 when unlabelled
  label_names: tuple = ()
  width: int = 0  # stored width when it differs from the height
  domain_b: Optional["DataInfo"] = None  # unpaired two-domain data (pipelines.sources.UnpairedSource): domain B

  @classmethod
  def from_dict(cls, values):
    """The inverse of ``dataclasses.asdict`` (as stored in a run's data_info.json)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    if values.get("domain_b") is not None:
      values["domain_b"] = cls.from_dict(values["domain_b"])
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class InputOptions:
  """Pipeline settings (the ``input`` config section)."""
  crop: str = "center"  # fit the aspect ratio: center (crop) | pad (black borders) | none (stretch)
  shuffle_buffer: int = 10_000  # examples in the shuffle buffer of file sources
  cache: bool = False  # decode every image once and keep the dataset in memory (exact order and resume)
  deterministic: bool = True  # fixed element order (needed for exact resume); off trades order for speed
  folder_labels: bool = False  # folder source: the first sub-folder name is the class label
  tfds_data_dir: Optional[str] = None  # TFDS data directory (local or gs://)
  tfds_download: bool = True  # let TFDS download and prepare a dataset that isn't there yet
  image_key: str = "image"  # TFDS feature names
  label_key: str = "label"
  # Semi-supervised runs: only N examples keep their labels in training batches, spread evenly over the classes
  # (the first of each class in the source's fixed order); every other example has label -1 (unlabelled).
  # None: every label. Reads the source into memory, like cache.
  labelled: Optional[int] = None

  @classmethod
  def from_config(cls, section):
    if section is None:
      return cls()
    values = dict(section.to_dict() if hasattr(section, "to_dict") else section)
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    require(not unknown, f"unknown --config.input keys: {', '.join(sorted(unknown))}")
    options = cls(**values)
    require(options.crop in transforms.CROP_MODES,
            f"unknown --config.input.crop={options.crop!r}: choose one of {', '.join(transforms.CROP_MODES)}")
    require(options.labelled is None or int(options.labelled) >= 0,
            f"--config.input.labelled={options.labelled} must be a number of examples (or unset: every label)")
    return options


def fit(images, resolution, channels, crop):
  """An image or batch at any size -> float32 at ``resolution`` (h, w) with ``channels``, values still 0..255: the
  channel conversion, the aspect-ratio fit (``crop``) and the resize, in that order, for every source."""
  return transforms.resize(transforms.fit_aspect(transforms.to_channels(images, channels), resolution, crop),
                           resolution)


def fit_uint8(images, resolution, channels, crop):
  """``fit`` rounded back to uint8, with a static image shape: how file sources decode an image or a batch."""
  images = fit(images, resolution, channels, crop)
  images = tf.ensure_shape(images, images.shape[:-3].concatenate([*resolution, channels]))
  return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)


def model_transform(resolution, channels, crop):
  """uint8 image batch at any size -> float32 batch in [-1, 1] at ``resolution`` (h, w) and ``channels``."""
  return lambda batch: transforms.to_model_range(fit(batch, resolution, channels, crop))


class Source:
  """What every data source provides to the input pipeline.

  Attributes:
    info: the ``DataInfo``.
    options: the ``InputOptions``.

  ``dataset(layout, *, seed, start_step, resolution, channels, flip, shuffle)`` is this input pipeline's stream of
  per-replica batches from global step ``start_step`` on; ``examples_at(resolution, channels)`` every (uint8 image,
  label) once, in a fixed order. A file source implements ``examples_at`` and ``stream`` (its own pipeline);
  ``dataset`` adds the resolution check and, with ``input.cache``, the one in-memory path shared by all of them.
  """

  info = None
  options = InputOptions()

  def check_resolution(self, resolution):
    """Raises UserError when the source can't give images at ``resolution`` (h, w). Default: any size."""
    del resolution

  def dataset(self, layout, *, seed, start_step, resolution, channels, flip=False, shuffle=True):
    resolution = transforms.parse_resolution(resolution)
    self.check_resolution(resolution)
    if self.options.cache or self.options.labelled is not None:
      return self._in_memory(resolution, channels).dataset(layout, seed=seed, start_step=start_step,
                                                           resolution=resolution, channels=channels, flip=flip,
                                                           shuffle=shuffle)
    return self.stream(layout, seed, start_step, resolution, channels, flip, shuffle)

  def stream(self, layout, seed, start_step, resolution, channels, flip, shuffle):
    """The source's own pipeline (without input.cache); see ``dataset``."""
    raise NotImplementedError

  def examples_at(self, resolution, channels):
    raise NotImplementedError

  def arrays(self, resolution, channels):
    """Every (uint8 image [N, H, W, C], label [N]) at ``resolution`` (h, w), in the fixed order, in memory."""
    memory = self._in_memory(transforms.parse_resolution(resolution), channels)
    return memory.images, memory.labels

  def _in_memory(self, resolution, channels):
    """The whole source decoded once at ``resolution`` (uint8) into an ArraySource, kept per size."""
    memory = self.__dict__.setdefault("_memory", {})
    if (resolution, channels) not in memory:
      images, labels = [], []
      for batch in self.examples_at(resolution, channels).batch(256).as_numpy_iterator():
        images.append(batch[0])
        labels.append(batch[1])
      require(images, f"{self.info.spec}: no decodable images")
      images = np.concatenate(images).reshape([-1, *resolution, channels])
      memory[(resolution, channels)] = ArraySource(self.info.spec, images, np.concatenate(labels).astype(np.int32),
                                                   self.info.label_names, self.options)
    return memory[(resolution, channels)]


class ArraySource(Source):
  """A source whose examples are in memory as uint8 arrays of one size."""

  def __init__(self, spec, images, labels, label_names=(), options=None):
    self.images = images
    self.labels = labels
    self.options = options or InputOptions()
    self.info = DataInfo(spec=spec, count=int(images.shape[0]), resolution=int(images.shape[1]),
                         channels=int(images.shape[3]), num_classes=len(label_names),
                         label_names=tuple(label_names), width=int(images.shape[2]))

  def training_labels(self):
    """The labels training batches carry: every label, or with ``input.labelled`` = N, N of them spread evenly
    over the classes (class k keeps its first N // K, the first N % K classes one more) and -1 for the rest."""
    if self.options.labelled is None:
      return self.labels
    classes = np.unique(self.labels)
    per_class, extra = divmod(int(self.options.labelled), len(classes))
    keep = np.zeros(len(self.labels), bool)
    for k, label in enumerate(classes):
      where = np.flatnonzero(self.labels == label)
      keep[where[:per_class + (k < extra)]] = True
    return np.where(keep, self.labels, -1).astype(np.int32)

  def dataset(self, layout, *, seed, start_step, resolution, channels, flip=False, shuffle=True):
    resolution = transforms.parse_resolution(resolution)
    return input_lib.indexed_batches(self.images, self.training_labels(), layout, seed=seed, start_step=start_step,
                                     transform=model_transform(resolution, channels, self.options.crop),
                                     shuffle=shuffle, flip=flip)

  def arrays(self, resolution, channels):
    resolution = transforms.parse_resolution(resolution)
    if tuple(self.images.shape[1:]) == (*resolution, channels):
      return self.images, self.labels
    return fit_uint8(self.images, resolution, channels, self.options.crop).numpy(), self.labels
