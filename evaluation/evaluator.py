"""Scores of a model (or of a second data source) against reference statistics: the library behind
``launch.evaluate`` and the training loop's periodic evaluation.

``Evaluator(runtime, model, config, info, workdir)`` reads its settings from the config's ``eval_*`` keys (each can
be overridden by argument), builds the feature extractor under the runtime's strategy, and on the first call
loads or computes the reference statistics. ``evaluator(step)`` then generates ``num`` images from fixed seeds on
every replica, scores them, appends a line to ``<workdir>/metrics.jsonl`` and returns TensorBoard scalars
(``eval/<metric>_<extractor>``, e.g. ``eval/fid_classifier``).

Config keys (all optional):
  eval_every              steps between evaluations during training; 0 = off (read by the training loop)
  eval_num                generated images per evaluation (10,000)
  eval_metrics            comma-separated: fid, kid, is, pr, nll, error ("fid,kid"); nll: the held-out likelihood
                          (exact, a bound or an estimate) of models that have one (evaluation/likelihood.py);
                          error: the held-out error of a model that classifies (evaluation/classification.py);
                          translation: a translator's held-out figures (evaluation/translation.py);
                          classes: the embedded classifier's decisions on the samples: the share of each class
                          (min and max) and, for a class-conditional model, the share that is the asked class
  eval_extractor          classifier | inception ("classifier")
  eval_inception_weights  path of the Inception weights, for eval_extractor=inception
  eval_data               reference data spec (default: the run's ``data``)
  eval_batch_size         images per compiled call (64)
  eval_nll_samples        importance samples k of the IWAE bound (64)
  eval_nll_data           held-out data of nll, error and translation (default: the test split of the run's data)
  eval_ais_runs           AIS runs of an energy model's log Z (100)
  eval_ais_betas          AIS intermediate distributions (14,500)

Reference statistics depend on the data spec, resolution, channels, number of images, the extractor (name,
weights fingerprint, input size, resize filter), the number of features kept and the IS splits. They are cached
in ``<workdir>/eval/reference-<extractor>-<hash of those keys>.npz``, or at an explicit path, which is refused
with a one-line error when its keys differ. The reference uses every image of the data (up to
``reference_num``, 50,000), read once in a fixed shuffled order.

Memory: the statistics are streamed (FeatureStats); KID and precision/recall use the first ``keep`` features of
each set (10,000 by default: 80 MB for Inception's 2048-d features), so with ``num`` larger than ``keep`` they
are computed on a subset while FID and IS use every image.
"""

import dataclasses
import datetime
import hashlib
import json
import math
import os
from typing import Optional

from absl import logging
import tensorflow as tf

from evaluation import classification
from evaluation import extractors as extractors_lib
from evaluation import likelihood
from evaluation import metrics as metrics_lib
from evaluation import translation
from evaluation.features import FeatureRunner
from evaluation.stats import FeatureStats
from genscale import gcs
from genscale.errors import UserError, require
from genscale.progress import Progress
import pipelines

METRICS = ("fid", "kid", "is", "pr", "nll", "error", "translation", "classes")
# Scored on held-out data, not on samples: the likelihood (evaluation/likelihood.py), a classifier's error
# (evaluation/classification.py) and a translator's figures (evaluation/translation.py).
LIKELIHOOD_METRICS = ("nll", "error", "translation")
REFERENCE_FORMAT = 1


def parse_metrics(text, flag="--metrics"):
  """"fid,kid" -> ("fid", "kid"), validated. Raises UserError."""
  names = tuple(dict.fromkeys(m.strip().lower() for m in str(text).split(",") if m.strip()))
  require(names, f"{flag} is empty: choose from {', '.join(METRICS)}")
  for name in names:
    require(name in METRICS, f"unknown {flag} entry {name!r}: choose from {', '.join(METRICS)}")
  return names


# EvalSettings fields that a run's config sets, and their config keys.
CONFIG_KEYS = {"num": "eval_num", "metrics": "eval_metrics", "extractor": "eval_extractor",
               "inception_weights": "eval_inception_weights", "data": "eval_data", "batch_size": "eval_batch_size",
               "nll_samples": "eval_nll_samples", "nll_data": "eval_nll_data", "ais_runs": "eval_ais_runs",
               "ais_betas": "eval_ais_betas"}


