"""Prepare a dataset as sharded TFRecords of raw pixels:

  python -m pipelines.prepare --source=folder:DIR --out=DIR_OR_GS --resolution=256 --shards=16

Each image is converted to --channels, fitted to the target aspect ratio (--crop: centre crop, pad, or stretch),
resized (the area filter when shrinking, computed exactly as TensorFlow's ``area`` resize; bilinear when
enlarging) and stored as raw uint8 pixels with its label. Files are decoded in parallel worker processes; the writer keeps their order,
and example k goes to shard k mod --shards.

Bad files (empty, not an image, truncated, CMYK, 16-bit, or smaller than the target without --upscale) are
skipped with a warning and listed in ``bad_files.txt`` beside the output; their count is in ``metadata.json``.
``--strict`` stops at the first bad file instead, naming it.

Shards are written into a temporary directory inside --out, under names tagged with this preparation's id, and
moved into place when every shard is complete; ``metadata.json`` is written last, and a reader takes the files it
lists. A crash leaves no directory that a reader would take as complete, and the next run removes what it left
(and nothing else: .tfrecord files that pipelines.prepare didn't write stop it with an error). With --overwrite the
old dataset stays whole and readable until the new metadata replaces its own; its files are removed after that.
"""

import io
import multiprocessing
import os
import sys
import time
import uuid

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def define_flags():
  """Command-line flags; defined only when the module runs as a command, so the library imports cleanly."""
  flags.DEFINE_string("source", None, "folder:DIR or tfds:NAME[:SPLIT].")
  flags.DEFINE_string("out", None, "Output directory, local or gs://.")
  flags.DEFINE_string("resolution", None, "Target resolution: R (square) or HxW.")
  flags.DEFINE_integer("channels", 3, "Channels to store: 1 (grayscale) or 3 (RGB).")
  flags.DEFINE_integer("shards", 8, "Number of TFRecord shards.")
  flags.DEFINE_enum("crop", "center", ["center", "pad", "none"], "How to reach the target aspect ratio.")
  flags.DEFINE_bool("upscale", False, "Enlarge images smaller than the target instead of skipping them.")
  flags.DEFINE_bool("strict", False, "Stop at the first bad file.")
  flags.DEFINE_bool("folder_labels", False, "folder: sources: the first sub-folder name is the class label.")
  flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory for tfds: sources.")
  flags.DEFINE_integer("workers", None, "Decoding processes (default: CPU count).")
  flags.DEFINE_bool("overwrite", False, "Replace a prepared dataset already in --out.")
  flags.mark_flags_as_required(["source", "out", "resolution"])



class BadFile(Exception):
  """A file that can't become a training image; the message says why."""


def _read_bytes(path):
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read()
  with open(path, "rb") as f:
    return f.read()


