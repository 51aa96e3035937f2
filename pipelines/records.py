"""The TFRecord format ``pipelines.prepare`` writes and ``tfrecord:`` reads.

A prepared dataset is a directory (local or gs://) with
  shard-00000-of-00008.tfrecord ...   tf.train.Example records:
                                        image  bytes, raw uint8 pixels in HWC order (height x width x channels)
                                        label  int64 (-1 when unlabelled)
  metadata.json                       count, resolution [height, width], channels, label names, shard list with
                                      counts, bad-file count, the source and the filters used
  bad_files.txt                       the skipped files and why (only when some were skipped)

Raw pixels make reading cheap: no image decoding, only a byte copy. ``metadata.json`` is written last, after every
shard is complete, so a directory without it is an interrupted preparation and is refused.
"""

import json
import os
import re

import tensorflow as tf

from genscale.errors import UserError

FORMAT = "genscale-tfrecord-v1"
METADATA = "metadata.json"
REPORT = "bad_files.txt"


def shard_name(index, count, tag=None):
  """``shard-00003-of-00008-<tag>.tfrecord``: ``pipelines.prepare`` tags the shards of each preparation, so a new
  one never overwrites the files of the dataset it replaces before its own metadata is committed."""
  return f"shard-{index:05d}-of-{count:05d}" + (f"-{tag}" if tag else "") + ".tfrecord"


# What pipelines.prepare writes and may remove again: tagged shards, the report and the metadata.
PREPARED_SHARD = re.compile(r"^shard-\d{5}-of-\d{5}-[0-9a-f]{8}\.tfrecord$")
SIDECARS = (METADATA, REPORT)


def serialize(image, label):
  """One example: ``image`` uint8 numpy [H, W, C], ``label`` int (or -1)."""
  feature = {
      "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
      "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_batch(serialized, height, width, channels):
  """A batch of serialized examples -> (uint8 images [b, H, W, C], int32 labels [b])."""
  features = tf.io.parse_example(serialized, {
      "image": tf.io.FixedLenFeature([], tf.string),
      "label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
  })
  pixels = tf.io.decode_raw(features["image"], tf.uint8)
  images = tf.reshape(pixels, [-1, height, width, channels])
  return images, tf.cast(features["label"], tf.int32)


def read_metadata(directory):
  path = os.path.join(directory, METADATA)
  if not tf.io.gfile.exists(path):
    raise UserError(f"{directory} has no {METADATA}: it is not a prepared dataset, or its preparation did not "
                    "finish; (re)run python -m pipelines.prepare")
  with tf.io.gfile.GFile(path) as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT:
    raise UserError(f"{path} is not in the {FORMAT} format; prepare the data again with python -m pipelines.prepare")
  return meta


def write_metadata(directory, meta):
  meta = dict(meta, format=FORMAT)
  with tf.io.gfile.GFile(os.path.join(directory, METADATA), "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
