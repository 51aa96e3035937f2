"""The scores against closed forms and known cases (host NumPy only)."""

import numpy as np
import pytest
import scipy.linalg

from evaluation import metrics
from evaluation.stats import FeatureStats


def _closed_form(mean1, var1, mean2, var2):
  """Fréchet distance of Gaussians whose covariances share eigenvectors, with eigenvalues var1 and var2."""
  return float(np.sum((mean1 - mean2)**2) + np.sum((np.sqrt(var1) - np.sqrt(var2))**2))


def _stats(features):
  stats = FeatureStats(features.shape[1], total=len(features))
  stats.add(features)
  return stats


def test_frechet_distance_of_diagonal_gaussians_has_the_closed_form():
  rng = np.random.default_rng(0)
  m1, m2 = rng.normal(size=6), rng.normal(size=6)
  v1, v2 = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
  value = metrics.frechet_distance(m1, np.diag(v1), m2, np.diag(v2))
  assert value == pytest.approx(_closed_form(m1, v1, m2, v2), rel=1e-10)


def test_frechet_distance_of_commuting_covariances_has_the_closed_form():
  rng = np.random.default_rng(1)
  q, _ = np.linalg.qr(rng.normal(size=(8, 8)))  # shared eigenvectors: C1 and C2 commute
  v1, v2 = rng.uniform(0.05, 4.0, 8), rng.uniform(0.05, 4.0, 8)
  m1, m2 = rng.normal(size=8), rng.normal(size=8)
  value = metrics.frechet_distance(m1, q @ np.diag(v1) @ q.T, m2, q @ np.diag(v2) @ q.T)
  assert value == pytest.approx(_closed_form(m1, v1, m2, v2), rel=1e-9)


def test_frechet_distance_of_general_covariances_matches_a_matrix_square_root():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(10, 10)), rng.normal(size=(10, 10))
  c1, c2 = a @ a.T + 0.1 * np.eye(10), b @ b.T + 0.1 * np.eye(10)  # do not commute
  m1, m2 = rng.normal(size=10), rng.normal(size=10)
  expected = (np.sum((m1 - m2)**2) + np.trace(c1) + np.trace(c2)
              - 2.0 * np.trace(scipy.linalg.sqrtm(c1 @ c2)).real)
  assert metrics.frechet_distance(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-9)


def test_singular_covariances_give_the_closed_form():
  # Zero variances make C1 C2 singular: a general sqrtm struggles there, the eigendecomposition does not.
  m1, m2 = np.array([0.0, 1.0, 2.0, 0.0]), np.array([1.0, 1.0, 0.0, 0.5])
  v1, v2 = np.array([0.0, 2.0, 1e-14, 0.0]), np.array([3.0, 0.0, 1e-14, 0.0])
  value = metrics.frechet_distance(m1, np.diag(v1), m2, np.diag(v2))
  assert value == pytest.approx(_closed_form(m1, v1, m2, v2), rel=1e-12)


def test_few_samples_give_a_finite_fid_and_a_warning():
  rng = np.random.default_rng(3)
  s1, s2 = _stats(rng.normal(size=(5, 20))), _stats(rng.normal(size=(5, 20)) + 1.0)  # rank 4 in 20-d
  value = metrics.fid(s1, s2)
  assert np.isfinite(value) and value > 0
  assert metrics.fid(s1, s1) == pytest.approx(0.0, abs=1e-9)
  [warning] = metrics.covariance_warnings(s1, "generated")
  assert "FID from 5 generated features of dimension 20: the covariance is singular" in warning
  assert "\n" not in warning


def test_near_singular_covariances_are_flagged_but_constant_features_are_not():
  rng = np.random.default_rng(8)
  healthy = rng.normal(size=(500, 12)) + 3.0 * rng.normal(size=(500, 1))  # correlated: top eigenvalue ~ 10x
  assert not metrics.covariance_warnings(_stats(healthy), "reference")
  dead = healthy.copy()
  dead[:, :3] = 0.0  # inactive ReLU units: the same in every image, harmless
  dead[:, 3] = 0.0
  dead[:5, 3] = 5e-4  # an almost inactive one: variance 2.5e-9, below 1e-10 of the top eigenvalue
  assert not metrics.covariance_warnings(_stats(dead), "reference")
  collapsed = np.repeat(rng.normal(size=(4, 12)), 125, axis=0)  # 4 distinct images, each 125 times
  [warning] = metrics.covariance_warnings(_stats(collapsed), "generated")
  assert warning.startswith("the generated covariance is near-singular: 9 of 12 feature directions")
  [warning] = metrics.covariance_warnings(_stats(np.ones([50, 12])), "generated")
  assert "all identical" in warning


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise():
  rng = np.random.default_rng(4)
  features = rng.gamma(2.0, 1.0, size=(3000, 16))  # skewed, non-Gaussian features
  reference = _stats(features)
  assert metrics.fid(reference, _stats(features)) == pytest.approx(0.0, abs=1e-8)
  noise = rng.normal(size=features.shape)
  values = [metrics.fid(reference, _stats(features + sigma * noise)) for sigma in (0.1, 0.3, 1.0, 3.0)]
  assert values[0] > 1e-4
  assert all(a < b for a, b in zip(values, values[1:])), values


