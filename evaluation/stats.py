"""Running statistics of a stream of feature vectors and class logits (host only, float64).

What the metrics need from a set of images, accumulated batch by batch so 50k images never sit in memory:
  - FID: the count, the sum and the sum of outer products of the features (mean and covariance follow);
  - Inception Score: for each of ``splits`` parts of the set, the sum of the class probabilities p(y|x) and the
    sum of their entropies H(p(y|x)) (the score of a part follows, see ``metrics.inception_score_from_sums``);
  - KID and precision/recall: the features themselves, but only ``keep`` of them.

The sums are taken relative to a *shift* vector c, the mean of the first batch, so the covariance
E[(x-c)(x-c)^T] - (m-c)(m-c)^T doesn't lose digits to cancellation when the mean is large next to the spread. The
devices compute each batch's sums relative to the current shift (``evaluation.features``): their first batch is
summed about zero and then re-expressed exactly relative to its mean (``recenter``); this class adds the sums in
float64. On the host (``add``) the first batch is shifted by its own mean before it is summed.

Which images form the splits and which features are kept doesn't depend on the order of the stream: a seeded
permutation ranks the stream's ``total`` images; the split of an image is its rank's part of
[j * total // splits, (j + 1) * total // splits) (the parts the reference Inception Score code of Salimans et al.
cuts a shuffled array into), and an image's features are kept when its rank is below ``keep`` (a uniform random
subset). Real data read in a class-sorted or locally clustered order would otherwise give each split a few classes.
"""

import io
import json

import numpy as np
import tensorflow as tf

from genscale.errors import UserError


def split_starts(total, splits):
  """First rank of each split, int64 [splits]: j * total // splits."""
  return (np.arange(splits, dtype=np.int64) * int(total)) // int(splits)


def split_of(rank, starts):
  """The split of each rank: the number of split starts after the first that are <= rank."""
  return np.searchsorted(np.asarray(starts)[1:], np.asarray(rank), side="right")