@dataclasses.dataclass
class EvalSettings:
  """What an evaluation computes and how. Field comments give the defaults' reasons."""
  metrics: tuple = ("fid", "kid")
  num: int = 10_000  # generated images; published FIDs use 50,000
  extractor: str = "classifier"
  inception_weights: Optional[str] = None
  resize: Optional[str] = None  # None: the extractor's default filter
  data: Optional[str] = None  # reference data spec; None: the run's
  reference: Optional[str] = None  # reference statistics file; None: cached under the workdir
  reference_num: int = 50_000  # at most this many reference images
  batch_size: int = 64
  seed: int = 0  # generation seed: every evaluation of a run scores the same latents
  keep: int = 10_000  # features kept per set for KID and precision/recall
  kid_subsets: int = 100  # Bińkowski et al.: 100 subsets of 1,000
  kid_subset_size: int = 1000
  is_splits: int = 10  # Salimans et al.
  pr_k: int = 3  # Kynkäänniemi et al.
  ema: bool = True
  nll_samples: int = 64  # IWAE's k; 5,000 in Burda et al.
  nll_data: Optional[str] = None  # held-out data of the likelihood; None: the test split of the run's data
  nll_num: Optional[int] = None  # at most this many held-out images; None: all
  ais_runs: int = 100  # AIS runs for an energy model's log Z (Salakhutdinov & Murray 2008: 100)
  ais_betas: int = 14_500  # AIS intermediate distributions (the paper's 14,500)
  config_named: tuple = ()  # fields the user sets through the config: messages name --config.eval_* for them

  def __post_init__(self):
    if isinstance(self.metrics, str):  # "fid,kid" as given on a command line: a tuple of names from the start
      self.metrics = tuple(m.strip().lower() for m in self.metrics.split(",") if m.strip())

  @classmethod
  def from_config(cls, config, **overrides):
    """Settings from the config's eval_* keys, then ``overrides`` (fields; None values are ignored)."""
    values = {field: config.get(key) for field, key in CONFIG_KEYS.items() if config.get(key) is not None}
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    settings = cls(config_named=tuple(f for f in CONFIG_KEYS if f not in given), **values)
    settings.validate()
    return settings

  def flag(self, field):
    """How the user names a field: ``--config.eval_num`` or ``--num``."""
    return f"--config.{CONFIG_KEYS[field]}" if field in self.config_named else f"--{field}"

  def validate(self):
    """Checks everything that can be checked without building anything. Raises UserError."""
    metrics = self.metrics if isinstance(self.metrics, str) else ",".join(self.metrics)
    self.metrics = parse_metrics(metrics, self.flag("metrics"))
    require(int(self.num) >= 2, f"{self.flag('num')}={self.num} must be at least 2")
    require(self.extractor in extractors_lib.EXTRACTORS,
            f"unknown {self.flag('extractor')}={self.extractor!r}: choose one of "
            f"{', '.join(extractors_lib.EXTRACTORS)}")
    require("classes" not in self.metrics or self.extractor == "classifier",
            f"{self.flag('metrics')}=classes reads the embedded digit classifier's decisions; use "
            f"{self.flag('extractor')}=classifier")
    require(self.resize in (None,) + extractors_lib.RESIZE_FILTERS,
            f"unknown --resize={self.resize!r}: choose one of {', '.join(extractors_lib.RESIZE_FILTERS)}")
    require(int(self.batch_size) >= 1, f"{self.flag('batch_size')}={self.batch_size} must be positive")
    require(int(self.reference_num) >= 2, f"--reference_num={self.reference_num} must be at least 2")
    require(int(self.is_splits) >= 1, f"--is_splits={self.is_splits} must be at least 1")
    require(int(self.kid_subsets) >= 1 and int(self.kid_subset_size) >= 2,
            "--kid_subsets must be at least 1 and --kid_subset_size at least 2")
    require(int(self.pr_k) >= 1, f"--pr_k={self.pr_k} must be at least 1")
    require(int(self.nll_samples) >= 1, f"{self.flag('nll_samples')}={self.nll_samples} must be at least 1")
    require(int(self.ais_runs) >= 2, f"{self.flag('ais_runs')}={self.ais_runs} must be at least 2 (the band needs "
            "a spread)")
    require(int(self.ais_betas) >= 2, f"{self.flag('ais_betas')}={self.ais_betas} must be at least 2")
    if self.needs_features:
      need = int(self.pr_k) + 1 if "pr" in self.metrics else 2
      require(int(self.keep) >= need, f"--keep={self.keep}: KID and precision/recall need at least {need} features")
    if self.extractor == "inception":
      from evaluation import inception  # pylint: disable=g-import-not-at-top
      inception.check_path(self.inception_weights, self.flag("inception_weights"), self.flag("extractor"))

  @property
  def image_metrics(self):
    """The metrics scored on generated images (all but the held-out ones)."""
    return tuple(m for m in self.metrics if m not in LIKELIHOOD_METRICS)

  @property
  def needs_features(self):
    return "kid" in self.metrics or "pr" in self.metrics

  @property
  def needs_reference(self):
    return any(m in self.metrics for m in ("fid", "kid", "pr"))


