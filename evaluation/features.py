"""Feature statistics of generated or real images, computed on every replica; only the statistics are gathered.

One compiled call handles one global batch. Per replica (``strategy.run``, XLA-compiled when runtime.xla):
generate this replica's rows (or take its rows of the input batch), extract features and logits, and reduce them
to sums: the count, the sum and the sum of outer products of the features relative to a shift vector, and the
per-split sums of class probabilities and entropies for the Inception Score. Rows past the end of the stream (the
last batch is padded to a full global batch) have weight 0. The sums are added over replicas
(``strategy.reduce``) and, on the host, into float64 ``FeatureStats``. Features themselves leave the devices only
for batches that hold images of the kept subset for KID or precision/recall (``strategy.gather``).

The sums are float64 on the devices too (a [d, d] outer product per batch is cheap next to the network), except
on TPUs, which have no float64: there they are float32 per batch, relative to the shift.

Generated images: call i draws with key (seed, i) and ``models.base.BatchRng``, as ``launch.sampling.Sampler``
does, so with the same batch size the images scored are the ones ``launch.sample --seed`` writes. Image n gets
label n % num_classes in a class-conditional model (balanced classes).

Real images: the source's stream without flips, in the seeded order the pipelines give it with seed 0
(``source.dataset(..., seed=0)``): the first ``num`` positions are distinct images, every image once when ``num``
is the source's size. That order can stay locally clustered (the embedded digits are stored sorted by class, and
the in-memory permutation mixes them only partly), which is why ``FeatureStats`` picks the Inception Score splits
and the kept features with its own permutation.
"""

import tensorflow as tf

from evaluation.stats import FeatureStats
from genscale.errors import require
from models.base import BatchRng
import pipelines


