"""The embedded classifier: the stored weights are what their file says, and training is reproducible."""

import os

import numpy as np

from evaluation import classifier
from evaluation import train_classifier
from pipelines import embedded


def test_the_stored_classifier_reaches_its_recorded_test_accuracy():
  weights, metadata = classifier.load()
  network = classifier.DigitClassifier(weights)
  images, labels = embedded.load("test")
  accuracy = train_classifier.accuracy(network, images, labels)
  assert abs(accuracy - metadata["test_accuracy"]) <= 1 / 500  # another CPU may flip a near tie
  assert accuracy >= 0.97


def test_the_stored_weights_are_small():
  weights, _ = classifier.load()
  assert sum(w.size for w in weights.values()) * 4 < 500_000


def test_training_is_reproducible_and_depends_on_the_seed():
  first = train_classifier.train(seed=1, steps=3).weights()
  again = train_classifier.train(seed=1, steps=3).weights()
  other = train_classifier.train(seed=2, steps=3).weights()
  for name in first:
    np.testing.assert_array_equal(first[name], again[name])
  assert classifier.fingerprint(first) == classifier.fingerprint(again) != classifier.fingerprint(other)


def test_retraining_writes_beside_the_user_and_leaves_the_shipped_weights_alone(tmp_path):
  import hashlib  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tests.conftest import ROOT  # pylint: disable=g-import-not-at-top
  shipped = classifier.WEIGHTS_PATH
  before = hashlib.sha256(open(shipped, "rb").read()).hexdigest()
  env = dict(os.environ, PYTHONPATH=ROOT)
  result = subprocess.run([sys.executable, "-m", "evaluation.train_classifier", "--epochs=0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "wrote mnist_classifier.npz" in result.stdout and (tmp_path / "mnist_classifier.npz").exists()
  assert hashlib.sha256(open(shipped, "rb").read()).hexdigest() == before