def convert_image(image, target, channels, crop, upscale):
  """A PIL image -> uint8 array [h, w, channels] at ``target`` (h, w). Raises BadFile."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from pipelines import transforms  # pylint: disable=g-import-not-at-top
  if image.mode == "CMYK":
    raise BadFile("CMYK colour (convert it to RGB)")
  if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
    raise BadFile(f"{'16-bit' if image.mode.startswith('I;16') else image.mode + ' mode'} pixels (store 8-bit)")
  if image.mode == "P":
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
  elif image.mode == "1":
    image = image.convert("L")
  elif image.mode not in ("L", "LA", "RGB", "RGBA"):
    image = image.convert("RGB")
  # Same order as the training pipeline: channels first, then the aspect ratio, then the resize.
  pixels = np.asarray(image, dtype=np.uint8)
  pixels = transforms.to_channels_numpy(pixels if pixels.ndim == 3 else pixels[..., None], channels)
  image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
  width, height = image.size
  top, left, box_h, box_w = transforms.fit_box(height, width, target, crop)
  if not upscale and (min(box_h, height) < target[0] or min(box_w, width) < target[1]):
    raise BadFile(f"too small: {width}x{height} for {target[1]}x{target[0]} (pass --upscale to enlarge)")
  if crop == "pad" and (box_h, box_w) != (height, width):
    canvas = Image.new(image.mode, (box_w, box_h))
    canvas.paste(image, (-left, -top))
    image = canvas
  elif crop == "center":
    image = image.crop((left, top, left + box_w, top + box_h))
  pixels = np.asarray(image, dtype=np.uint8)
  pixels = pixels[..., None] if pixels.ndim == 2 else pixels
  if pixels.shape[:2] == tuple(target):
    return pixels
  if pixels.shape[0] >= target[0] and pixels.shape[1] >= target[1]:
    # The area filter in exact arithmetic (PIL's BOX uses fixed point and can be off by one).
    return np.clip(np.rint(transforms.area_resize_numpy(pixels, target)), 0, 255).astype(np.uint8)
  enlarged = np.asarray(image.resize((target[1], target[0]), Image.BILINEAR), np.uint8)
  return enlarged[..., None] if enlarged.ndim == 2 else enlarged


def process_file(args):
  """Worker: (index, path, label, target, channels, crop, upscale) -> (index, pixels or None, reason)."""
  index, path, label, target, channels, crop, upscale = args
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  try:
    data = _read_bytes(path)
    if not data:
      raise BadFile("empty file")
    try:
      image = Image.open(io.BytesIO(data))
      image.load()
    except UnidentifiedImageError as e:
      raise BadFile("not an image") from e
    except (OSError, SyntaxError, ValueError) as e:
      raise BadFile(f"truncated or corrupt ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    return index, convert_image(image, target, channels, crop, upscale), label, ""
  except BadFile as e:
    return index, None, label, str(e)


def _folder_items(root, folder_labels):
  from pipelines.sources import FolderSource, InputOptions  # pylint: disable=g-import-not-at-top
  source = FolderSource(f"folder:{root}", root, InputOptions(folder_labels=folder_labels))
  return source.paths, source.labels, source.info.label_names


def _tfds_examples(spec_rest, data_dir):
  """(name, numpy image, label) for every example of a TFDS split, decoded by TFDS."""
  from pipelines.sources import InputOptions, TFDSSource  # pylint: disable=g-import-not-at-top
  source = TFDSSource(f"tfds:{spec_rest}", spec_rest, InputOptions(tfds_data_dir=data_dir))
  names = source.info.label_names
  examples = source.builder.as_dataset(split=source.split, shuffle_files=False)
  key, label_key = source.options.image_key, source.options.label_key

  def items():
    for i, example in enumerate(examples.as_numpy_iterator()):
      label = int(example[label_key]) if source.has_labels else -1
      yield f"{spec_rest}[{i}]", example[key], label

  return items(), source.info.count, names


def _process_array(args):
  index, name, pixels, label, target, channels, crop, upscale = args
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    return index, convert_image(image, target, channels, crop, upscale), label, ""
  except BadFile as e:
    return index, None, label, f"{name}: {e}"


def _listed(out):
  """The files the dataset in ``out`` lists (its metadata's shards), or an empty set when there is none."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pipelines import records  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(os.path.join(out, records.METADATA)):
    return set()
  return {s["file"] for s in records.read_metadata(out)["shards"]}


def _clean_leftovers(out):
  """Removes what an interrupted preparation left in ``out`` (staging directories, tagged shards that no
  metadata lists) and nothing else. Raises UserError, before any work, for .tfrecord files it didn't write."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  from pipelines import records  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(out):
    return
  listed = _listed(out)
  names = [name.rstrip("/") for name in tf.io.gfile.listdir(out)]
  foreign = sorted(n for n in names if n.endswith(".tfrecord") and n not in listed
                   and not records.PREPARED_SHARD.match(n))
  if foreign:
    raise UserError(f"--out={out} holds .tfrecord files that pipelines.prepare did not write ({', '.join(foreign[:3])}"
                    f"{'...' if len(foreign) > 3 else ''}); nothing was changed: choose an empty --out")
  for name in names:
    if name.startswith(".incomplete-"):
      tf.io.gfile.rmtree(os.path.join(out, name))
    elif records.PREPARED_SHARD.match(name) and name not in listed:
      tf.io.gfile.remove(os.path.join(out, name))


def _commit(out, staging, files, counts, bad, meta_fields):
  """Moves the new shards in beside the old dataset, switches the metadata (the dataset is the new one from that
  write on), then removes the old dataset's files that the new one doesn't use."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pipelines import records  # pylint: disable=g-import-not-at-top
  old = _listed(out)
  kept = []
  for name, count in zip(files, counts):
    if count:
      tf.io.gfile.rename(os.path.join(staging, name), os.path.join(out, name))
      kept.append({"file": name, "count": count})
  tf.io.gfile.rmtree(staging)
  report = os.path.join(out, records.REPORT)
  if bad:
    with tf.io.gfile.GFile(report, "w") as f:
      f.write("file\treason\n" + "\n".join(bad) + "\n")
  meta = {**meta_fields, "shards": kept, "bad_files": len(bad)}
  records.write_metadata(out, meta)
  for name in sorted(old - {k["file"] for k in kept}):
    tf.io.gfile.remove(os.path.join(out, name))
  if not bad and old and tf.io.gfile.exists(report):
    tf.io.gfile.remove(report)  # the replaced dataset's report
  return meta


def prepare(source, out, resolution, channels=3, shards=8, crop="center", upscale=False, strict=False,
            folder_labels=False, tfds_data_dir=None, workers=None, overwrite=False, stream=None):
  """Writes the dataset; returns its metadata dict. Raises UserError for bad input."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from genscale.errors import UserError, require  # pylint: disable=g-import-not-at-top
  from genscale.progress import Progress  # pylint: disable=g-import-not-at-top
  from genscale.shapes import parse_resolution  # pylint: disable=g-import-not-at-top
  from pipelines import records  # pylint: disable=g-import-not-at-top

  stream = stream or sys.stderr
  target = parse_resolution(resolution)
  require(channels in (1, 3), f"--channels={channels} must be 1 or 3")
  require(shards >= 1, f"--shards={shards} must be at least 1")
  if tf.io.gfile.exists(os.path.join(out, records.METADATA)) and not overwrite:
    raise UserError(f"{out} already holds a prepared dataset; pass --overwrite to replace it")
  kind, _, rest = source.partition(":")
  if kind == "folder":
    paths, labels, label_names = _folder_items(rest, folder_labels)
    total = len(paths)
    jobs = ((i, p, l, target, channels, crop, upscale) for i, (p, l) in enumerate(zip(paths, labels)))
    work, names = process_file, paths
  elif kind == "tfds":
    items, total, label_names = _tfds_examples(rest, tfds_data_dir)
    jobs = ((i, n, x, l, target, channels, crop, upscale) for i, (n, x, l) in enumerate(items))
    work, names = _process_array, None
  else:
    raise UserError(f"--source={source}: use folder:DIR or tfds:NAME[:SPLIT]")
  require(total > 0, f"--source={source} is empty")

  _clean_leftovers(out)
  tag = uuid.uuid4().hex[:8]
  staging = os.path.join(out, f".incomplete-{tag}")
  tf.io.gfile.makedirs(staging)
  files = [records.shard_name(i, shards, tag) for i in range(shards)]
  writers = [tf.io.TFRecordWriter(os.path.join(staging, f)) for f in files]
  counts = [0] * shards
  bad = []
  good = 0
  progress = Progress(total, "prepare", unit="img", stream=stream)
  pool = multiprocessing.get_context("spawn").Pool(workers or os.cpu_count())
  try:
    for done, (index, pixels, label, reason) in enumerate(pool.imap(work, jobs, chunksize=16), 1):
      if pixels is None:
        name = names[index] if names is not None else reason.split(": ")[0]
        why = reason if names is not None else reason.split(": ", 1)[1]
        if strict:
          raise UserError(f"bad file {name}: {why} (--strict)")
        stream.write(f"warning: skipping {name}: {why}\n")
        bad.append(f"{name}\t{why}")
      else:
        writers[good % shards].write(records.serialize(pixels, label))
        counts[good % shards] += 1
        good += 1
      progress.update(done=done)
    progress.close()
  except BaseException:
    pool.terminate()
    for w in writers:
      w.close()
    tf.io.gfile.rmtree(staging)
    raise
  pool.close()
  pool.join()
  for w in writers:
    w.close()
  if not good:
    tf.io.gfile.rmtree(staging)
    raise UserError(f"--source={source} has no usable images ({len(bad)} bad files)")

  return _commit(out, staging, files, counts, bad, {
      "count": good, "resolution": list(target), "channels": channels, "label_names": list(label_names),
      "source": source, "crop": crop, "upscale": upscale,
      "filters": "area when shrinking, bilinear when enlarging",
      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def main(argv):
  del argv
  meta = prepare(FLAGS.source, FLAGS.out, FLAGS.resolution, FLAGS.channels, FLAGS.shards, FLAGS.crop,
                 FLAGS.upscale, FLAGS.strict, FLAGS.folder_labels, FLAGS.tfds_data_dir, FLAGS.workers,
                 FLAGS.overwrite)
  print(f"wrote {meta['count']} images ({meta['resolution'][0]}x{meta['resolution'][1]}x{meta['channels']}) in "
        f"{len(meta['shards'])} shards to {FLAGS.out}; {meta['bad_files']} bad files skipped"
        + (f", listed in {os.path.join(FLAGS.out, 'bad_files.txt')}" if meta["bad_files"] else ""))


def entry_point():
  define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry_point()
