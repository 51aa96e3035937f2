"""Train the embedded digit classifier: ``python -m evaluation.train_classifier``.

Writes ``mnist_classifier.npz`` in the current directory (or ``--out``); ``--replace_shipped`` writes the package's
own ``evaluation/weights/mnist_classifier.npz``, the feature network of ``--extractor=classifier``, instead.
It trains on the embedded digits' train split (``embedded:mnist:train``, 4,500 images) and reports the accuracy
on the test split (500 images), which it also stores in the file.

Reproducible: weights start from stateless draws of ``--seed``; the data order and the augmentation (shifts of up
to two pixels) come from a NumPy generator seeded with it; training runs on one CPU device in float32 without XLA
and with TensorFlow's op determinism on. The same TensorFlow version on the same kind of CPU gives the same
weights (fingerprint printed at the end); another CPU may differ in the last bits of the float arithmetic.

Defaults: 30 epochs of batch 64, Adam with a cosine-decayed learning rate from 2e-3: about a minute on 2 CPU cores
(59 s on the project's 2-core VM), 98.2% test accuracy.
"""

import time

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("out", "mnist_classifier.npz", "Output .npz (the shipped weights stay as they are).")
flags.DEFINE_bool("replace_shipped", False, "Write the package's evaluation/weights/mnist_classifier.npz, which "
                  "every evaluation with --extractor=classifier reads (changes the scores of every run).")
flags.DEFINE_integer("seed", 0, "Seed of the initial weights, the data order and the augmentation.")
flags.DEFINE_integer("epochs", 30, "Passes over the train split.")
flags.DEFINE_integer("batch_size", 64, "Images per step.")
flags.DEFINE_float("lr", 2e-3, "Peak Adam learning rate (cosine-decayed to zero).")
FLAGS = flags.FLAGS

SHIFT = 2  # pixels of random translation in each direction


def _shifted(images, rng):
  """Each image moved by a random offset in [-SHIFT, SHIFT]² with zero fill (host only, uint8)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  padded = np.pad(images, ((0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT), (0, 0)))
  offsets = rng.integers(0, 2 * SHIFT + 1, size=(len(images), 2))
  height, width = images.shape[1:3]
  return np.stack([padded[i, y:y + height, x:x + width] for i, (y, x) in enumerate(offsets)])


def accuracy(network, images, labels, batch_size=500):
  """Fraction of ``images`` (uint8) whose arg-max logit is the label."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  predict = tf.function(lambda x: tf.argmax(network(x)[1], axis=-1, output_type=tf.int32))
  correct = 0
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size].astype(np.float32) / 127.5 - 1.0
    correct += int(np.sum(predict(tf.constant(chunk)).numpy() == labels[start:start + batch_size]))
  return correct / len(images)


def train(seed=0, epochs=30, batch_size=64, lr=2e-3, steps=None, progress=None):
  """Trains a DigitClassifier on embedded:mnist:train. Returns the network.

  ``steps`` stops early (tests); ``progress`` is a genscale Progress counting steps.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from evaluation import classifier  # pylint: disable=g-import-not-at-top
  from pipelines import embedded  # pylint: disable=g-import-not-at-top

  images, labels = embedded.load("train")
  rng = np.random.default_rng(seed)
  network = classifier.DigitClassifier(classifier.initial_weights(seed))
  variables = list(network.params.values())
  steps_per_epoch = len(images) // batch_size
  total = steps_per_epoch * epochs if steps is None else int(steps)
  schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(total, 1))
  optimizer = keras.optimizers.Adam(schedule)
  optimizer.build(variables)

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      _, logits = network(x)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  done = 0
  while done < total:
    order = rng.permutation(len(images))
    for i in range(steps_per_epoch):
      if done >= total:
        break
      ids = order[i * batch_size:(i + 1) * batch_size]
      x = _shifted(images[ids], rng).astype(np.float32) / 127.5 - 1.0
      step(tf.constant(x), tf.constant(labels[ids]))
      done += 1
      if progress is not None:
        progress.update(done=done)
  return network


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from evaluation import classifier  # pylint: disable=g-import-not-at-top
  from genscale.progress import Progress  # pylint: disable=g-import-not-at-top
  from pipelines import embedded  # pylint: disable=g-import-not-at-top

  tf.config.experimental.enable_op_determinism()
  out = classifier.WEIGHTS_PATH if FLAGS.replace_shipped else FLAGS.out
  started = time.monotonic()
  progress = Progress(4500 // FLAGS.batch_size * FLAGS.epochs, "train classifier", unit="step")
  with tf.device("/cpu:0"):
    network = train(FLAGS.seed, FLAGS.epochs, FLAGS.batch_size, FLAGS.lr, progress=progress)
  progress.close()
  seconds = time.monotonic() - started
  test_images, test_labels = embedded.load("test")
  test_accuracy = accuracy(network, test_images, test_labels)
  train_images, train_labels = embedded.load("train")
  train_accuracy = accuracy(network, train_images, train_labels)
  weights = network.weights()
  classifier.save(out, weights, {"test_accuracy": test_accuracy, "train_accuracy": train_accuracy,
                                 "seed": FLAGS.seed, "epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size,
                                 "lr": FLAGS.lr, "tensorflow": tf.__version__})
  print(f"trained in {seconds:.0f}s: test accuracy {100 * test_accuracy:.2f}% (500 images), train "
        f"{100 * train_accuracy:.2f}%; fingerprint {classifier.fingerprint(weights)}; wrote {out}")


def entry_point():
  cli.run(main)


if __name__ == "__main__":
  entry_point()
