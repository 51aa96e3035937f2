"""Feature extractors: the shared input conventions, the Inception loaders and their one-line errors."""

import numpy as np
import pytest
import tensorflow as tf

from evaluation import extractors
from evaluation import inception
from genscale.errors import UserError

AttrValue = tf.compat.v1.AttrValue
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras' NumPy 2 notice, once per variable


@pytest.fixture(autouse=True)
def _float32_policy():
  import keras  # pylint: disable=g-import-not-at-top
  keras.mixed_precision.set_global_policy("float32")
  yield


# ---- input conventions


def test_images_are_quantised_to_8_bit_levels():
  levels = np.arange(256, dtype=np.float32)
  images = tf.constant((levels / 127.5 - 1.0 + 1e-4).reshape(1, 16, 16, 1))  # a little off each level
  np.testing.assert_array_equal(extractors.quantise(images).numpy().ravel(), levels)
  assert float(tf.reduce_min(extractors.quantise(tf.constant([-3.0])))) == 0.0  # clipped
  assert float(tf.reduce_max(extractors.quantise(tf.constant([3.0])))) == 255.0


def test_channels_are_converted():
  gray = tf.fill([1, 2, 2, 1], 100.0)
  np.testing.assert_array_equal(extractors.to_channels(gray, 3).numpy(), np.full([1, 2, 2, 3], 100.0))
  rgb = tf.constant([[[[255.0, 0.0, 0.0]]]])
  assert float(extractors.to_channels(rgb, 1)[0, 0, 0, 0]) == pytest.approx(0.2989 * 255, abs=0.1)


@pytest.mark.parametrize("method", extractors.RESIZE_FILTERS)
def test_resize_filters_compile_under_xla(method):
  pixels = tf.random.stateless_uniform([2, 8, 8, 3], seed=[1, 2], maxval=255.0)
  eager = extractors.resize(pixels, (29, 29), method)
  compiled = tf.function(lambda x: extractors.resize(x, (29, 29), method), jit_compile=True)(pixels)
  np.testing.assert_allclose(compiled.numpy(), eager.numpy(), atol=1e-3)
  assert eager.shape == (2, 29, 29, 3)


def test_the_two_bilinear_filters_differ_as_documented():
  # Enlarging 2 -> 4 pixels: half-pixel centres sample between the inputs; TF1's ResizeBilinear starts on the first.
  row = tf.constant([0.0, 100.0])[None, None, :, None]
  tf2 = extractors.resize(row, (1, 4), "bilinear").numpy().ravel()
  tf1 = extractors.resize(row, (1, 4), "bilinear_tf1").numpy().ravel()
  np.testing.assert_allclose(tf2, [0.0, 25.0, 75.0, 100.0])
  np.testing.assert_allclose(tf1, [0.0, 50.0, 100.0, 100.0])


@pytest.mark.parametrize("method,resample", [("pil_bicubic", "BICUBIC"), ("pil_bilinear", "BILINEAR")])
@pytest.mark.parametrize("source,target", [((8, 8), (29, 29)), ((40, 36), (17, 9)), ((12, 20), (7, 31))])
def test_pil_filters_match_pil_on_float_pixels(method, resample, source, target):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pixels = np.random.default_rng(3).uniform(0, 255, size=(1, *source, 2)).astype(np.float32)
  expected = np.stack([np.asarray(Image.fromarray(pixels[0, ..., c], mode="F").resize(
      (target[1], target[0]), getattr(Image.Resampling, resample))) for c in range(2)], axis=-1)
  resized = tf.function(lambda x: extractors.resize(x, target, method), jit_compile=True)(pixels)
  np.testing.assert_allclose(resized.numpy()[0], np.clip(expected, 0, 255), atol=2e-3)


def test_the_pil_filters_antialias_when_downscaling():
  # A one-pixel checkerboard shrunk 4x: antialiased filters average it to grey; TF1's bilinear samples every 4th
  # pixel and turns it black (aliasing).
  board = tf.constant((np.indices((64, 64)).sum(0) % 2 * 255.0).astype(np.float32)[None, :, :, None])
  for method in ("pil_bicubic", "pil_bilinear"):
    np.testing.assert_allclose(extractors.resize(board, (16, 16), method).numpy(), 127.5, atol=1.0)
  np.testing.assert_array_equal(extractors.resize(board, (16, 16), "bilinear_tf1").numpy(), 0.0)