def compute_metrics(settings, reference, generated, what="generated", show_progress=False):
  """{name: value} and warnings for the requested metrics (host). ``reference`` may be None for IS only."""
  values, warnings = {}, []

  def progress(total, description):
    return Progress(total, description, unit="it") if show_progress else None

  def close(bar):
    if bar is not None:
      bar.close()

  if "fid" in settings.metrics:
    warnings += metrics_lib.covariance_warnings(reference, "reference")
    warnings += metrics_lib.covariance_warnings(generated, what)
    values["fid"] = metrics_lib.fid(reference, generated)
  if "kid" in settings.metrics:
    bar = progress(settings.kid_subsets, "KID subsets")
    values["kid"], values["kid_std"] = metrics_lib.kernel_inception_distance(
        reference.features, generated.features, settings.kid_subsets, settings.kid_subset_size, seed=settings.seed,
        progress=bar)
    close(bar)
  if "is" in settings.metrics:
    values["is"], values["is_std"] = generated.inception_score()
  if "classes" in settings.metrics:
    values.update(class_shares(generated))
  if "pr" in settings.metrics:
    bar = progress(2 * (len(reference.features) + len(generated.features)), "precision/recall")
    values["precision"], values["recall"] = metrics_lib.precision_recall(reference.features, generated.features,
                                                                         settings.pr_k, progress=bar)
    close(bar)
  return values, warnings


def class_shares(stats):
  """The classifier's decisions on a stream of images: {class_share_k: share of images decided as k,
  class_share_min/max, and, when the images were generated for asked labels, class_agreement (the share decided
  as the asked class) with its binomial standard error}."""
  shares = stats.class_counts / max(stats.count, 1)
  values = {f"class_share_{k}": float(v) for k, v in enumerate(shares)}
  values.update(class_share_min=float(shares.min()), class_share_max=float(shares.max()))
  if stats.labelled:
    agreement = stats.label_hits / stats.labelled
    values.update(class_agreement=float(agreement),
                  class_agreement_std=float(math.sqrt(agreement * (1.0 - agreement) / stats.labelled)))
  return values


def scalar_tags(values, extractor):
  """{"fid": v} -> {"eval/fid_classifier": v}: the TensorBoard tags. Likelihoods (nll_*, bpd_*, pseudo_nll, an
  RBM's log_z) don't depend on the extractor: {"nll_iwae": v} -> {"eval/nll_iwae": v}."""
  independent = ("nll_", "bpd_", "pseudo_nll", "log_z", "error", *translation.FIGURES)
  return {f"eval/{name}" if name.startswith(independent) else f"eval/{name}_{extractor}": float(v)
          for name, v in values.items()}


def append_jsonl(path, record):
  """Appends one JSON line to ``path`` so that concurrent writers lose nothing: locally, one write in append mode
  under an exclusive lock; on gs://, where objects can't be appended to, a rewrite conditional on the object's
  generation, repeated when another writer came between (``genscale.gcs.append_line``)."""
  line = json.dumps(record, sort_keys=True) + "\n"
  if gcs.is_gcs(path):
    gcs.append_line(path, line)
    return
  import fcntl  # pylint: disable=g-import-not-at-top
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  with open(path, "ab+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      end = f.seek(0, os.SEEK_END)
      if end:
        f.seek(end - 1)
        if f.read(1) != b"\n":
          line = "\n" + line  # a line cut off by a crash stays on its own
      f.write(line.encode())
      f.flush()
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _keys_digest(keys):
  return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:10]


