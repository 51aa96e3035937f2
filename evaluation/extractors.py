"""Feature extractors: images in [-1, 1] -> (features, logits), per replica, built by name.

  classifier  the embedded digit classifier (``evaluation.classifier``): 128-d features, 10 logits, 32x32
              grayscale input. Works offline; meaningful for digit-like data only.
  inception   InceptionV3: 2048-d pool features and ImageNet logits, 299x299 RGB input, from a weights file
              given by path (``evaluation.inception`` lists the accepted files). Nothing is ever downloaded.

Every extractor sees images the same way, generated or real (``Extractor.__call__``):
  1. quantised to the 256 levels of an 8-bit image, round((x + 1) * 127.5) clipped to [0, 255], as when samples
     are saved as PNGs before scoring (real images come from 8-bit files, so they don't change);
  2. converted to the network's channels (gray -> RGB by repetition, RGB -> gray by ITU-R 601 luma);
  3. resized to the network's input size with the extractor's filter, when the size differs:
       bilinear      half-pixel-centred bilinear (``tf.image.resize``, no antialiasing), TF2's convention;
       bilinear_tf1  TF1's ResizeBilinear without half-pixel centres (align_corners=False): the resize inside
                     the 2015 Inception graph, which the reference FID (TTUR) and IS code feed images through;
       pil_bicubic   PIL's antialiased bicubic resampling (a = -0.5; the kernel widens with the downscaling factor)
                     on float pixels, clipped to [0, 255]: what clean-fid (Parmar et al. 2022) calls "clean"
                     resizing. Downscaling large images without antialiasing aliases, which changes FID;
       pil_bilinear  the same with PIL's antialiased bilinear (triangle) kernel.
     All compile under XLA (TensorFlow's own bicubic, area and antialiased resizes do not): the PIL filters are
     two matrix products with weights computed on the host, exactly as PIL computes them. Default: bilinear_tf1
     for inception (to match the reference numbers), bilinear for the classifier.
  4. passed to the network in its own input range; features and logits are float32 whatever the run's
     precision, so scores of runs trained in different precisions compare.
"""

import numpy as np
import tensorflow as tf

from genscale.errors import UserError, require

EXTRACTORS = ("classifier", "inception")
RESIZE_FILTERS = ("bilinear", "bilinear_tf1", "pil_bicubic", "pil_bilinear")


def _pil_bicubic_kernel(x, a=-0.5):
  x = abs(x)
  if x < 1.0:
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  if x < 2.0:
    return (((x - 5.0) * x + 8.0) * x - 4.0) * a
  return 0.0


def _pil_triangle_kernel(x):
  x = abs(x)
  return 1.0 - x if x < 1.0 else 0.0


_PIL_KERNELS = {"pil_bicubic": (_pil_bicubic_kernel, 2.0), "pil_bilinear": (_pil_triangle_kernel, 1.0)}


def pil_resample_matrix(in_size, out_size, method):
  """[out_size, in_size] float32 weights of PIL's separable resampling along one axis (host, NumPy).

  As PIL computes them (``precompute_coeffs`` in libImaging/Resample.c): output pixel i is centred at
  (i + 0.5) * scale in input coordinates, scale = in / out; when downscaling the kernel is stretched by the scale
  (antialiasing), its support widened to match; input pixels within the support get kernel((x + 0.5 - centre) /
  stretch), normalised to sum to 1.
  """
  kernel, support = _PIL_KERNELS[method]
  scale = in_size / out_size
  stretch = max(scale, 1.0)
  support *= stretch
  weights = np.zeros([out_size, in_size], np.float64)
  for i in range(out_size):
    centre = (i + 0.5) * scale
    first = max(int(centre - support + 0.5), 0)  # int() truncates toward zero, as the C cast does
    last = min(int(centre + support + 0.5), in_size)
    row = np.array([kernel((x - centre + 0.5) / stretch) for x in range(first, last)])
    total = row.sum()
    weights[i, first:last] = row / total if total != 0.0 else row
  return weights.astype(np.float32)


def resize(pixels, size, method):
  """Resizes float32 [b, h, w, c] to ``size`` (h, w) with a filter of RESIZE_FILTERS. XLA-compatible."""
  size = [int(size[0]), int(size[1])]
  if method == "bilinear":
    return tf.image.resize(pixels, size, method="bilinear", antialias=False)
  if method == "bilinear_tf1":
    return tf.raw_ops.ResizeBilinear(images=pixels, size=size, align_corners=False, half_pixel_centers=False)
  if method in _PIL_KERNELS:
    rows = tf.constant(pil_resample_matrix(int(pixels.shape[1]), size[0], method))
    columns = tf.constant(pil_resample_matrix(int(pixels.shape[2]), size[1], method))
    resized = tf.einsum("oh,bhwc,pw->bopc", rows, tf.cast(pixels, tf.float32), columns)
    return tf.clip_by_value(resized, 0.0, 255.0)  # bicubic overshoots at edges; pixel values stay pixel values
  raise UserError(f"unknown resize filter {method!r}: choose one of {', '.join(RESIZE_FILTERS)}")


