"""The scores, computed on the host in NumPy from statistics and kept features (``evaluation.stats``).

FID (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to two feature sets,
  d² = |m1 - m2|² + tr(C1) + tr(C2) - 2 tr((C1 C2)^½).
  C1 C2 is not symmetric, but its eigenvalues are those of the symmetric PSD matrix C1^½ C2 C1^½, so the trace of
  its square root is the sum of the square roots of that matrix's eigenvalues. Both square roots come from
  symmetric eigendecompositions (``numpy.linalg.eigh``) with negative rounding noise clipped to zero: no general
  ``sqrtm``, no complex parts to discard, and singular covariances are handled. ``covariance_warnings`` flags the
  covariances that make the number unreliable: fewer samples than dimensions (singular, FID biased upward) and
  near-singular ones (near-duplicate images).

KID (Bińkowski et al. 2018): the unbiased estimate of the squared MMD with the kernel k(x, y) = (x·y / d + 1)³,
  averaged over ``num_subsets`` random subsets of ``subset_size`` features from each set (mean ± std over the
  subsets). Kernel matrices come from float32 dot products and are summed in float64.

Inception Score (Salimans et al. 2016): per split, exp(E_x KL(p(y|x) || p(y))) = exp(H(p̄) - mean H(p(y|x))) with
  p̄ the mean prediction of the split; mean ± std over splits. Splits are random equal parts of the set (the
  reference code's contiguous parts of a shuffled array; see ``evaluation.stats``).

Precision and recall (Kynkäänniemi et al. 2019): every point of a set gets a ball reaching its k-th nearest
  neighbour in its own set (k = 3 by default); precision is the fraction of generated points inside some real
  point's ball, recall the fraction of real points inside some generated point's ball. Distances come from
  float32 dot products, a block of rows at a time.
"""

import numpy as np

from genscale.errors import UserError


# ---- FID


def _psd_sqrt(matrix):
  """Square root of a symmetric positive semi-definite matrix, by eigendecomposition."""
  matrix = (matrix + matrix.T) / 2.0
  values, vectors = np.linalg.eigh(matrix)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(cov1, cov2):
  """tr((C1 C2)^½) for symmetric PSD C1 and C2."""
  root = _psd_sqrt(np.asarray(cov1, np.float64))
  middle = root @ np.asarray(cov2, np.float64) @ root
  values = np.linalg.eigvalsh((middle + middle.T) / 2.0)
  return float(np.sum(np.sqrt(np.clip(values, 0.0, None))))


def frechet_distance(mean1, cov1, mean2, cov2):
  """Squared Fréchet distance between N(mean1, cov1) and N(mean2, cov2); 0 when they are equal.

  Rounding can make the exact-zero case come out a hair below zero; such values are returned as 0.
  """
  mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  if mean1.shape != mean2.shape or cov1.shape != cov2.shape:
    raise ValueError(f"feature shapes differ: {mean1.shape} vs {mean2.shape}")
  diff = mean1 - mean2
  value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt_product(cov1, cov2)
  return max(float(value), 0.0)


