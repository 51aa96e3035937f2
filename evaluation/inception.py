"""InceptionV3 features for FID, KID and the Inception Score, from a weights file given by path (never downloaded).

Accepted files (``--inception_weights=PATH``, local or gs://; chosen by the file name's ending):

  *.pb   The frozen graph of the 2015-12-05 Inception release, ``classify_image_graph_def.pb``, as used by the
         reference FID code (TTUR, Heusel et al.) and the reference Inception Score code (Salimans et al.). It is
         the file inside ``inception-2015-12-05.tgz`` (no conversion: ``tar xzf inception-2015-12-05.tgz
         classify_image_graph_def.pb``). Features: ``pool_3`` (2048-d). Logits: ``pool_3`` times the weight
         matrix of ``softmax/logits/MatMul`` without its bias, 1008 classes, exactly as the reference IS code
         computes them. Scores match the published protocol when the resize filter is ``bilinear_tf1`` (the
         default), the resize those graphs apply to their input.
         The graph is not imported as a TensorFlow graph: its deprecated ops (BatchNormWithGlobalNormalization,
         Concat) and batch-size-1 reshapes would not run in a TF2 function. Instead its constants become variables
         and its nodes from the resized image (node ``ResizeBilinear``) up to ``pool_3`` are evaluated here, op by
         op, with current TensorFlow ops (see ``FrozenGraphInception``), which also compiles under XLA and runs
         on every replica. The tests check this loader on a miniature graph with the same node names and op types;
         the real file was not available where it was written, so check a first run against a published value
         (e.g. TTUR's CIFAR-10 training-set statistics) before relying on it.

  *.h5   Keras' ImageNet InceptionV3 weights: ``inception_v3_weights_tf_dim_ordering_tf_kernels.h5`` (with the
         classifier: 2048-d ``avg_pool`` features and 1000 logits) or ``..._notop.h5`` (features only, no IS), or a
         Keras 3 ``.weights.h5`` saved from ``keras.applications.InceptionV3``. Loaded into
         ``keras.applications.InceptionV3(weights=<local copy>)``, so no download either. These weights differ
         from the 2015 graph: their FIDs are not comparable with published ones, only with each other.

Other formats (PyTorch ``pt_inception-2015-12-05-*.pth``, TF-Hub modules, SavedModels) are refused; the 2015
graph is the one to get for comparable numbers.
"""

import hashlib
import os
import re
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from evaluation.extractors import Extractor
from genscale.errors import UserError

INPUT_SIZE = (299, 299)
GRAPH_INPUT = "ResizeBilinear"  # the resized image, pixel values in [0, 255]; the graph then scales it itself
GRAPH_FEATURES = "pool_3"
GRAPH_LOGITS = "softmax/logits/MatMul"

_WHAT_TO_PROVIDE = ("classify_image_graph_def.pb from inception-2015-12-05.tgz (the reference FID/IS network) or "
                    "Keras' inception_v3_weights_tf_dim_ordering_tf_kernels.h5; nothing is downloaded")


def check_path(path, flag="--inception_weights", extractor_flag="--extractor"):
  """Fails early, in one line, when the weights path is unset, missing or of an unknown kind."""
  if not path:
    raise UserError(f"{extractor_flag}=inception needs {flag}=PATH to {_WHAT_TO_PROVIDE}")
  if not path.endswith((".pb", ".h5")):
    raise UserError(f"{flag}={path}: expected a .pb (the 2015 Inception graph) or a .h5 (Keras InceptionV3 "
                    f"weights); provide {_WHAT_TO_PROVIDE}")
  if not tf.io.gfile.exists(path):
    raise UserError(f"{flag}={path} does not exist; provide {_WHAT_TO_PROVIDE}")


def _file_fingerprint(data):
  return hashlib.sha256(data).hexdigest()[:16]


