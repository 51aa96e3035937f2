"""See what a model will see: ``python -m pipelines.inspect SPEC [--resolution=R --channels=C --out=preview.png]``.

Prints the example count, the batch shape after the training transforms, the value range and the label
histogram over the scanned examples, and writes a grid of the first examples as a PNG.
"""

import sys

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def define_flags():
  """Command-line flags; defined only when the module runs as a command, so the library imports cleanly."""
  flags.DEFINE_string("resolution", None, "Training resolution (R or HxW); default the stored one.")
  flags.DEFINE_integer("channels", None, "Training channels (1 or 3); default the stored ones.")
  flags.DEFINE_integer("num", 5000, "Examples to scan for the value range and label histogram (0: all).")
  flags.DEFINE_string("out", "preview.png", "Preview grid PNG (local or gs://).")
  flags.DEFINE_integer("grid", 64, "Examples in the preview grid.")
  flags.DEFINE_bool("folder_labels", False, "folder: sources: the first sub-folder name is the class label.")
  flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory for tfds: sources.")



def inspect(spec, resolution=None, channels=None, num=5000, out="preview.png", grid=64, options=None,
            stream=None):
  """Scans a source the way training reads it (no shuffling, no flips). Returns the summary dict."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from genscale import images as image_lib  # pylint: disable=g-import-not-at-top
  from genscale.errors import require  # pylint: disable=g-import-not-at-top
  from genscale.progress import Progress  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top

  stream = stream or sys.stdout
  source = pipelines.open_source(spec, options)
  info = source.info
  if resolution is None:
    require(info.resolution, f"{spec} has images of varying size; pass --resolution")
    resolution = (info.resolution, info.width or info.resolution)
  channels = channels or info.channels or 3
  height, width = pipelines.parse_resolution(resolution)
  total = info.count if not num else min(num, info.count)
  batch = 64
  steps = -(-total // batch)
  layout = pipelines.InputLayout(batch)
  data = source.dataset(layout, seed=0, start_step=0, resolution=(height, width), channels=channels, shuffle=False)
  low, high, seen = np.inf, -np.inf, 0
  labels = []
  first = []
  progress = Progress(total, "inspect", unit="img")
  for example in data.take(steps).as_numpy_iterator():
    images = example["image"][:total - seen]
    low, high = min(low, float(images.min())), max(high, float(images.max()))
    labels.append(example["label"][:total - seen])
    if sum(len(f) for f in first) < grid:
      first.append(images)
    seen += len(images)
    progress.update(done=seen)
  progress.close()
  labels = np.concatenate(labels) if labels else np.zeros([0], np.int32)
  histogram = {}
  if info.num_classes:
    counts = np.bincount(labels[labels >= 0], minlength=info.num_classes)
    histogram = {name: int(c) for name, c in zip(info.label_names, counts)}
  preview = image_lib.grid(image_lib.to_uint8(np.concatenate(first)[:grid]))
  image_lib.write_png(out, preview)
  summary = {"spec": spec, "count": info.count, "scanned": seen, "shape": [height, width, channels],
             "min": low, "max": high, "labels": histogram, "preview": out}
  stream.write(f"{spec}: {info.count} examples; model input {height}x{width}x{channels} float32\n")
  stream.write(f"scanned {seen}: values in [{low:.3f}, {high:.3f}]\n")
  if histogram:
    stream.write("labels: " + ", ".join(f"{k}={v}" for k, v in histogram.items()) + "\n")
  else:
    stream.write("labels: none\n")
  stream.write(f"preview grid of {min(grid, seen)} examples: {out}\n")
  return summary


def main(argv):
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  import pipelines  # pylint: disable=g-import-not-at-top
  if len(argv) != 2:
    raise UserError("usage: python -m pipelines.inspect SPEC [--resolution=R] [--out=preview.png]")
  options = pipelines.InputOptions(folder_labels=FLAGS.folder_labels, tfds_data_dir=FLAGS.tfds_data_dir)
  inspect(argv[1], FLAGS.resolution, FLAGS.channels, FLAGS.num, FLAGS.out, FLAGS.grid, options)


def entry_point():
  define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry_point()
