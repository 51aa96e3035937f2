"""What ``python -m launch.evaluate`` does, as functions: the command parses flags and calls these, tests call them
in-process.

``evaluate_checkpoint`` restores a run's checkpoint into its model under a fresh runtime and scores it;
``evaluate_data`` scores the images of a data source instead (the real-vs-real floor), with or without a run. Both
print the scores to ``stream``, append the record to ``<workdir>/metrics.jsonl`` when there is a workdir, and
return the Evaluator (its ``last_record`` holds the numbers). ``evaluate_checkpoint`` also writes TensorBoard
scalars ``eval/<metric>_<extractor>`` at the checkpoint's step into ``<workdir>/tensorboard``, beside the training
curves.
"""

import os
import sys

import ml_collections
import tensorflow as tf

from evaluation.evaluator import Evaluator
from genscale.errors import UserError, require
from launch import checkpoints
from launch import loop
from launch import runtime as runtime_lib
from launch.configs import common
import models
import pipelines


def checkpoint_path(workdir, choice=None):
  """The newest committed checkpoint of a run, or ``choice`` (a step number or a path). Raises UserError."""
  if choice is None:
    path = checkpoints.latest(workdir)
    require(path is not None, f"no checkpoint in {checkpoints.directory_of(workdir)}; train first or pass "
            "--checkpoint")
    return path
  choice = str(choice)
  path = checkpoints.path_of(workdir, int(choice)) if choice.isdigit() else choice
  require(tf.io.gfile.exists(path + ".index"), f"--checkpoint={choice}: no checkpoint {path}")
  return path


def standalone_config(spec, resolution=None, channels=None):
  """A minimal run config and DataInfo for scoring a data source without a run."""
  info = pipelines.open_source(spec).info
  if not resolution:
    resolution = f"{info.resolution}x{info.width}" if info.width and info.width != info.resolution else info.resolution
  require(resolution, f"{spec} holds images of several sizes; pass --resolution")
  values = common.base().to_dict()
  values.update(data=spec, resolution=resolution, channels=int(channels or info.channels or 3))
  return ml_collections.ConfigDict(values), info


def make_runtime(config, strategy="auto", cpu_replicas=1, precision=None, xla=None):
  """The runtime to evaluate on: the given strategy, the run's precision and XLA setting unless overridden."""
  config.runtime.strategy = strategy
  config.runtime.cpu_replicas = int(cpu_replicas)
  if precision:
    config.runtime.precision = precision
  if xla is not None:
    config.runtime.xla = bool(xla)
  return runtime_lib.create(config.runtime)


def write_scalars(workdir, step, scalars):
  """TensorBoard scalars at ``step`` in ``<workdir>/tensorboard`` (a new event file next to the training ones)."""
  writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
  with writer.as_default(step=int(step)):
    for tag, value in scalars.items():
      tf.summary.scalar(tag, float(value))
  writer.close()


def format_results(header, values):
  """The printed report: a header line, then one indented line per score ("  fid        12.3")."""
  lines = [header]
  for name in ("fid", "kid", "is", "precision", "recall"):
    if name in values:
      spread = values.get(f"{name}_std")
      lines.append(f"  {name:<10} {values[name]:.6g}" + ("" if spread is None else f" ± {spread:.2g}"))
  return "\n".join(lines)


def _report(evaluator, what, at, stream):
  record = evaluator.last_record
  for message in evaluator.warnings:
    sys.stderr.write(f"genscale: warning: {message}\n")
  versus = f" vs {record['reference_count']} images of {evaluator.data}" if record["reference_count"] else ""
  stream.write(format_results(f"{at}{what}{versus}, {evaluator.extractor.describe()}", record["metrics"]) + "\n")
  stream.flush()


def evaluate_checkpoint(workdir, settings, checkpoint=None, runtime_options=None, stream=None, progress=True):
  """Scores a run's checkpoint (default: the newest) with ``settings`` (an EvalSettings). Returns the Evaluator.

  ``runtime_options``: ``make_runtime`` keywords (strategy, cpu_replicas, precision, xla).
  """
  stream = stream or sys.stdout
  config, info = loop.read_run(workdir)
  path = checkpoint_path(workdir, checkpoint)
  step = checkpoints.saved_step(path)
  runtime = make_runtime(config, **(runtime_options or {}))
  with runtime.strategy.scope():
    model = models.build(config, info, runtime.compute_dtype)
  try:
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
  except (ValueError, IndexError, tf.errors.OpError) as e:  # shapes that differ; truncated or missing shards
    reason = str(getattr(e, "message", None) or e).strip().splitlines()[0]
    raise UserError(f"can't restore {path} into the {config.model.name} model that {workdir}/config.json "
                    f"describes ({reason}); was it written by another version of the code?") from e
  evaluator = Evaluator(runtime, model, config, info, workdir, progress=progress, log_warnings=False,
                        settings=settings)
  scalars = evaluator(step, checkpoint=path)
  _report(evaluator, f"{settings.num} generated images ({'EMA' if settings.ema else 'raw'} weights)",
          f"{os.path.basename(path)} (step {step}): ", stream)
  if runtime.is_chief:
    write_scalars(workdir, step, scalars)
    stream.write(f"appended to {os.path.join(workdir, 'metrics.jsonl')}; TensorBoard scalars "
                 f"{', '.join(sorted(scalars))} at step {step}\n")
  return evaluator


def evaluate_data(spec, settings, workdir=None, resolution=None, channels=None, runtime_options=None, stream=None,
                  progress=True):
  """Scores up to ``settings.num`` images of the data source ``spec`` against the reference data. Returns the
  Evaluator. With a ``workdir``, the run's resolution and channels apply and the record goes to its metrics.jsonl;
  without one, the reference data's stored size (or ``resolution``/``channels``)."""
  stream = stream or sys.stdout
  if workdir:
    config, info = loop.read_run(workdir)
  else:
    config, info = standalone_config(settings.data or spec, resolution, channels)
  runtime = make_runtime(config, **(runtime_options or {}))
  evaluator = Evaluator(runtime, None, config, info, workdir, progress=progress, log_warnings=False,
                        settings=settings)
  evaluator.evaluate_source(spec)
  _report(evaluator, f"{evaluator.last_record['num']} images of {spec}", "", stream)
  if workdir and runtime.is_chief:
    stream.write(f"appended to {os.path.join(workdir, 'metrics.jsonl')}\n")
  return evaluator

