"""A small digit classifier that the project trains itself, so FID-style scores work offline.

The network sees 32x32 grayscale images in [-1, 1] (the embedded digits): four 3x3 convolutions with ReLU (16, 32,
64 and 128 channels), a 2x2 max-pool after each of the first three, a global average over the last 4x4 map (the
128-d *features*, the analogue of Inception's pool_3) and a dense layer to 10 *logits*. About 98k parameters,
stored as float32 in ``evaluation/weights/mnist_classifier.npz`` (under 0.5 MB), written by
``python -m evaluation.train_classifier`` (see that module for the command, seed and accuracy).

The weights' *fingerprint* is a hash of the arrays (names, shapes and values), not of the file's bytes, so the
reference-statistics cache notices a retrained classifier but not a re-saved one.
"""

import hashlib
import io
import os

import numpy as np
import tensorflow as tf

from genscale.errors import UserError

WEIGHTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "mnist_classifier.npz")
TRAIN_COMMAND = "python -m evaluation.train_classifier"
RESOLUTION = 32
CHANNELS = 1
NUM_CLASSES = 10
# (name, input channels, output channels); every convolution is 3x3, stride 1, SAME padding.
CONVOLUTIONS = (("conv1", 1, 16), ("conv2", 16, 32), ("conv3", 32, 64), ("conv4", 64, 128))
FEATURE_DIM = CONVOLUTIONS[-1][2]
_POOLED = 3  # a 2x2 max-pool follows each of the first three convolutions: 32 -> 16 -> 8 -> 4


def parameter_shapes():
  """{name: shape} of every weight array, in the order they are created and stored."""
  shapes = {}
  for name, cin, cout in CONVOLUTIONS:
    shapes[f"{name}/w"] = (3, 3, cin, cout)
    shapes[f"{name}/b"] = (cout,)
  shapes["logits/w"] = (FEATURE_DIM, NUM_CLASSES)
  shapes["logits/b"] = (NUM_CLASSES,)
  return shapes


def initial_weights(seed):
  """He-normal weights and zero biases, drawn from ``seed`` with stateless ops (the same on every machine)."""
  weights = {}
  for i, (name, shape) in enumerate(parameter_shapes().items()):
    if name.endswith("/b"):
      weights[name] = np.zeros(shape, np.float32)
      continue
    fan_in = int(np.prod(shape[:-1]))
    draw = tf.random.stateless_normal(shape, seed=tf.constant([seed, i], tf.int64), stddev=np.sqrt(2.0 / fan_in),
                                      alg="philox")
    weights[name] = draw.numpy().astype(np.float32)
  return weights


def fingerprint(weights):
  """A short hash of the weight arrays: names, shapes and float32 values."""
  digest = hashlib.sha256()
  for name in sorted(weights):
    value = np.ascontiguousarray(weights[name], np.float32)
    digest.update(f"{name}:{value.shape}".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()[:16]


class DigitClassifier(tf.Module):
  """The classifier network. ``__call__`` runs per replica and only reads its variables.

  Args:
    weights: {name: array} as from ``parameter_shapes``; float32 variables are created from them (under the
      caller's strategy scope, if any).
  """

  def __init__(self, weights, name="digit_classifier"):
    super().__init__(name=name)
    missing = [k for k in parameter_shapes() if k not in weights]
    if missing:
      raise UserError(f"classifier weights lack {missing[0]}; rebuild them with `{TRAIN_COMMAND}`")
    self.params = {}
    for key, shape in parameter_shapes().items():
      value = np.asarray(weights[key], np.float32)
      if value.shape != tuple(shape):
        raise UserError(f"classifier weight {key} has shape {value.shape}, expected {shape}; rebuild them with "
                        f"`{TRAIN_COMMAND}`")
      self.params[key] = tf.Variable(value, name=key.replace("/", "_"))

  def __call__(self, images):
    """images: float32 [b, 32, 32, 1] in [-1, 1] -> (features [b, 128], logits [b, 10]), both float32."""
    h = tf.cast(images, tf.float32)
    for i, (name, _, _) in enumerate(CONVOLUTIONS):
      h = tf.nn.conv2d(h, self.params[f"{name}/w"], strides=1, padding="SAME") + self.params[f"{name}/b"]
      h = tf.nn.relu(h)
      if i < _POOLED:
        h = tf.nn.max_pool2d(h, 2, 2, "VALID")
    features = tf.reduce_mean(h, axis=[1, 2])
    logits = tf.matmul(features, self.params["logits/w"]) + self.params["logits/b"]
    return features, logits

  def weights(self):
    """{name: float32 array} of the current values."""
    return {key: v.numpy() for key, v in self.params.items()}


def save(path, weights, metadata):
  """Writes weights and metadata ({key: number or string}) as one .npz (local or gs://)."""
  arrays = {f"weights/{k}": np.asarray(v, np.float32) for k, v in weights.items()}
  arrays.update({f"meta/{k}": np.asarray(v) for k, v in metadata.items()})
  buffer = io.BytesIO()  # np.savez seeks; a gs:// GFile can't while writing
  np.savez(buffer, **arrays)
  directory = os.path.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(buffer.getvalue())


def load(path=None):
  """(weights, metadata) from the .npz at ``path`` (default: the stored classifier). Raises UserError."""
  path = path or WEIGHTS_PATH
  if not tf.io.gfile.exists(path):
    raise UserError(f"the embedded classifier's weights {path} are missing; rebuild them with `{TRAIN_COMMAND}` "
                    "(about a minute on 2 CPU cores)")
  with tf.io.gfile.GFile(path, "rb") as f:
    data = np.load(io.BytesIO(f.read()))
    weights = {k[len("weights/"):]: data[k] for k in data.files if k.startswith("weights/")}
    metadata = {k[len("meta/"):]: data[k].item() for k in data.files if k.startswith("meta/")}
  return weights, metadata