def test_kid_is_unbiased_for_samples_of_one_distribution_and_positive_for_two():
  rng = np.random.default_rng(5)
  same, shifted, biased = [], [], []
  for trial in range(20):
    x, y = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same.append(metrics.kernel_inception_distance(x, y, num_subsets=20, subset_size=100, seed=trial)[0])
    z = rng.normal(size=(300, 8)) + 0.3
    shifted.append(metrics.kernel_inception_distance(x, z, num_subsets=20, subset_size=100, seed=trial)[0])
    k = lambda a, b: (a @ b.T / 8 + 1.0)**3  # pylint: disable=cell-var-from-loop
    biased.append(k(x[:100], x[:100]).mean() + k(y[:100], y[:100]).mean() - 2 * k(x[:100], y[:100]).mean())
  assert abs(np.mean(same)) < 0.02
  assert np.mean(biased) > 0.1  # the V-statistic (diagonals included) would fail the line above
  assert np.mean(shifted) > 0.2


def test_kid_subsets_shrink_to_the_smaller_set_and_report_their_spread():
  rng = np.random.default_rng(6)
  mean, std = metrics.kernel_inception_distance(rng.normal(size=(50, 4)), rng.normal(size=(30, 4)) + 2.0,
                                                num_subsets=10, subset_size=1000)
  assert mean > 0 and std > 0


def test_the_unbiased_mmd_is_the_mean_over_distinct_pairs():
  rng = np.random.default_rng(9)
  x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.5
  k = lambda a, b: (a @ b / 3 + 1.0)**3
  within_x = np.mean([k(x[i], x[j]) for i in range(7) for j in range(7) if i != j])
  within_y = np.mean([k(y[i], y[j]) for i in range(5) for j in range(5) if i != j])
  across = np.mean([k(a, b) for a in x for b in y])
  assert metrics.polynomial_mmd2_unbiased(x, y) == pytest.approx(within_x + within_y - 2 * across, rel=1e-6)


def test_inception_score_of_a_perfect_uniform_classifier_is_the_number_of_classes():
  labels = np.arange(1000) % 10
  logits = 50.0 * np.eye(10)[labels]  # confident and balanced
  score, spread = metrics.inception_score(logits, splits=1)
  assert score == pytest.approx(10.0, rel=1e-6) and spread == 0.0
  # Ten random splits of 100 are not exactly balanced, so each scores a little under 10, as in the reference.
  score, _ = metrics.inception_score(logits, splits=10)
  assert 9.0 < score < 10.0


def test_inception_score_of_a_constant_classifier_is_one():
  logits = np.tile(np.array([0.0, 0.0, 30.0, 0.0]), (200, 1))
  score, spread = metrics.inception_score(logits, splits=5)
  assert score == pytest.approx(1.0, abs=1e-9) and spread == pytest.approx(0.0, abs=1e-9)


def test_inception_score_of_an_uncertain_classifier_is_one():
  score, _ = metrics.inception_score(np.zeros([100, 7]), splits=2)  # uniform p(y|x): no information
  assert score == pytest.approx(1.0, abs=1e-9)


def test_knn_radii_on_a_line():
  points = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
  np.testing.assert_allclose(metrics.knn_radii(points, k=1), [1, 1, 4, 9, 16])
  np.testing.assert_allclose(metrics.knn_radii(points, k=2), [9, 4, 9, 16, 49])


def test_precision_and_recall_on_point_clouds_with_known_overlap():
  rng = np.random.default_rng(7)
  real = rng.uniform(0.0, 1.0, size=(2000, 2))

  def pr(low, high):
    fake = np.stack([rng.uniform(low, high, 2000), rng.uniform(0.0, 1.0, 2000)], axis=1)
    return metrics.precision_recall(real, fake, k=3)

  precision, recall = pr(0.0, 1.0)  # the same square
  assert precision > 0.9 and recall > 0.9
  precision, recall = pr(0.5, 1.5)  # half of each inside the other
  assert precision == pytest.approx(0.5, abs=0.06) and recall == pytest.approx(0.5, abs=0.06)
  precision, recall = pr(0.0, 0.5)  # a collapsed generator: all inside, half the reals covered
  assert precision > 0.9 and recall == pytest.approx(0.5, abs=0.06)
  precision, recall = pr(2.0, 3.0)  # disjoint
  assert precision == 0.0 and recall == 0.0
