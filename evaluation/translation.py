"""Held-out figures of an unpaired translator (CycleGAN): ``--metrics=translation``.

On held-out images of each domain (the ``test`` split of each of the run's two data specs, or ``--nll_data`` given
as ``unpaired:SPEC_A|SPEC_B``):
  cycle_l1_a, cycle_l1_b   mean |F(G(a)) - a| and |G(F(b)) - b|: how much of an image survives the round trip.
When domain B is a known transform T of domain A's images (the embedded task: B's strokes are ``thicken``ed), each
held-out a also has its true translation T(a), so the translator gets real numbers, not only pictures:
  paired_error             mean |G(a) - T(a)|;
  identity_baseline        mean |a - T(a)|, the error of not translating at all;
  paired_ratio             identity_baseline / paired_error (how many times better than doing nothing);
  paired_error_ba          mean |F(T(a)) - a|, the other direction on the same pairs;
  label_agreement          the fraction of a's whose translation, taken back by T's inverse (``thin``), the
                           embedded digit classifier gives a's label (with ``label_agreement_std``, its standard
                           error); ``label_reference`` is the same for T(a) itself, the best a translator can do.
Differences are in units of the whole intensity range (pixels in [0, 1]), averaged over pixels and images.
"""

import math

import numpy as np

from evaluation import classifier as classifier_lib
from evaluation import likelihood
from genscale import images as image_lib
from genscale.errors import UserError, require
from pipelines import embedded
from pipelines import transforms
import pipelines

FIGURES = ("cycle_l1_a", "cycle_l1_b", "paired_error", "identity_baseline", "paired_ratio", "paired_error_ba",
           "label_agreement", "label_reference")


def check_model(model):
  require(hasattr(model, "translate"), f"--metrics=translation needs a translator (cyclegan); "
          f"{type(model).__name__} translates nothing")


def domains(spec):
  """The two specs of an ``unpaired:SPEC_A|SPEC_B`` spec. Raises UserError for any other."""
  rest = str(spec)[len("unpaired:"):] if str(spec).startswith("unpaired:") else ""
  first, bar, second = rest.partition("|")
  require(bar and first and second, f"{spec} is not two domains: give held-out data as unpaired:SPEC_A|SPEC_B")
  return first, second


def heldout_domain(spec):
  """The held-out split of one domain's spec: ``test`` for the embedded domains and TFDS (``trainA`` ->
  ``testA``, as the cycle_gan datasets name them). Raises UserError when there is none to name."""
  parts = str(spec).split(":")
  if parts[0] == "embedded":
    return ":".join([*parts[:2], "test"])
  if parts[0] == "tfds" and len(parts) >= 2:
    split = parts[2] if len(parts) > 2 else "train"
    return ":".join([*parts[:2], split.replace("train", "test") if "train" in split else split])
  raise UserError(f"the held-out split of {spec} is unknown: pass --nll_data=unpaired:SPEC_A|SPEC_B with held-out "
                  "data of both domains")


def known_transform(spec_a, spec_b):
  """(T, T's partial inverse) on uint8 images when domain B is T of domain A's images, else None."""
  kind = lambda spec: str(spec).split(":")[:2]
  if kind(spec_a) == ["embedded", "mnist-a"] and kind(spec_b) == ["embedded", "mnist-b"]:
    return embedded.thicken, embedded.thin
  return None


class Directions:
  """The translator's two maps and round trips as per-example methods for ``LikelihoodRunner``."""

  def __init__(self, model):
    self.model = model

  def a_to_b(self, x, labels):
    del labels
    return self.model.translate(x, "AtoB")

  def b_to_a(self, x, labels):
    del labels
    return self.model.translate(x, "BtoA")

  def a_cycle(self, x, labels):
    del labels
    return self.model.translate(self.model.translate(x, "AtoB"), "BtoA")

  def b_cycle(self, x, labels):
    del labels
    return self.model.translate(self.model.translate(x, "BtoA"), "AtoB")