def load(path, resize_filter=None, weights_flag="--inception_weights"):
  """The Inception extractor for a weights file. Call under the strategy's scope. Raises UserError."""
  check_path(path, weights_flag)
  with tf.io.gfile.GFile(path, "rb") as f:
    data = f.read()
  if path.endswith(".pb"):
    graph_def = tf.compat.v1.GraphDef()
    try:
      graph_def.ParseFromString(data)
    except Exception as e:  # pylint: disable=broad-except  (protobuf's DecodeError)
      raise UserError(f"{weights_flag}={path} is not a TensorFlow GraphDef ({type(e).__name__}); provide "
                      f"{_WHAT_TO_PROVIDE}") from e
    return FrozenGraphInception(graph_def, _file_fingerprint(data), resize_filter or "bilinear_tf1", path)
  return KerasInception(path, data, resize_filter or "bilinear_tf1", weights_flag)


# ---- the 2015 frozen graph, evaluated op by op


def _input_name(text):
  """A NodeDef input "name:k" -> (name, k); None for a control input "^name"."""
  if text.startswith("^"):
    return None
  name, _, index = text.partition(":")
  return name, int(index or 0)


def _attr_list(node, key, default=None):
  return list(node.attr[key].list.i) if key in node.attr else default


def _padding(node):
  padding = node.attr["padding"].s.decode()
  if padding not in ("SAME", "VALID"):
    raise UserError(f"node {node.name}: padding {padding} is not supported")
  return padding


def _check_nhwc(node):
  if "data_format" in node.attr and node.attr["data_format"].s not in (b"NHWC", b""):
    raise UserError(f"node {node.name}: only NHWC graphs are supported, not {node.attr['data_format'].s.decode()}")


def _conv2d(node, x, w):
  _check_nhwc(node)
  return tf.nn.conv2d(x, w, strides=_attr_list(node, "strides"), padding=_padding(node),
                      dilations=_attr_list(node, "dilations"))


def _pool(pool_fn):
  def pool(node, x):
    _check_nhwc(node)
    return pool_fn(x, _attr_list(node, "ksize"), _attr_list(node, "strides"), _padding(node))
  return pool


def _bias_add(node, x, b):
  _check_nhwc(node)
  return tf.nn.bias_add(x, b)


def _batch_norm_global(node, t, mean, variance, beta, gamma):
  """The 2015 graph's batch norm: (t - mean) / sqrt(variance + eps) [* gamma] + beta."""
  scale = tf.math.rsqrt(variance + node.attr["variance_epsilon"].f)
  if node.attr["scale_after_normalization"].b:
    scale = scale * gamma
  return (t - mean) * scale + beta


def _fused_batch_norm(node, x, scale, offset, mean, variance, *unused):
  del unused
  if node.attr["is_training"].b:
    raise UserError(f"node {node.name}: a batch norm in training mode is not a frozen inference graph")
  return (x - mean) * (tf.math.rsqrt(variance + node.attr["epsilon"].f) * scale) + offset


def _axis(value):
  return int(np.asarray(value).reshape(()))


def _matmul(node, a, b):
  return tf.matmul(a, b, transpose_a=node.attr["transpose_a"].b, transpose_b=node.attr["transpose_b"].b)


# op type -> function(node, *inputs) -> output (or a list of outputs). Inputs are tensors, variables or NumPy
# values. "Concat" is the 2015 graph's concatenation (axis first); ConcatV2 has it last.
_OPS = {
    "Identity": lambda node, x: x,
    "Conv2D": _conv2d,
    "BatchNormWithGlobalNormalization": _batch_norm_global,
    "FusedBatchNorm": _fused_batch_norm,
    "FusedBatchNormV2": _fused_batch_norm,
    "FusedBatchNormV3": _fused_batch_norm,
    "Relu": lambda node, x: tf.nn.relu(x),
    "Relu6": lambda node, x: tf.nn.relu6(x),
    "MaxPool": _pool(tf.nn.max_pool2d),
    "AvgPool": _pool(tf.nn.avg_pool2d),  # TF's SAME average pooling leaves the padding out of the count
    "Concat": lambda node, axis, *values: tf.concat(list(values), _axis(axis)),
    "ConcatV2": lambda node, *args: tf.concat(list(args[:-1]), _axis(args[-1])),
    "Reshape": lambda node, x, shape: tf.reshape(x, np.asarray(shape)),
    "Squeeze": lambda node, x: tf.squeeze(x, _attr_list(node, "squeeze_dims") or None),
    "Mean": lambda node, x, axis: tf.reduce_mean(x, np.asarray(axis), keepdims=node.attr["keep_dims"].b),
    "Pad": lambda node, x, paddings: tf.pad(x, np.asarray(paddings)),
    "Add": lambda node, x, y: x + y,
    "AddV2": lambda node, x, y: x + y,
    "BiasAdd": _bias_add,
    "Sub": lambda node, x, y: x - y,
    "Mul": lambda node, x, y: x * y,
    "RealDiv": lambda node, x, y: x / y,
    "MatMul": _matmul,
}