# ---- the embedded classifier


def test_the_classifier_extractor_gives_128_d_features_and_10_logits():
  extractor = extractors.build("classifier")
  features, logits = extractor(tf.zeros([3, 32, 32, 1]))
  assert features.shape == (3, 128) and logits.shape == (3, 10)
  assert extractor.keys()["extractor"] == "classifier" and len(extractor.fingerprint) == 16
  # Other sizes and RGB are converted and resized on the way in.
  features, _ = extractor(tf.zeros([2, 64, 48, 3]))
  assert features.shape == (2, 128)


# ---- Inception: errors


def test_missing_inception_weights_give_a_one_line_error_naming_the_file():
  with pytest.raises(UserError) as error:
    extractors.build("inception")
  message = str(error.value)
  assert message.startswith("--extractor=inception needs --inception_weights=PATH")
  assert "classify_image_graph_def.pb" in message and "\n" not in message


@pytest.mark.parametrize("name,content,message", [
    ("missing.pb", None, "does not exist"),
    ("weights.bin", b"x", "expected a .pb (the 2015 Inception graph) or a .h5"),
    ("garbage.pb", b"not a graph", "is not a TensorFlow GraphDef"),
    ("empty.pb", b"", "is not the 2015 Inception graph"),
    ("garbage.h5", b"not hdf5", "is not a readable .h5 file"),
])
def test_bad_inception_weights_are_refused(tmp_path, name, content, message):
  path = tmp_path / name
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
    extractors.build("inception", inception_weights=str(path))


# ---- Inception: the 2015 frozen graph


def _ints(values):
  return AttrValue(list=AttrValue.ListValue(i=list(values)))


def _node(graph, name, op, inputs=(), **attrs):
  node = graph.node.add(name=name, op=op)
  node.input.extend(inputs)
  for key, value in attrs.items():
    node.attr[key].CopyFrom(value)


def _const(graph, name, value):
  value = np.asarray(value)
  _node(graph, name, "Const", value=AttrValue(tensor=tf.make_tensor_proto(value)),
        dtype=AttrValue(type=tf.as_dtype(value.dtype).as_datatype_enum))