def _l1(x, y):
  """Mean absolute difference of [-1, 1] images, in units of the intensity range."""
  return float(np.mean(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) / 2.0


def _classify(images_uint8):
  weights, _ = classifier_lib.load()
  net = classifier_lib.DigitClassifier(weights)
  logits = [net(transforms.to_model_range(images_uint8[i:i + 256]))[1].numpy()
            for i in range(0, len(images_uint8), 256)]
  return np.concatenate(logits).argmax(axis=-1)


def evaluate(runtime, model, spec, resolution, channels, num=None, batch_size=64, input_options=None,
             show_progress=True, heldout_of_spec=True):
  """({figure: value}, the record's extra fields). ``spec``: the run's ``unpaired:`` data, whose domains' held-out
  splits are scored (``heldout_of_spec``), or held-out ``unpaired:`` data itself. With ``num``, at most that many
  images of each domain, spread evenly over it."""
  check_model(model)
  spec_a, spec_b = domains(spec)
  heldout = [heldout_domain(s) for s in (spec_a, spec_b)] if heldout_of_spec else [spec_a, spec_b]
  resolution = pipelines.parse_resolution(resolution)
  runner = likelihood.LikelihoodRunner(runtime, Directions(model), batch_size)
  arrays = []
  for domain in heldout:
    images, labels = pipelines.open_source(domain, input_options).arrays(resolution, int(channels))
    keep = likelihood.spread(len(images), num)
    arrays.append((images[keep], labels[keep]))
  run = lambda name, images, labels: runner.per_example(name, transforms.to_model_range(images).numpy(), labels,
                                                        show_progress, what="translation").astype(np.float32)
  (a, a_labels), (b, b_labels) = arrays
  a_float, b_float = (transforms.to_model_range(x).numpy() for x in (a, b))
  values = {"cycle_l1_a": _l1(run("a_cycle", a, a_labels), a_float),
            "cycle_l1_b": _l1(run("b_cycle", b, b_labels), b_float)}
  extra = {"translation_data": f"unpaired:{heldout[0]}|{heldout[1]}", "translation_count": [len(a), len(b)]}
  transform = known_transform(spec_a, spec_b)
  if transform is not None:
    forward, inverse = transform
    target = forward(a)
    target_float = transforms.to_model_range(target).numpy()
    translated = run("a_to_b", a, a_labels)
    values["paired_error"] = _l1(translated, target_float)
    values["identity_baseline"] = _l1(a_float, target_float)
    values["paired_ratio"] = values["identity_baseline"] / max(values["paired_error"], 1e-12)
    values["paired_error_ba"] = _l1(run("b_to_a", target, a_labels), a_float)
    # The classifier (it knows digits only), loaded once: the translations and T(a), both taken back by T's inverse.
    read = _classify(np.concatenate([inverse(image_lib.to_uint8(translated)), inverse(target)]))
    agree, reference = read[:len(a)] == a_labels, read[len(a):] == a_labels
    values["label_agreement"] = float(agree.mean())
    values["label_agreement_std"] = math.sqrt(agree.mean() * (1 - agree.mean()) / len(agree))
    values["label_reference"] = float(reference.mean())
  return values, extra


def describe(values):
  """One line of the figures for a person."""
  line = f"cycle L1 {values['cycle_l1_a']:.4f} (A) {values['cycle_l1_b']:.4f} (B)"
  if "paired_error" in values:
    line += (f"; paired error {values['paired_error']:.4f} vs {values['identity_baseline']:.4f} without translating "
             f"({values['paired_ratio']:.1f}x better), B->A {values['paired_error_ba']:.4f}; label agreement "
             f"{100 * values['label_agreement']:.1f}% ± {100 * values['label_agreement_std']:.1f} "
             f"(T(a) itself: {100 * values['label_reference']:.1f}%)")
  return line

