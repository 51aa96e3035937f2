"""tf.data input: a source spec string becomes per-replica batches of float32 images in [-1, 1] and int32 labels."""

from pipelines.input import InputLayout
from pipelines.sources import DataInfo, InputOptions, open_source
from pipelines.transforms import parse_resolution


def distribute(strategy, source, *, global_batch, seed, start_step, resolution, channels, flip=False):
  """A distributed dataset: each input pipeline builds its own part of every global batch.

  Runs on the host. The returned dataset yields, per replica, ``{"image": [b, H, W, C] float32, "label": [b]}``
  where ``b`` is ``global_batch`` divided by the number of replicas. Call again with another ``resolution`` to
  switch resolution; nothing else needs to restart.
  """

  def dataset_fn(context):
    layout = InputLayout.from_context(context, global_batch)
    return source.dataset(layout, seed=seed, start_step=start_step, resolution=resolution, channels=channels,
                          flip=flip)

  return strategy.distribute_datasets_from_function(dataset_fn)


__all__ = ["DataInfo", "InputLayout", "InputOptions", "distribute", "open_source", "parse_resolution"]