def _miniature_2015_graph(rng):
  """A GraphDef with the 2015 Inception graph's node names and op types (deprecated batch norm, Concat with the
  axis first, a batch-size-1 reshape after pool_3), small enough to check by hand. Returns (graph, weights)."""
  w = {"conv": rng.normal(size=(3, 3, 3, 4)).astype(np.float32) * 0.1,
       "mean": rng.normal(size=4).astype(np.float32), "var": rng.uniform(0.5, 2.0, 4).astype(np.float32),
       "beta": rng.normal(size=4).astype(np.float32), "gamma": rng.uniform(0.5, 2.0, 4).astype(np.float32),
       "tower": rng.normal(size=(1, 1, 4, 3)).astype(np.float32), "softmax": rng.normal(size=(7, 5)).astype(np.float32),
       "bias": rng.normal(size=5).astype(np.float32)}
  g = tf.compat.v1.GraphDef()
  f32 = AttrValue(type=tf.float32.as_datatype_enum)
  _node(g, "ExpandDims", "Placeholder", dtype=f32)
  _const(g, "ResizeBilinear/size", np.array([299, 299], np.int32))
  _node(g, "ResizeBilinear", "ResizeBilinear", ["ExpandDims", "ResizeBilinear/size"], align_corners=AttrValue(b=False))
  _const(g, "Sub/y", np.float32(128.0))
  _node(g, "Sub", "Sub", ["ResizeBilinear", "Sub/y"])
  _const(g, "Mul/y", np.float32(1.0 / 128.0))
  _node(g, "Mul", "Mul", ["Sub", "Mul/y"])
  _const(g, "conv/conv2d_params", w["conv"])
  _node(g, "conv/Conv2D", "Conv2D", ["Mul", "conv/conv2d_params"], strides=_ints([1, 2, 2, 1]),
        padding=AttrValue(s=b"VALID"))
  for key in ("mean", "var", "beta", "gamma"):
    _const(g, f"conv/batchnorm/{key}", w[key])
  _node(g, "conv/batchnorm", "BatchNormWithGlobalNormalization",
        ["conv/Conv2D", "conv/batchnorm/mean", "conv/batchnorm/var", "conv/batchnorm/beta", "conv/batchnorm/gamma"],
        variance_epsilon=AttrValue(f=0.001), scale_after_normalization=AttrValue(b=True))
  _node(g, "conv", "Relu", ["conv/batchnorm"])
  _node(g, "pool", "MaxPool", ["conv"], ksize=_ints([1, 3, 3, 1]), strides=_ints([1, 2, 2, 1]),
        padding=AttrValue(s=b"VALID"))  # 149 -> 74
  _const(g, "mixed/conv/conv2d_params", w["tower"])
  _node(g, "mixed/conv/Conv2D", "Conv2D", ["pool", "mixed/conv/conv2d_params"], strides=_ints([1, 1, 1, 1]),
        padding=AttrValue(s=b"SAME"))
  _node(g, "mixed/conv", "Relu", ["mixed/conv/Conv2D"])
  _node(g, "mixed/tower/pool", "AvgPool", ["pool"], ksize=_ints([1, 3, 3, 1]), strides=_ints([1, 1, 1, 1]),
        padding=AttrValue(s=b"SAME"))
  _const(g, "mixed/join/concat_dim", np.int32(3))
  _node(g, "mixed/join", "Concat", ["mixed/join/concat_dim", "mixed/conv", "mixed/tower/pool"])
  _node(g, "pool_3", "AvgPool", ["mixed/join"], ksize=_ints([1, 74, 74, 1]), strides=_ints([1, 1, 1, 1]),
        padding=AttrValue(s=b"VALID"))
  _const(g, "pool_3/_reshape/shape", np.array([1, 7], np.int32))
  _node(g, "pool_3/_reshape", "Reshape", ["pool_3", "pool_3/_reshape/shape"])
  _const(g, "softmax/weights", w["softmax"])
  _node(g, "softmax/logits/MatMul", "MatMul", ["pool_3/_reshape", "softmax/weights"])
  _const(g, "softmax/biases", w["bias"])
  _node(g, "softmax/logits", "BiasAdd", ["softmax/logits/MatMul", "softmax/biases"])
  _node(g, "softmax", "Softmax", ["softmax/logits"])
  return g, w


def _expected_2015(images, w):
  """What the miniature graph computes for images in [-1, 1] fed as the reference FID code feeds them."""
  pixels = np.clip(np.round((images + 1.0) * 127.5), 0, 255)
  pixels = np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels
  x = tf.compat.v1.image.resize_bilinear(pixels, [299, 299], align_corners=False)  # the graph's own resize
  x = (x - 128.0) / 128.0
  x = tf.nn.conv2d(x, w["conv"], 2, "VALID")
  x = tf.nn.relu((x - w["mean"]) / np.sqrt(w["var"] + 0.001) * w["gamma"] + w["beta"])
  x = tf.nn.max_pool2d(x, 3, 2, "VALID")
  x = tf.concat([tf.nn.relu(tf.nn.conv2d(x, w["tower"], 1, "SAME")), tf.nn.avg_pool2d(x, 3, 1, "SAME")], axis=3)
  features = tf.reduce_mean(x, axis=[1, 2]).numpy()
  return features, features @ w["softmax"]  # the reference IS code's logits: no bias