class FeatureStats:
  """Streaming statistics of features and logits. Host only.

  Args:
    dim: feature dimension.
    num_classes: logits width; 0 when the extractor has no logits (no Inception Score).
    total: the number of images the stream will have.
    splits: Inception Score splits (fewer when ``total`` is smaller).
    keep: how many features to keep (a random subset) for KID and precision/recall.
    seed: seed of the permutation that assigns images to splits and to the kept subset.
  """

  def __init__(self, dim, num_classes=0, total=1, splits=10, keep=0, seed=0):
    self.dim = int(dim)
    self.num_classes = int(num_classes)
    self.total = int(total)
    if self.total < 1:
      raise ValueError(f"total={total}: a stream needs at least one image")
    self.splits = max(1, min(int(splits), self.total))
    self.keep = min(int(keep), self.total)
    self.seed = int(seed)
    rank = np.random.default_rng(self.seed).permutation(self.total)
    self.split_table = split_of(rank, split_starts(self.total, self.splits)).astype(np.int32)
    self.keep_mask = rank < self.keep
    self.count = 0
    self.shift = np.zeros([self.dim], np.float64)
    self.shifted = False
    self.centred_sum = np.zeros([self.dim], np.float64)
    self.centred_outer = np.zeros([self.dim, self.dim], np.float64)
    self.split_probs = np.zeros([self.splits, self.num_classes], np.float64)
    self.split_entropy = np.zeros([self.splits], np.float64)
    self.split_count = np.zeros([self.splits], np.float64)
    # The extractor's decisions (argmax of the logits): images per class, and for generated images with asked labels
    # the number whose decision is the asked label (--metrics=classes).
    self.class_counts = np.zeros([self.num_classes], np.float64)
    self.label_hits = 0.0
    self.labelled = 0.0
    self._kept = []

  # ---- accumulation

  def add_sums(self, count, centred_sum, centred_outer, split_probs=None, split_entropy=None, split_count=None,
               class_counts=None, label_hits=None, labelled=None):
    """Adds one batch's sums, computed relative to ``self.shift`` (float32 or float64 arrays)."""
    if self.num_classes and class_counts is not None:
      self.class_counts += np.asarray(class_counts, np.float64)
    if labelled is not None:
      self.label_hits += float(label_hits)
      self.labelled += float(labelled)
    self.count += int(round(float(count)))
    self.centred_sum += np.asarray(centred_sum, np.float64)
    self.centred_outer += np.asarray(centred_outer, np.float64)
    if self.num_classes and split_probs is not None:
      self.split_probs += np.asarray(split_probs, np.float64)
      self.split_entropy += np.asarray(split_entropy, np.float64)
      self.split_count += np.asarray(split_count, np.float64)
    if not self.shifted and self.count > 0:
      # From now on the sums are relative to the mean of what has been seen (in practice: the first batch),
      # rounded to float32 so the devices subtract exactly the same vector.
      self.recenter((self.shift + self.centred_sum / self.count).astype(np.float32).astype(np.float64))
      self.shifted = True

  def recenter(self, shift):
    """Re-expresses the sums relative to a new shift, exactly (float64 algebra on the sums)."""
    d = np.asarray(shift, np.float64) - self.shift
    s = self.centred_sum
    self.centred_outer = self.centred_outer - np.outer(s, d) - np.outer(d, s) + self.count * np.outer(d, d)
    self.centred_sum = s - self.count * d
    self.shift = np.asarray(shift, np.float64).copy()

  def wants_features(self, first, count):
    """Whether any of the images [first, first + count) belongs to the kept subset."""
    return bool(self.keep_mask[first:first + count].any())

  def keep_features(self, features, first):
    """Keeps the rows of ``features`` (images first, first + 1, ...) that belong to the kept subset."""
    features = np.asarray(features, np.float32)[:max(0, self.total - first)]
    rows = features[self.keep_mask[first:first + len(features)]]
    if len(rows):
      self._kept.append(rows)

  def add(self, features, logits=None):
    """Adds the next images' features (and logits) on the host: the float64 twin of the device computation."""
    features = np.asarray(features, np.float64)
    if not self.shifted and len(features):
      # The host has the first batch before summing it: shift by its mean at once (the devices sum their
      # first batch about zero, see add_sums).
      self.shift = features.mean(0).astype(np.float32).astype(np.float64)
      self.shifted = True
    first = self.count
    index = first + np.arange(len(features))
    centred = features - self.shift
    sums = dict(count=len(features), centred_sum=centred.sum(0), centred_outer=centred.T @ centred)
    if self.num_classes:
      if logits is None:
        raise ValueError("these statistics track logits; pass them")
      logits = np.asarray(logits, np.float64)
      log_p = logits - logits.max(-1, keepdims=True)
      log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
      p = np.exp(log_p)
      entropy = -(p * log_p).sum(-1)
      member = np.eye(self.splits)[self.split_table[index]]
      sums.update(split_probs=member.T @ p, split_entropy=member.T @ entropy, split_count=member.sum(0),
                  class_counts=np.eye(self.num_classes)[logits.argmax(-1)].sum(0))
    self.add_sums(**sums)
    self.keep_features(features, first)

  # ---- results

  @property
  def mean(self):
    return self.shift + self.centred_sum / max(self.count, 1)

  @property
  def covariance(self):
    """Unbiased sample covariance (divides by count - 1)."""
    if self.count < 2:
      raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
    s = self.centred_sum
    cov = (self.centred_outer - np.outer(s, s) / self.count) / (self.count - 1)
    return (cov + cov.T) / 2.0

  @property
  def features(self):
    """The kept features in stream order, float32 [at most keep, dim]."""
    if not self._kept:
      return np.zeros([0, self.dim], np.float32)
    return np.concatenate(self._kept)

  def inception_score(self):
    """(mean, std) over splits of exp(H(mean p) - mean H(p)), i.e. exp(E KL(p(y|x) || p(y))) per split."""
    if not self.num_classes:
      raise ValueError("no logits were tracked")
    from evaluation import metrics  # pylint: disable=g-import-not-at-top
    return metrics.inception_score_from_sums(self.split_probs, self.split_entropy, self.split_count)

  # ---- files

  def to_arrays(self):
    return {"count": np.asarray(self.count), "dim": np.asarray(self.dim), "num_classes": np.asarray(self.num_classes),
            "total": np.asarray(self.total), "splits": np.asarray(self.splits), "keep": np.asarray(self.keep),
            "seed": np.asarray(self.seed), "shift": self.shift, "centred_sum": self.centred_sum,
            "centred_outer": self.centred_outer, "split_probs": self.split_probs,
            "split_entropy": self.split_entropy, "split_count": self.split_count, "features": self.features}

  @classmethod
  def from_arrays(cls, arrays):
    stats = cls(int(arrays["dim"]), int(arrays["num_classes"]), int(arrays["total"]), int(arrays["splits"]),
                int(arrays["keep"]), int(arrays["seed"]))
    stats.count = int(arrays["count"])
    stats.shift = np.asarray(arrays["shift"], np.float64)
    stats.shifted = stats.count > 0
    stats.centred_sum = np.asarray(arrays["centred_sum"], np.float64)
    stats.centred_outer = np.asarray(arrays["centred_outer"], np.float64)
    stats.split_probs = np.asarray(arrays["split_probs"], np.float64)
    stats.split_entropy = np.asarray(arrays["split_entropy"], np.float64)
    stats.split_count = np.asarray(arrays["split_count"], np.float64)
    features = np.asarray(arrays["features"], np.float32)
    stats._kept = [features] if len(features) else []  # pylint: disable=protected-access
    return stats

  def save(self, path, keys):
    """Writes the statistics and the ``keys`` (a JSON-able dict saying what they describe) as one .npz."""
    buffer = io.BytesIO()  # np.savez seeks; a gs:// GFile can't while writing
    np.savez(buffer, keys=np.asarray(json.dumps(keys, sort_keys=True)), **self.to_arrays())
    directory = path.rsplit("/", 1)[0] if "/" in path else ""
    if directory:
      tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(buffer.getvalue())

  @classmethod
  def load(cls, path):
    """(statistics, keys) from a file written by ``save``. Raises UserError for a file that isn't one."""
    try:
      with tf.io.gfile.GFile(path, "rb") as f:
        data = np.load(io.BytesIO(f.read()))
        arrays = {k: data[k] for k in data.files}
      keys = json.loads(str(arrays.pop("keys")))
      return cls.from_arrays(arrays), keys
    except (OSError, ValueError, KeyError) as e:
      raise UserError(f"{path} is not a genscale reference-statistics file ({type(e).__name__}); delete it or "
                      "pass another --reference") from e
