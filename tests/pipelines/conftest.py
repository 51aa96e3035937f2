"""Image folders with known pixels, written by the tests."""

import os

import numpy as np
from PIL import Image
import pytest


def known_images(count, size=8, seed=0):
  """uint8 RGB images [count, size, size, 3] whose pixels the tests know."""
  return np.random.default_rng(seed).integers(0, 256, [count, size, size, 3], dtype=np.uint8)


def write_folder(root, images, classes=("cat", "dog")):
  """Writes images as PNG into class sub-folders (round-robin); returns {path: (pixels, class index)}."""
  written = {}
  for i, pixels in enumerate(images):
    cls = i % len(classes)
    directory = os.path.join(root, classes[cls])
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"img{i:03d}.png")
    Image.fromarray(pixels).save(path)
    written[path] = (pixels, cls)
  return written


@pytest.fixture
def image_folder(tmp_path):
  images = known_images(12)
  root = str(tmp_path / "images")
  return root, write_folder(root, images), images