def covariance_warnings(stats, what):
  """One-line messages about a covariance that makes FID unreliable (host; empty when it is fine).

  Two checks on the FeatureStats ``stats``:
    - fewer images than dimensions: the covariance is singular by construction (rank < count), and FID is biased
      upward by an amount that depends on the count, so it compares with nothing;
    - near-singular otherwise: many directions (at least 2, and 5% of the dimensions) whose variance is below
      1e-10 of the largest, beyond the features that are (nearly) constant in every image. Inactive or almost
      inactive ReLU units are harmless: they add (almost) nothing to any term. Many flat directions mean (nearly)
      duplicated images, e.g. a collapsed generator. FID stays finite and exact in the directions that vary,
      because the square roots come from eigendecompositions with the (rounding-negative) eigenvalues clipped at
      zero, but it no longer measures the spread the features should have.
  """
  count, dim = int(stats.count), int(stats.dim)
  if count <= dim:
    return [f"FID from {count} {what} features of dimension {dim}: the covariance is singular (rank <= {count - 1}), "
            f"so FID is biased upward and not comparable; use at least {dim + 1} images, ideally 10x more"]
  covariance = stats.covariance
  values = np.linalg.eigvalsh(covariance)
  top = float(values[-1])
  if top <= 0.0:
    return [f"the {what} features are all identical: FID only measures the distance of their means"]
  constant = int(np.sum(np.diag(covariance) <= 1e-8 * top))
  flat = int(np.sum(values <= 1e-10 * top))
  if flat - constant >= max(2, dim // 20):
    return [f"the {what} covariance is near-singular: {flat - constant} of {dim} feature directions have almost no "
            f"variance (besides {constant} constant features); the images may be (near) duplicates, e.g. a "
            "collapsed generator"]
  return []


def fid(real, fake):
  """FID between two FeatureStats."""
  return frechet_distance(real.mean, real.covariance, fake.mean, fake.covariance)


# ---- KID


def _gram(x, y):
  return np.asarray(x, np.float32) @ np.asarray(y, np.float32).T


def polynomial_mmd2_unbiased(x, y):
  """Unbiased MMD² between samples x [m, d] and y [n, d] with k(a, b) = (a·b / d + 1)³."""
  m, n, d = len(x), len(y), x.shape[1]
  if m < 2 or n < 2:
    raise ValueError("the unbiased MMD needs at least 2 samples per set")
  def kernel(a, b):
    k = _gram(a, b).astype(np.float64) / d + 1.0
    return k * k * k  # 3x faster than ** 3, which NumPy computes with pow()

  kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
  within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
  within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
  return float(within_x + within_y - 2.0 * kxy.mean())


def kernel_inception_distance(real, fake, num_subsets=100, subset_size=1000, seed=0, progress=None):
  """(mean, std) of the unbiased polynomial-kernel MMD² over random subsets (without replacement) of each set.

  The subset size is ``subset_size`` or the smaller set's size if that is smaller. ``progress`` (a genscale
  Progress) advances by one per subset.
  """
  size = min(int(subset_size), len(real), len(fake))
  if size < 2:
    raise UserError(f"KID needs at least 2 features per set, got {len(real)} reference and {len(fake)} generated")
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(int(num_subsets)):
    values.append(polynomial_mmd2_unbiased(real[rng.choice(len(real), size, replace=False)],
                                           fake[rng.choice(len(fake), size, replace=False)]))
    if progress is not None:
      progress.update(advance=1)
  values = np.asarray(values)
  return float(values.mean()), float(values.std())


# ---- Inception Score


def inception_score_from_sums(split_probs, split_entropy, split_count):
  """(mean, std) over non-empty splits of exp(H(p̄) - mean H(p(y|x))), from per-split sums."""
  scores = []
  for probs, entropy, count in zip(split_probs, split_entropy, split_count):
    if count <= 0:
      continue
    marginal = probs / count
    positive = marginal[marginal > 0]
    marginal_entropy = -np.sum(positive * np.log(positive))
    scores.append(np.exp(marginal_entropy - entropy / count))
  if not scores:
    raise ValueError("no images in any split")
  scores = np.asarray(scores)
  return float(scores.mean()), float(scores.std())


def inception_score(logits, splits=10):
  """(mean, std) Inception Score of logits [N, K] (host, float64); the reference code's splits."""
  from evaluation.stats import FeatureStats  # pylint: disable=g-import-not-at-top
  logits = np.asarray(logits, np.float64)
  stats = FeatureStats(1, logits.shape[1], total=len(logits), splits=splits)
  stats.add(np.zeros([len(logits), 1]), logits)
  return stats.inception_score()


# ---- precision and recall


def _squared_distances(a, b, b_norms):
  a = np.asarray(a, np.float32)
  d2 = np.sum(a.astype(np.float64)**2, axis=1)[:, None] + b_norms[None, :] - 2.0 * _gram(a, b)
  return np.maximum(d2, 0.0)


def knn_radii(points, k=3, block=1024, progress=None):
  """Squared distance of each point to its k-th nearest neighbour among the others (host, blocks of rows)."""
  points = np.asarray(points, np.float32)
  if len(points) <= k:
    raise UserError(f"precision/recall with k={k} needs more than {k} features per set, got {len(points)}")
  norms = np.sum(points.astype(np.float64)**2, axis=1)
  radii = np.empty(len(points), np.float64)
  for start in range(0, len(points), block):
    d2 = _squared_distances(points[start:start + block], points, norms)
    rows = np.arange(len(d2))
    d2[rows, start + rows] = -1.0  # the point itself sorts first, whatever rounding gave its own distance
    radii[start:start + block] = np.partition(d2, k, axis=1)[:, k]
    if progress is not None:
      progress.update(advance=len(d2))
  return radii


def fraction_covered(queries, points, radii, block=1024, progress=None):
  """Fraction of ``queries`` within the ball (squared radius ``radii``) of at least one of ``points``."""
  points = np.asarray(points, np.float32)
  norms = np.sum(points.astype(np.float64)**2, axis=1)
  inside = 0
  for start in range(0, len(queries), block):
    d2 = _squared_distances(queries[start:start + block], points, norms)
    inside += int(np.sum(np.any(d2 <= radii[None, :], axis=1)))
    if progress is not None:
      progress.update(advance=len(d2))
  return inside / max(len(queries), 1)


def precision_recall(real, fake, k=3, progress=None):
  """(precision, recall) of ``fake`` features against ``real`` ones, with k-NN balls.

  ``progress`` advances by the rows of each block: 2 * (len(real) + len(fake)) in all.
  """
  precision = fraction_covered(fake, real, knn_radii(real, k, progress=progress), progress=progress)
  recall = fraction_covered(real, fake, knn_radii(fake, k, progress=progress), progress=progress)
  return precision, recall
