"""What ``python -m launch.evaluate`` does, as functions: the command parses flags and calls these, tests call them
in-process. The scores themselves come from the ``evaluation`` package, which knows nothing of runs.

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

from evaluation import likelihood
from evaluation import translation
from evaluation.evaluator import Evaluator
from genscale.errors import require
from launch import rundir
from launch.configs import common
import pipelines


def standalone_config(spec, resolution=None, channels=None):
  """A minimal run config and DataInfo for scoring a data source without a run."""
  info = pipelines.open_source(spec).info
  if not resolution:
    resolution = f"{info.resolution}x{info.width}" if info.width and info.width != info.resolution else info.resolution
  require(resolution, f"{spec} holds images of several sizes; pass --resolution")
  values = common.base().to_dict()
  values.update(data=spec, resolution=resolution, channels=int(channels or info.channels or 3))
  return ml_collections.ConfigDict(values), info


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
  for name in ("fid", "kid", "is", "precision", "recall", "class_agreement", "class_share_min", "class_share_max",
               "error", "nll_exact", "nll_elbo", "nll_iwae", "nll_ais", "nll_ais_low", "nll_ais_high", "log_z",
               "pseudo_nll", "bpd_exact", "bpd_elbo", "bpd_iwae", "bpd_ais"):
    if name in values:
      spread = values.get(f"{name}_std")
      unit = (" nats/image" if name.startswith(("nll", "pseudo_nll")) else " bits/dim" if name.startswith("bpd")
              else " nats" if name == "log_z" else "")
      lines.append(f"  {name:<10} {values[name]:.6g}{unit}" + ("" if spread is None else f" ± {spread:.2g}"))
  shares = [values[f"class_share_{k}"] for k in range(100) if f"class_share_{k}" in values]
  if shares:
    lines.append("  classes    " + " ".join(f"{k}:{100 * v:.1f}%" for k, v in enumerate(shares)))
  return "\n".join(lines)


def _report(evaluator, what, at, stream):
  record = evaluator.last_record
  for message in evaluator.warnings:
    sys.stderr.write(f"genscale: warning: {message}\n")
  parts = []
  if record["num"]:
    versus = f" vs {record['reference_count']} images of {evaluator.data}" if record["reference_count"] else ""
    parts.append(f"{what}{versus}, {evaluator.extractor.describe()}")
  if record.get("nll_data"):
    bits = f", binarised with seed {record['binarization_seed']}" if record.get("binarization_seed") else ""
    parts.append(f"likelihood of {record['nll_count']} images of {record['nll_data']}{bits}, "
                 f"{likelihood.describe(record)}")
  if record.get("error_data"):
    parts.append(f"classification error on {record['error_count']} images of {record['error_data']}")
  if record.get("translation_data"):
    parts.append(f"translation of {' and '.join(map(str, record['translation_count']))} held-out images of "
                 f"{record['translation_data']}: {translation.describe(record['metrics'])}")
  stream.write(format_results(f"{at}{'; '.join(parts)}", record["metrics"]) + "\n")
  stream.flush()


def evaluate_checkpoint(workdir, settings, checkpoint=None, runtime_options=None, stream=None, progress=True):
  """Scores a run's checkpoint (default: the newest) with ``settings`` (an EvalSettings). Returns the Evaluator.

  ``runtime_options``: ``launch.rundir.runtime_for`` keywords (strategy, cpu_replicas, precision, xla).
  """
  stream = stream or sys.stdout
  run = rundir.load_run(workdir, checkpoint, **(runtime_options or {}))
  config, runtime, path, step = run.config, run.runtime, run.checkpoint, run.step
  evaluator = Evaluator(runtime, run.model, config, run.info, workdir, progress=progress, log_warnings=False,
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
    config, info = rundir.read_run(workdir)
  else:
    config, info = standalone_config(settings.data or spec, resolution, channels)
  runtime = rundir.runtime_for(config, **(runtime_options or {}))
  evaluator = Evaluator(runtime, None, config, info, workdir, progress=progress, log_warnings=False,
                        settings=settings)
  evaluator.evaluate_source(spec)
  _report(evaluator, f"{evaluator.last_record['num']} images of {spec}", "", stream)
  if workdir and runtime.is_chief:
    stream.write(f"appended to {os.path.join(workdir, 'metrics.jsonl')}\n")
  return evaluator

