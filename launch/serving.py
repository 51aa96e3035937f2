"""A trained model as a TensorFlow SavedModel that serves without genscale: TF Serving, Vertex AI, plain TensorFlow.

The export is a directory ``OUT/<version>/`` (TF Serving's layout; the version is the training step by default)
holding the signatures below, the variables they read and nothing else (no optimizer state, no discriminator), and
``assets.extra/genscale.json``, a description of the inputs that ``launch.serve`` and its demo page read (TF
Serving ignores the directory).

Signatures (every input is one value per example, batch dimension None):
  serving_default  seed int64 [N]; label int32 [N] (conditional models); the family's settings, e.g. truncation
                   float32 [N] (StyleGAN2), steps int32 [N] and guidance float32 [N] (diffusion: the whole sampler
                   runs in the graph, as a while loop).
  from_latent      latent-variable models: z float32 [N, *latent], plus seed when the model draws more randomness
                   (StyleGAN2's noise images), label and the settings as above.
Both return ``images`` (uint8 [N, H, W, C]) and ``images_bytes`` (PNG strings; TF Serving's REST API sends
outputs whose names end in ``_bytes`` base64-encoded).

A translator (CycleGAN; ``TranslationExporter``) has instead:
  serving_default  images uint8 [N, H, W, C] of domain A -> their translations to B (G);
  b_to_a           images of domain B -> A (F);
with the same outputs.

Example i is generated alone, from the random key (seed_i, 0): the image equals the one
``launch.sample --seed=seed_i --num=1`` writes, bit for bit, and does not depend on the other rows of the request.
"""

import json
import os
import posixpath
import time

import tensorflow as tf

from genscale.errors import UserError
from genscale.shapes import parse_resolution
from launch import storage
from models.base import BatchRng

# Ops that TF Serving, the TFLite converter or TF.js refuse or that tie a graph to Python.
FORBIDDEN_OPS = frozenset({"Assert", "PyFunc", "PyFuncStateless", "EagerPyFunc", "Print", "PrintV2"})
METADATA = posixpath.join("assets.extra", "genscale.json")


def to_uint8(images):
  """float images in [-1, 1] -> uint8, rounding half to even, as ``genscale.images.to_uint8`` does on the host."""
  return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0, 255.0), tf.uint8)


def _outputs(images):
  pixels = to_uint8(images)
  png = tf.map_fn(tf.io.encode_png, pixels, fn_output_signature=tf.TensorSpec([], tf.string))
  return {"images": pixels, "images_bytes": png}