class FrozenGraphInception(Extractor):
  """The 2015 Inception graph, evaluated from ``ResizeBilinear`` (fed with our resized images) up to ``pool_3``.

  Float constants with more than one element (the weights) become float32 variables, created in the caller's
  strategy scope so every replica reads its own copy; other constants (shapes, axes, scalars) stay NumPy values.

  Args:
    graph_def: the parsed GraphDef.
    fingerprint: hash of the file.
    resize_filter: one of extractors.RESIZE_FILTERS.
    path: for messages.
  """
  name = "inception"

  def __init__(self, graph_def, fingerprint, resize_filter, path="the graph"):
    super().__init__(name="inception_graph")
    nodes = {node.name: node for node in graph_def.node}
    for required in (GRAPH_INPUT, GRAPH_FEATURES, GRAPH_LOGITS):
      if required not in nodes:
        raise UserError(f"{path} is not the 2015 Inception graph (classify_image_graph_def.pb): it has no node "
                        f"{required!r}")
    self.input_size, self.channels = INPUT_SIZE, 3
    self.resize_filter, self.fingerprint = resize_filter, fingerprint
    self._nodes = nodes
    self._order = self._evaluation_order(nodes, GRAPH_FEATURES, stop=GRAPH_INPUT)
    self._constants = {}
    self.weights = {}  # tracked: node name -> tf.Variable
    for name in self._order:
      node = nodes[name]
      if node.op == "Const":
        self._constant(node)
      elif node.op not in _OPS:
        raise UserError(f"{path}: node {name} has op {node.op}, which this loader does not evaluate; use "
                        "classify_image_graph_def.pb from inception-2015-12-05.tgz")
    logits_weights = self._const_input(nodes, nodes[GRAPH_LOGITS], 1)
    self.softmax_weights = tf.Variable(logits_weights.astype(np.float32), name="softmax_weights")
    self.feature_dim, self.num_classes = int(logits_weights.shape[0]), int(logits_weights.shape[1])

  @staticmethod
  def _evaluation_order(nodes, output, stop):
    """The nodes ``output`` depends on, inputs first, not looking past ``stop`` (iterative: graphs are deep)."""
    order, state, stack = [], {}, [(output, False)]
    while stack:
      name, expanded = stack.pop()
      if name == stop:
        continue
      if expanded:
        state[name] = "done"
        order.append(name)
        continue
      if state.get(name):
        continue
      if name not in nodes:
        raise UserError(f"the graph refers to a missing node {name!r}")
      state[name] = "open"
      stack.append((name, True))
      for text in nodes[name].input:
        parsed = _input_name(text)
        if parsed and parsed[0] != stop and not state.get(parsed[0]):
          stack.append((parsed[0], False))
    return order

  @staticmethod
  def _const_input(nodes, node, index):
    """The NumPy value of a node's input that is a constant (possibly behind Identity nodes)."""
    source = nodes[_input_name(node.input[index])[0]]
    while source.op == "Identity":
      source = nodes[_input_name(source.input[0])[0]]
    if source.op != "Const":
      raise UserError(f"node {node.name}: input {index} is not a constant")
    return tf.make_ndarray(source.attr["value"].tensor)

  def _constant(self, node):
    value = tf.make_ndarray(node.attr["value"].tensor)
    if value.dtype.kind == "f" and value.size > 1:
      self.weights[node.name] = tf.Variable(value.astype(np.float32), name=re.sub(r"[^A-Za-z0-9_.\-]", "_", node.name))
    else:
      self._constants[node.name] = value.astype(np.float32) if value.dtype.kind == "f" else value

  def _value(self, values, text):
    name, index = _input_name(text)
    if name in values:
      value = values[name]
    elif name in self.weights:
      value = self.weights[name]
    else:
      value = self._constants[name]
    return value[index] if isinstance(value, (list, tuple)) else value

  def network(self, pixels):
    values = {GRAPH_INPUT: pixels}
    for name in self._order:
      node = self._nodes[name]
      if node.op == "Const":
        continue
      inputs = [self._value(values, text) for text in node.input if not text.startswith("^")]
      values[name] = _OPS[node.op](node, *inputs)
    features = tf.reshape(values[GRAPH_FEATURES], [-1, self.feature_dim])
    return features, tf.matmul(features, self.softmax_weights)