class Evaluator:
  """Periodic or one-off evaluation of a model. Host code driving distributed feature extraction.

  Args:
    runtime: the Runtime the model was built with.
    model: a GenerativeModel (None to compare data sources only, see ``evaluate_source``).
    config: the run's ConfigDict (``data``, ``resolution``, ``channels``, ``input`` and the eval_* keys).
    info: the DataInfo of the run's data.
    workdir: the run directory (reference cache and metrics.jsonl), or None to write nothing.
    progress: show progress bars (off inside the training loop if its own bar is on screen).
    log_warnings: log each distinct warning once (absl); they are also kept in ``self.warnings``.
    settings: an EvalSettings to use instead of the config's eval_* keys (the command line builds one).
    **overrides: EvalSettings fields that replace the config's values.
  """

  def __init__(self, runtime, model, config, info, workdir, progress=True, log_warnings=True, settings=None,
               **overrides):
    self.settings = settings if settings is not None else EvalSettings.from_config(config, **overrides)
    self.runtime = runtime
    self.model = model
    self.config = config
    self.info = info
    self.workdir = workdir
    self.show_progress = progress
    self.log_warnings = log_warnings
    self._logged = set()
    self.data = self.settings.data or config.get("data", None) or info.spec
    self.resolution = config.get("resolution", None) or info.resolution
    self.channels = int(config.get("channels", None) or info.channels)
    s = self.settings
    self.extractor = extractors_lib.build(s.extractor, strategy=runtime.strategy, inception_weights=s.inception_weights,
                                          resize_filter=s.resize, weights_flag=s.flag("inception_weights"))
    if "is" in s.metrics and not self.extractor.num_classes:
      raise UserError(f"{s.flag('metrics')}=is needs logits, but {s.inception_weights} has no classification layer "
                      "(a notop file); use weights with the top or drop is")
    self.runner = FeatureRunner(runtime, self.extractor, s.batch_size)
    if model is not None and "nll" in s.metrics:
      likelihood.check_model(model)
    if model is not None and "error" in s.metrics:
      classification.check_model(model)
    if model is not None and "translation" in s.metrics:
      translation.check_model(model)
    if model is not None and s.image_metrics and not model.samples_from_prior:
      raise UserError(f"{s.flag('metrics')}={','.join(s.image_metrics)} scores samples, and "
                      f"{type(model).__name__} has no prior to sample from; use nll (if it has a likelihood) or a "
                      "model that samples")
    self.notes = []
    if s.image_metrics and s.extractor == "classifier" and not str(self.data).startswith("embedded:mnist"):
      self.notes.append(f"the classifier extractor knows digits only; its scores on {self.data} say little "
                        "(use --extractor=inception)")
    self._reference = None
    self.reference_path = None
    self.last_record = None
    self.warnings = []

  # ---- reference statistics

  def _progress(self, total, description):
    return Progress(total, description, unit="img") if self.show_progress else None

  def reference_keys(self, count):
    keys = {"format": REFERENCE_FORMAT, "data": str(self.data),
            "resolution": "x".join(str(v) for v in pipelines.parse_resolution(self.resolution)),
            "channels": self.channels, "count": int(count),
            "features_kept": min(int(self.settings.keep), int(count)), "is_splits": int(self.settings.is_splits)}
    keys.update(self.extractor.keys())
    return keys

  def reference_stats(self):
    """The reference FeatureStats: loaded from the cache, or computed once (and cached by the chief)."""
    if self._reference is not None:
      return self._reference
    source = pipelines.open_source(self.data, self.config.get("input", None))
    count = min(int(source.info.count), int(self.settings.reference_num))
    require(count >= 2, f"the reference data {self.data} has {source.info.count} images; need at least 2")
    keys = self.reference_keys(count)
    path = self.settings.reference
    if path is None and self.workdir:
      path = os.path.join(self.workdir, "eval", f"reference-{self.extractor.name}-{_keys_digest(keys)}.npz")
    self.reference_path = path
    # Every worker must take the same branch: computing runs collectives (see FeatureRunner.all_workers).
    if path and self.runner.all_workers(tf.io.gfile.exists(path)):
      stats, stored = FeatureStats.load(path)
      for key, wanted in keys.items():
        if stored.get(key) != wanted:
          raise UserError(f"--reference={path} holds statistics for {key}={stored.get(key)!r}, but this evaluation "
                          f"needs {key}={wanted!r}; pass another --reference or delete the file to recompute it")
      self._reference = stats
      return stats
    progress = self._progress(count, f"reference {self.data}")
    stats = self.runner.of_source(source, resolution=self.resolution, channels=self.channels, num=count,
                                  splits=self.settings.is_splits, keep=min(int(self.settings.keep), count),
                                  progress=progress)
    if progress:
      progress.close()
    if path and self.runtime.is_chief:
      stats.save(path, keys)
    self._reference = stats
    return stats

  def prepare(self):
    """Loads or computes the reference statistics now (otherwise the first evaluation does)."""
    if self.settings.needs_reference:
      self.reference_stats()
    return self

  # ---- evaluations

  def _finish(self, step, generated, what, extra, values=None):
    s = self.settings
    reference = self.reference_stats() if s.needs_reference else None
    warnings = []
    if generated is not None:
      values_of_images, warnings = compute_metrics(s, reference, generated, what, show_progress=self.show_progress)
      values = {**values_of_images, **(values or {})}
    self.warnings = self.notes + warnings
    for message in self.warnings:
      if self.log_warnings and message not in self._logged:
        logging.warning("%s", message)
        self._logged.add(message)
    record = {"step": None if step is None else int(step), "extractor": self.extractor.name,
              "extractor_weights": self.extractor.fingerprint, "resize": self.extractor.resize_filter,
              "num": None if generated is None else int(generated.count), "data": str(self.data),
              "reference_count": None if reference is None else int(reference.count), "metrics": values,
              "warnings": list(self.warnings),
              "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    record.update(extra)
    self.last_record = record
    if self.workdir and self.runtime.is_chief:
      append_jsonl(os.path.join(self.workdir, "metrics.jsonl"), record)
    return scalar_tags(values, self.extractor.name)

  def __call__(self, step, checkpoint=None, **sampling_options):
    """Scores ``settings.num`` images of the model's current weights. Returns {"eval/<metric>_<extractor>": v}.

    ``sampling_options`` go to ``model.generate`` (truncation, sampler steps...).
    """
    require(self.model is not None, "this Evaluator has no model; use evaluate_source")
    s = self.settings
    extra = {"ema": bool(s.ema), "seed": int(s.seed)}
    if checkpoint:
      extra["checkpoint"] = str(checkpoint)
    values = {}
    if "nll" in s.metrics:
      values, nll_extra = likelihood.evaluate(
          self.runtime, self.model, s.nll_data or likelihood.heldout_spec(self.data), self.resolution,
          self.channels, s.nll_samples, num=s.nll_num, batch_size=s.batch_size, seed=s.seed,
          input_options=self.config.get("input", None), show_progress=self.show_progress, ais_runs=s.ais_runs,
          ais_betas=s.ais_betas)
      extra.update(nll_extra)
    if "error" in s.metrics:
      error, error_extra = classification.evaluate(
          self.runtime, self.model, s.nll_data or likelihood.heldout_spec(self.data), self.resolution,
          self.channels, num=s.nll_num, batch_size=s.batch_size, input_options=self.config.get("input", None),
          show_progress=self.show_progress)
      values.update(error)
      extra.update(error_extra)
    if "translation" in s.metrics:
      figures, translation_extra = translation.evaluate(
          self.runtime, self.model, s.nll_data or self.data, self.resolution, self.channels, num=s.nll_num,
          batch_size=s.batch_size, input_options=self.config.get("input", None), show_progress=self.show_progress,
          heldout_of_spec=not s.nll_data)
      values.update(figures)
      extra.update(translation_extra)
    generated = None
    if s.image_metrics:
      if s.needs_reference:
        self.reference_stats()  # first, so its progress bar comes before the evaluation's
      progress = self._progress(s.num, f"evaluate step {step}")
      generated = self.runner.of_model(self.model, seed=s.seed, num=s.num, splits=s.is_splits,
                                       keep=s.keep if s.needs_features else 0, ema=s.ema, progress=progress,
                                       **sampling_options)
      if progress:
        progress.close()
    return self._finish(step, generated, "generated", extra, values)

  def evaluate_source(self, spec, step=None):
    """Scores up to ``settings.num`` images of another data source against the reference (e.g. the real-vs-real
    floor: the held-out test split against the train split)."""
    s = self.settings
    if s.needs_reference:
      self.reference_stats()
    source = pipelines.open_source(spec, self.config.get("input", None))
    count = min(int(s.num), int(source.info.count))
    require(count >= 2, f"{spec} has {source.info.count} images; need at least 2")
    progress = self._progress(count, f"evaluate {spec}")
    stats = self.runner.of_source(source, resolution=self.resolution, channels=self.channels, num=count,
                                  splits=s.is_splits, keep=min(int(s.keep), count) if s.needs_features else 0,
                                  progress=progress)
    if progress:
      progress.close()
    return self._finish(step, stats, spec, {"compare_data": str(spec)})