class Exporter:
  """The signatures of ``model`` as tf.functions, and the variables they read.

  Args:
    model: a GenerativeModel that samples from a prior (built on one device: no strategy scope needed).
    image_shape: (H, W, C) of its images.
    ema: use the EMA weights.
  """

  def __init__(self, model, image_shape, ema=True):
    if not model.samples_from_prior:
      raise UserError(f"{type(model).__name__} has no prior to sample from, so there is nothing to serve; export a "
                      "model that generates (a GAN, a VAE, a diffusion model)")
    self.model, self.image_shape, self.ema = model, tuple(int(s) for s in image_shape), ema
    self.num_classes = int(getattr(model, "num_classes", 0) or 0)
    self.settings = dict(model.serving_inputs())

  def _specs(self, seed=True):
    specs = {}
    if seed:
      specs["seed"] = tf.TensorSpec([None], tf.int64, name="seed")
    if self.num_classes:
      specs["label"] = tf.TensorSpec([None], tf.int32, name="label")
    for name, (dtype, _) in self.settings.items():
      specs[name] = tf.TensorSpec([None], dtype, name=name)
    return specs

  def _one(self, row, z=None):
    """The image of one example from its row of inputs (scalars; z [*latent] for from_latent)."""
    model = self.model
    rng = BatchRng.alone(row["seed"]) if "seed" in row else None
    labels = row["label"][None] if "label" in row else None
    settings = {name: row[name] for name in self.settings}
    if z is None:
      image = model.serve(rng, labels, ema=self.ema, **settings)
    else:
      image = model.from_latent(z[None], rng, labels, ema=self.ema, **settings)
    return tf.cast(image[0], tf.float32)

  def _map(self, inputs, with_latent):
    spec = tf.TensorSpec(self.image_shape, tf.float32)
    if with_latent:
      rows = dict(inputs)
      z = rows.pop("z")
      return tf.map_fn(lambda args: self._one(args[0], args[1]), (rows, z), fn_output_signature=spec)
    return tf.map_fn(self._one, dict(inputs), fn_output_signature=spec)

  def functions(self):
    """{signature name: tf.function with an input signature}."""
    specs = self._specs()

    def serving_default(**inputs):
      return _outputs(self._map(inputs, False))

    functions = {"serving_default": _with_keywords(serving_default, specs)}
    if self.model.latent_shape is not None:
      latent_specs = dict(self._specs(seed=self.model.latent_needs_seed))
      latent_specs["z"] = tf.TensorSpec([None, *self.model.latent_shape], tf.float32, name="z")

      def from_latent(**inputs):
        return _outputs(self._map(inputs, True))

      functions["from_latent"] = _with_keywords(from_latent, latent_specs)
    return functions

  def tflite_function(self):
    """A tf.function for the TFLite converter: one example's z [1, *latent] (and label [1]) -> images uint8
    [1, H, W, C]. Raises UserError for models whose generator needs more than a latent (``tflite_refusal``)."""
    model = self.model
    if model.latent_shape is None or model.latent_needs_seed:
      raise UserError(f"--format=tflite converts latent-to-image generators (DCGAN, Progressive GAN, the VAE "
                      f"decoder); {type(model).__name__} can't be converted: {tflite_refusal(model)}")
    specs = [tf.TensorSpec([1, *model.latent_shape], tf.float32, name="z")]
    if self.num_classes:
      specs.append(tf.TensorSpec([1], tf.int32, name="label"))

    def single(z, label=None):
      row = {} if label is None else {"label": label[0]}
      return {"images": to_uint8(self._one(row, z[0]))[None]}

    return tf.function(single, input_signature=specs, autograph=False)

  def describe(self):
    """What ``launch.serve`` and its demo page need to know of the inputs: {signature: {input: description}}."""
    common = {}
    common["seed"] = {"dtype": "int64", "default": 0, "min": 0, "max": 2**62}
    if self.num_classes:
      common["label"] = {"dtype": "int32", "default": 0, "min": 0, "max": self.num_classes - 1}
    for name, (dtype, default) in self.settings.items():
      common[name] = {"dtype": dtype.name, "default": default, **self.model.serving_range(name)}
    out = {"serving_default": dict(common)}
    if self.model.latent_shape is not None:
      latent = {k: v for k, v in common.items() if k != "seed" or self.model.latent_needs_seed}
      latent["z"] = {"dtype": "float32", "shape": list(self.model.latent_shape)}
      out["from_latent"] = latent
    return out


class TranslationExporter:
  """The signatures of a translator (a model with ``translate``, trained on two domains): uint8 images in, their
  translations out, either way. Same interface as ``Exporter``."""

  DIRECTIONS = {"serving_default": "AtoB", "b_to_a": "BtoA"}

  def __init__(self, model, image_shape, ema=True):
    del ema  # a translator has no EMA copy
    self.model, self.image_shape = model, tuple(int(s) for s in image_shape)
    self.num_classes = 0

  def functions(self):
    spec = {"images": tf.TensorSpec([None, *self.image_shape], tf.uint8, name="images")}

    def direction(name):
      def translate(images):
        x = tf.cast(images, tf.float32) / 127.5 - 1.0
        return _outputs(tf.cast(self.model.translate(x, self.DIRECTIONS[name]), tf.float32))
      return _with_keywords(translate, spec)

    return {name: direction(name) for name in self.DIRECTIONS}

  def tflite_function(self):
    raise UserError("--format=tflite converts generators that draw from a latent; a translator is exported as a "
                    "SavedModel (its signatures take images)")

  def describe(self):
    image = {"dtype": "uint8", "shape": list(self.image_shape)}
    return {name: {"images": dict(image), "direction": d} for name, d in self.DIRECTIONS.items()}


def _with_keywords(fn, specs):
  """A tf.function taking ``specs``' names as keyword inputs (the names the signature's inputs get)."""
  names = list(specs)

  def positional(*args):
    return fn(**dict(zip(names, args)))

  return tf.function(positional, input_signature=[specs[n] for n in names], autograph=False)


def tflite_refusal(model):
  """Why ``model``'s generator doesn't convert to TFLite's builtin ops."""
  if model.latent_needs_seed:
    return ("its noise images come from the seed, and the project's counter-based random numbers use 64-bit "
            "BitwiseAnd/RightShift, which TFLite has as Flex (select TensorFlow) ops only")
  return ("it has no latent: a sample is a loop of network calls with noise drawn from the seed (a while loop over "
          "the steps and 64-bit bitwise random-number ops, which TFLite has as Flex ops only)")