def quantise(images):
  """float images in [-1, 1] -> float32 pixel values in {0, 1, ..., 255} (rounding half to even, like PNG export)."""
  return tf.clip_by_value(tf.round((tf.cast(images, tf.float32) + 1.0) * 127.5), 0.0, 255.0)


def to_channels(pixels, channels):
  have = pixels.shape[-1]
  if have == channels:
    return pixels
  if have == 1 and channels == 3:
    return tf.tile(pixels, [1, 1, 1, 3])
  if have == 3 and channels == 1:
    return tf.image.rgb_to_grayscale(pixels)
  raise UserError(f"can't feed {have}-channel images to a {channels}-channel feature network")


class Extractor(tf.Module):
  """A feature network with its input conventions. Build it under the strategy's scope.

  Subclasses set the attributes below and implement ``network``.

  Attributes:
    name: "classifier" or "inception".
    input_size: (height, width) the network takes.
    channels: 1 or 3.
    feature_dim: width of the features.
    num_classes: width of the logits; 0 when the weights have no classification layer.
    resize_filter: one of RESIZE_FILTERS.
    fingerprint: a short hash of the weights, so cached reference statistics notice other weights.
  """
  name = ""
  input_size = (0, 0)
  channels = 3
  feature_dim = 0
  num_classes = 0
  resize_filter = "bilinear"
  fingerprint = ""

  def network(self, pixels):
    """float32 pixels [b, H, W, C] in [0, 255] at ``input_size`` -> (features [b, d], logits [b, K] or None)."""
    raise NotImplementedError

  def __call__(self, images):
    """Images in [-1, 1], float [b, h, w, c] -> (features, logits or None), float32. Runs per replica; pure."""
    pixels = to_channels(quantise(images), self.channels)
    if tuple(pixels.shape[1:3]) != tuple(self.input_size):
      pixels = resize(pixels, self.input_size, self.resize_filter)
    features, logits = self.network(pixels)
    features = tf.cast(features, tf.float32)
    return features, None if logits is None else tf.cast(logits, tf.float32)

  def keys(self):
    """What reference statistics computed with this extractor depend on."""
    return {"extractor": self.name, "weights": self.fingerprint, "resize": self.resize_filter,
            "input": f"{self.input_size[0]}x{self.input_size[1]}x{self.channels}"}

  def describe(self):
    logits = f", {self.num_classes} logits" if self.num_classes else ", no logits"
    return (f"{self.name} ({self.feature_dim}-d features{logits}, {self.input_size[0]}x{self.input_size[1]} input, "
            f"{self.resize_filter} resize, weights {self.fingerprint})")


class ClassifierExtractor(Extractor):
  """The embedded digit classifier (``evaluation.classifier``)."""
  name = "classifier"

  def __init__(self, weights_path=None, resize_filter=None):
    super().__init__(name="classifier_extractor")
    from evaluation import classifier  # pylint: disable=g-import-not-at-top
    weights, self.metadata = classifier.load(weights_path)
    self.net = classifier.DigitClassifier(weights)
    self.input_size = (classifier.RESOLUTION, classifier.RESOLUTION)
    self.channels = classifier.CHANNELS
    self.feature_dim = classifier.FEATURE_DIM
    self.num_classes = classifier.NUM_CLASSES
    self.resize_filter = resize_filter or "bilinear"
    self.fingerprint = classifier.fingerprint(weights)

  def network(self, pixels):
    return self.net(pixels / 127.5 - 1.0)


def build(name, *, strategy=None, inception_weights=None, resize_filter=None, classifier_weights=None,
          weights_flag="--inception_weights"):
  """Builds the extractor ``name`` (its variables under ``strategy.scope()`` when given). Raises UserError.

  ``weights_flag`` names the setting that holds ``inception_weights``, for error messages.
  """
  require(name in EXTRACTORS, f"unknown --extractor={name!r}: choose one of {', '.join(EXTRACTORS)}")
  require(resize_filter in (None,) + RESIZE_FILTERS,
          f"unknown resize filter {resize_filter!r}: choose one of {', '.join(RESIZE_FILTERS)}")
  if name == "inception":
    from evaluation import inception  # pylint: disable=g-import-not-at-top
    inception.check_path(inception_weights, weights_flag)  # before anything slow
  scope = strategy.scope() if strategy is not None else _NoScope()
  with scope:
    if name == "classifier":
      return ClassifierExtractor(classifier_weights, resize_filter)
    from evaluation import inception  # pylint: disable=g-import-not-at-top
    return inception.load(inception_weights, resize_filter=resize_filter, weights_flag=weights_flag)


class _NoScope:

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False