class FeatureRunner:
  """Runs an extractor on every replica over generated or real images.

  Args:
    runtime: the Runtime.
    extractor: an ``evaluation.extractors.Extractor`` built under the runtime's strategy.
    batch_size: images per compiled call; rounded up to a multiple of the number of replicas.
  """

  def __init__(self, runtime, extractor, batch_size=64):
    self.runtime = runtime
    self.strategy = runtime.strategy
    self.extractor = extractor
    replicas = runtime.num_replicas
    self.batch_size = -(-int(batch_size) // replicas) * replicas
    self.per_replica = self.batch_size // replicas
    self.sum_dtype = tf.float32 if runtime.kind == "tpu" else tf.float64
    self._model_calls = {}
    self._data_calls = {}

  # ---- per replica

  def _rows(self, replica_id, first_index):
    """Stream indices of this replica's rows of the global batch that starts at ``first_index``."""
    start = first_index + tf.cast(replica_id, tf.int64) * self.per_replica
    return start + tf.range(self.per_replica, dtype=tf.int64)

  def _statistics(self, features, logits, index, total, split_table, shift, splits, labels=None):
    """This replica's sums (pure; runs per replica). ``split_table[i]`` is image i's Inception Score split;
    ``labels``: the classes generated images were asked for, counted against the extractor's decisions."""
    weight = tf.cast(index < total, self.sum_dtype)
    centred = (tf.cast(features, self.sum_dtype) - shift) * weight[:, None]
    out = {"count": tf.reduce_sum(weight), "centred_sum": tf.reduce_sum(centred, 0),
           "centred_outer": tf.matmul(centred, centred, transpose_a=True)}
    if logits is not None:
      log_p = tf.cast(tf.nn.log_softmax(tf.cast(logits, tf.float32)), self.sum_dtype)
      p = tf.exp(log_p)
      entropy = -tf.reduce_sum(p * log_p, axis=-1)
      split = tf.gather(split_table, tf.minimum(index, total - 1))
      member = tf.one_hot(split, splits, dtype=self.sum_dtype) * weight[:, None]
      out["split_probs"] = tf.matmul(member, p, transpose_a=True)
      out["split_entropy"] = tf.reduce_sum(member * entropy[:, None], axis=0)
      out["split_count"] = tf.reduce_sum(member, axis=0)
      decision = tf.argmax(logits, axis=-1, output_type=tf.int32)
      out["class_counts"] = tf.reduce_sum(tf.one_hot(decision, int(logits.shape[-1]), dtype=self.sum_dtype) *
                                          weight[:, None], axis=0)
      if labels is not None:
        out["label_hits"] = tf.reduce_sum(tf.cast(tf.equal(decision, labels), self.sum_dtype) * weight)
        out["labelled"] = tf.reduce_sum(weight)
    return out

  def _cross_replica(self, per_replica_fn, args, gather):
    """strategy.run, then the sums reduced over replicas and (optionally) the features gathered in row order."""
    stats, features = self.strategy.run(per_replica_fn, args=args)
    sums = {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in stats.items()}
    return sums, (self.strategy.gather(features, axis=0) if gather else tf.zeros([0]))

  def _model_call(self, model, ema, options, splits, gather):
    key = (id(model), ema, tuple(sorted(options.items())), splits, gather)
    if key in self._model_calls:
      return self._model_calls[key]
    replicas, per_replica = self.runtime.num_replicas, self.per_replica
    num_classes = int(getattr(model, "num_classes", 0) or 0)

    def generate_and_extract(rng_key, replica_id, first_index, total, split_table, shift):
      index = self._rows(replica_id, first_index)
      labels = tf.cast(index % num_classes, tf.int32) if num_classes else tf.zeros([per_replica], tf.int32)
      images = model.generate(BatchRng(rng_key, replica_id, per_replica, replicas), labels, ema=ema, **options)
      features, logits = self.extractor(images)
      return self._statistics(features, logits, index, total, split_table, shift, splits,
                              labels if num_classes else None), features

    compiled = self.runtime.compile(generate_and_extract)

    def replica_fn(rng_key, first_index, total, split_table, shift):
      replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
      return compiled(rng_key, replica_id, first_index, total, split_table, shift)

    call = tf.function(lambda *args: self._cross_replica(replica_fn, args, gather))
    self._model_calls[key] = call
    return call

  def _data_call(self, splits, gather):
    key = (splits, gather)
    if key in self._data_calls:
      return self._data_calls[key]

    def extract(images, replica_id, first_index, total, split_table, shift):
      features, logits = self.extractor(images)
      index = self._rows(replica_id, first_index)
      return self._statistics(features, logits, index, total, split_table, shift, splits), features

    compiled = self.runtime.compile(extract)

    def replica_fn(batch, first_index, total, split_table, shift):
      replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
      return compiled(batch["image"], replica_id, first_index, total, split_table, shift)

    call = tf.function(lambda *args: self._cross_replica(replica_fn, args, gather))
    self._data_calls[key] = call
    return call

  # ---- host

  def all_workers(self, flag):
    """True on every worker when ``flag`` is true on all of them (a collective: call it on every worker alike).

    Lets all workers take the same path when only some can read a cached file: one that computes statistics
    runs collectives that the others must join.
    """
    if self.runtime.num_workers == 1:
      return bool(flag)
    if not hasattr(self, "_all_fn"):
      strategy = self.strategy

      @tf.function
      def all_fn(value):
        per_replica = strategy.run(lambda: tf.identity(value))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

      self._all_fn = all_fn  # pylint: disable=attribute-defined-outside-init
    return int(self._all_fn(tf.constant(1 if flag else 0, tf.int32))) == self.runtime.num_replicas

  def _new_stats(self, total, splits, keep):
    return FeatureStats(self.extractor.feature_dim, self.extractor.num_classes, total=total, splits=splits,
                        keep=keep)

  def _loop(self, stats, run_batch, progress):
    """Runs every global batch of the stream and adds its sums (and wanted features) to ``stats`` (host)."""
    split_table = tf.constant(stats.split_table, tf.int32)
    total = tf.constant(stats.total, tf.int64)
    for call in range(-(-stats.total // self.batch_size)):
      first = call * self.batch_size
      gather = stats.wants_features(first, self.batch_size)
      sums, features = run_batch(call, stats.splits, gather, tf.constant(first, tf.int64), total, split_table,
                                 tf.constant(stats.shift, self.sum_dtype))
      stats.add_sums(**{k: v.numpy() for k, v in sums.items()})
      if gather:
        stats.keep_features(features.numpy(), first)
      if progress is not None:
        progress.update(done=min(first + self.batch_size, stats.total))
    return stats

  def of_model(self, model, *, seed, num, splits=10, keep=0, ema=True, progress=None, **options):
    """FeatureStats of ``num`` images generated by ``model`` from ``seed`` (call i uses key (seed, i))."""
    require(int(num) >= 2, f"--num={num}: need at least 2 images")
    stats = self._new_stats(int(num), splits, keep)

    def run_batch(call, splits, gather, *args):
      rng_key = tf.constant([int(seed), call], tf.int64)
      return self._model_call(model, ema, options, splits, gather)(rng_key, *args)

    return self._loop(stats, run_batch, progress)

  def of_source(self, source, *, resolution, channels, num, splits=10, keep=0, progress=None):
    """FeatureStats of ``num`` distinct images of a pipelines source at (resolution, channels), in a fixed order."""
    require(int(num) >= 2, f"need at least 2 real images, got {num}")
    stats = self._new_stats(int(num), splits, keep)
    size = pipelines.parse_resolution(resolution)

    def dataset_fn(context):
      layout = pipelines.InputLayout.from_context(context, self.batch_size)
      return source.dataset(layout, seed=0, start_step=0, resolution=size, channels=int(channels), flip=False,
                            shuffle=True)

    iterator = iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    def run_batch(call, splits, gather, *args):
      del call
      return self._data_call(splits, gather)(next(iterator), *args)

    return self._loop(stats, run_batch, progress)
