"""The embedded classifier: the stored weights are what their file says, and training is reproducible."""

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