# ---- Keras InceptionV3


def _keras_file_has_top(path):
  """Whether a Keras InceptionV3 weights file holds the classification layer; None if it isn't one we know.

  Read from the file's layout, so a features-only ("notop") file isn't first loaded into the full network and
  refused: a legacy Keras .h5 (the published files) lists its layer names, with "predictions" last when the top
  is there; a Keras 3 .weights.h5 stores layers by attribute path, and InceptionV3's only dense layer is the top.
  """
  import h5py  # pylint: disable=g-import-not-at-top  (a Keras dependency)
  with h5py.File(path, "r") as f:
    if "layer_names" in f.attrs:
      names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
      return "predictions" in names
    if "layers" in f:
      return "dense" in f["layers"]
  return None


class KerasInception(Extractor):
  """``keras.applications.InceptionV3`` with weights from a file; features from ``avg_pool``.

  Built in float32 whatever the global Keras policy (the run's precision), so scores don't depend on it.
  """
  name = "inception"

  def __init__(self, path, data, resize_filter, weights_flag="--inception_weights"):
    super().__init__(name="inception_keras")
    import keras  # pylint: disable=g-import-not-at-top
    self.input_size, self.channels = INPUT_SIZE, 3
    self.resize_filter, self.fingerprint = resize_filter, _file_fingerprint(data)
    suffix = ".weights.h5" if path.endswith(".weights.h5") else ".h5"
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    local = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)  # h5py reads local files only (gs://)
    try:
      local.write(data)
      local.close()
      try:
        has_top = _keras_file_has_top(local.name)
      except OSError as e:
        raise UserError(f"{weights_flag}={path} is not a readable .h5 file ({str(e).splitlines()[0][:120]}); "
                        f"provide {_WHAT_TO_PROVIDE}") from e
      if has_top is None:
        raise UserError(f"{weights_flag}={path} holds no Keras weights; provide {_WHAT_TO_PROVIDE}")
      try:
        with warnings.catch_warnings():
          warnings.simplefilter("ignore")
          base = keras.applications.InceptionV3(weights=local.name, include_top=has_top,
                                                pooling=None if has_top else "avg")
      except (ValueError, OSError) as e:
        raise UserError(f"{weights_flag}={path} holds no Keras InceptionV3 weights "
                        f"({str(e).splitlines()[0][:120]}); provide {_WHAT_TO_PROVIDE}") from e
    finally:
      keras.mixed_precision.set_global_policy(policy)
      os.unlink(local.name)
    if has_top:
      self.top = base.get_layer("predictions")
      pooled = base.get_layer("avg_pool").output
    else:
      self.top = None
      pooled = base.output
    self.body = keras.Model(base.input, pooled)
    self.feature_dim = int(pooled.shape[-1])
    self.num_classes = int(self.top.units) if self.top is not None else 0

  def network(self, pixels):
    features = self.body(pixels / 127.5 - 1.0, training=False)  # Keras' "tf" preprocessing: [-1, 1]
    if self.top is None:
      return features, None
    # The classification layer's logits, before its softmax.
    return features, tf.matmul(features, self.top.kernel) + self.top.bias