def test_the_frozen_2015_graph_is_evaluated_op_by_op(tmp_path):
  graph, weights = _miniature_2015_graph(np.random.default_rng(0))
  path = tmp_path / "classify_image_graph_def.pb"
  path.write_bytes(graph.SerializeToString())
  extractor = extractors.build("inception", inception_weights=str(path))
  assert isinstance(extractor, inception.FrozenGraphInception)
  assert (extractor.feature_dim, extractor.num_classes, extractor.resize_filter) == (7, 5, "bilinear_tf1")
  images = np.random.default_rng(1).uniform(-1, 1, size=(3, 32, 32, 1)).astype(np.float32)
  features, logits = tf.function(extractor, jit_compile=True)(tf.constant(images))  # and it compiles under XLA
  expected_features, expected_logits = _expected_2015(images, weights)
  np.testing.assert_allclose(features.numpy(), expected_features, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(logits.numpy(), expected_logits, rtol=1e-4, atol=1e-5)


def test_a_graph_with_an_op_the_loader_does_not_know_is_refused(tmp_path):
  graph, _ = _miniature_2015_graph(np.random.default_rng(0))
  for node in graph.node:
    if node.name == "conv":
      node.op = "Elu"
  path = tmp_path / "odd.pb"
  path.write_bytes(graph.SerializeToString())
  with pytest.raises(UserError, match="node conv has op Elu"):
    extractors.build("inception", inception_weights=str(path))


# ---- Inception: Keras weights


@pytest.fixture(scope="module")
def keras_inception(tmp_path_factory):
  """A randomly initialised InceptionV3 (no download: weights=None) saved as the published Keras files are: the
  legacy HDF5 layout of inception_v3_weights_tf_dim_ordering_tf_kernels.h5, and the same without the classifier
  (the layout of ..._notop.h5: the "predictions" layer removed). About 15 s with the two tests below."""
  import h5py  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=g-import-not-at-top
  keras.mixed_precision.set_global_policy("float32")
  model = keras.applications.InceptionV3(weights=None, include_top=True)
  directory = tmp_path_factory.mktemp("inception")
  top = str(directory / "inception_v3_weights_tf_dim_ordering_tf_kernels.h5")
  notop = str(directory / "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
  for path, keep_top in ((top, True), (notop, False)):
    with h5py.File(path, "w") as f:
      legacy_h5_format.save_weights_to_hdf5_group(f, model)
      if not keep_top:
        # Stored as bytes, as Keras 2 wrote the published files.
        names = [str(n) for n in f.attrs["layer_names"] if str(n) != "predictions"]
        f.attrs["layer_names"] = np.array([n.encode() for n in names], dtype="S")
        del f["predictions"]
  images = np.random.default_rng(2).uniform(-1, 1, size=(2, 299, 299, 3)).astype(np.float32)
  pixels = np.round((images + 1.0) * 127.5) / 127.5 - 1.0  # what the extractor feeds after quantising
  pooled = keras.Model(model.input, model.get_layer("avg_pool").output)(pixels, training=False).numpy()
  probabilities = model(pixels, training=False).numpy()
  return dict(top=top, notop=notop, model=model, images=images, pooled=pooled, probabilities=probabilities,
              directory=directory)


def test_keras_inception_weights_load_and_give_2048_d_features_and_1000_logits(keras_inception):
  extractor = extractors.build("inception", inception_weights=keras_inception["top"])
  assert isinstance(extractor, inception.KerasInception)
  assert (extractor.feature_dim, extractor.num_classes) == (2048, 1000)
  features, logits = extractor(tf.constant(keras_inception["images"]))
  np.testing.assert_allclose(features.numpy(), keras_inception["pooled"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), keras_inception["probabilities"], atol=1e-6)


def test_keras_notop_weights_give_the_same_features_and_no_logits(keras_inception):
  extractor = extractors.build("inception", inception_weights=keras_inception["notop"])
  assert (extractor.feature_dim, extractor.num_classes) == (2048, 0)
  features, logits = extractor(tf.constant(keras_inception["images"]))
  assert logits is None
  np.testing.assert_allclose(features.numpy(), keras_inception["pooled"], rtol=1e-5, atol=1e-6)


def test_keras_weight_files_are_recognised_by_their_layout(keras_inception, tmp_path):
  import h5py  # pylint: disable=g-import-not-at-top
  assert inception._keras_file_has_top(keras_inception["top"]) is True  # pylint: disable=protected-access
  assert inception._keras_file_has_top(keras_inception["notop"]) is False  # pylint: disable=protected-access
  keras3 = str(tmp_path / "inception.weights.h5")  # the Keras 3 layout (model.save_weights)
  keras_inception["model"].save_weights(keras3)
  assert inception._keras_file_has_top(keras3) is True  # pylint: disable=protected-access
  other = str(tmp_path / "other.h5")
  with h5py.File(other, "w") as f:
    f["x"] = np.zeros(3)
  with pytest.raises(UserError, match="other.h5 holds no Keras weights; provide classify_image_graph_def.pb"):
    extractors.build("inception", inception_weights=other)