def convert_tflite(exporter, path):
  """Converts ``exporter.tflite_function()`` with TFLite's builtin ops and writes it to ``path``; returns the
  flatbuffer's size in bytes."""
  fn = exporter.tflite_function()
  concrete = fn.get_concrete_function()
  holder = tf.Module()
  holder.weights = list(concrete.variables)
  converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
  flatbuffer = converter.convert()
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(flatbuffer)
  return len(flatbuffer)


def graph_ops(saved_model_dir):
  """The set of op types in a SavedModel's graphs, functions included."""
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  proto = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(posixpath.join(saved_model_dir, "saved_model.pb"), "rb") as f:
    proto.ParseFromString(f.read())
  ops = set()
  for meta_graph in proto.meta_graphs:
    ops.update(node.op for node in meta_graph.graph_def.node)
    for function in meta_graph.graph_def.library.function:
      ops.update(node.op for node in function.node_def)
  return ops


def check_ops(saved_model_dir):
  """Raises ValueError if the export holds an op that blocks serving or conversion (FORBIDDEN_OPS)."""
  found = sorted(graph_ops(saved_model_dir) & FORBIDDEN_OPS)
  if found:
    raise ValueError(f"the exported graph holds {', '.join(found)}, which TF Serving/TFLite/TF.js can't run")


TFLITE = posixpath.join("assets.extra", "generator.tflite")


def export(run, out, version=None, ema=True, tflite=False):
  """Writes the SavedModel of the loaded ``run`` (``rundir.load_run``) to ``out/<version>`` and returns that path.

  With ``tflite``, also the generator as a TFLite model (``Exporter.tflite_function``) at ``TFLITE`` inside it.

  Refuses an existing version (nothing saved is overwritten). Locally the model is written next to its final place
  and renamed into it, so a server watching ``out`` never sees half a version.
  """
  model, config = run.model, run.config
  version = int(run.step if version is None else version)
  if version < 0:
    raise UserError(f"--version={version} must be a non-negative integer (TF Serving's version directories)")
  final = posixpath.join(out, str(version)) if storage.is_gcs(out) else os.path.join(out, str(version))
  if tf.io.gfile.exists(final):
    raise UserError(f"{final} exists: pass --version=N for a new version, or another --out")
  height, width = parse_resolution(config.resolution)
  kind = TranslationExporter if model.domains == 2 else Exporter
  exporter = kind(model, (height, width, int(config.channels)), ema=ema)
  if tflite:
    exporter.tflite_function()  # refuses a family that doesn't convert before anything is written
  functions = exporter.functions()
  concrete = {name: fn.get_concrete_function() for name, fn in functions.items()}
  root = tf.Module()
  seen, weights = set(), []
  for fn in concrete.values():
    for var in fn.variables:
      if id(var) not in seen:
        seen.add(id(var))
        weights.append(var)
  root.weights = weights  # only what the signatures read
  for name, fn in functions.items():
    setattr(root, name, fn)

  staging = final
  if not storage.is_gcs(out):
    tf.io.gfile.makedirs(out)
    staging = os.path.join(out, f".{version}.partial")
    if tf.io.gfile.exists(staging):
      tf.io.gfile.rmtree(staging)
  started = time.time()
  tf.saved_model.save(root, staging, signatures=concrete)
  check_ops(staging)
  metadata = {
      "format": 1, "family": config.model.name,
      "model": type(model).__name__, "step": int(run.step),
      "weights": "ema" if ema and model.ema_pairs else "raw",
      "image_shape": list(exporter.image_shape), "num_classes": exporter.num_classes,
      "checkpoint": str(run.checkpoint), "signatures": exporter.describe(),
      "config": config.model.to_dict(),
      "seconds_to_export": round(time.time() - started, 1),
  }
  tf.io.gfile.makedirs(posixpath.join(staging, "assets.extra"))
  with tf.io.gfile.GFile(posixpath.join(staging, METADATA), "w") as f:
    f.write(json.dumps(metadata, indent=2) + "\n")
  if tflite:
    convert_tflite(exporter, posixpath.join(staging, TFLITE))
  if staging != final:
    os.replace(staging, final)
  return final
