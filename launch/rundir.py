"""The run directory: the resolved config, resume compatibility, the status file, and the one loader of a trained run.

Layout of ``<workdir>`` (local or gs://):
  config.json     the resolved config of the run (written by the chief when training starts)
  data_info.json  what the model knows of its data (classes, stored size)
  status.json     how the last process on the run ended (``launch.runs list`` reads it)
  checkpoints/    see launch/checkpoints.py;  tensorboard/  events;  samples/  grids;  metrics.jsonl  evaluations

``load_run`` is how every tool that uses a trained run (sampling, evaluation, benchmarks) gets its model: the
stored config, a runtime, the model built under it, and a checkpoint restored, each failure a one-line error.
"""

import dataclasses
import json
import os
import socket
import time
from typing import Any

import ml_collections
import tensorflow as tf

from evaluation import periodic as periodic_eval
from genscale.errors import UserError, require, require_choice
from launch import checkpoints
from launch import runtime as runtime_lib
from launch import storage
import models
import pipelines


def parse_profile_steps(value):
  """``config.profile_steps`` ("A,B" or a pair) -> (A, B), or None when empty. Raises UserError."""
  if not value:
    return None
  items = value if isinstance(value, (tuple, list)) else str(value).replace(" ", "").split(",")
  try:
    parts = [int(p) for p in items]
  except ValueError:
    parts = []
  require(len(parts) == 2 and 0 <= parts[0] < parts[1],
          f"--config.profile_steps={value!r}: give two steps A,B with A < B, e.g. 100,110")
  return parts[0], parts[1]


def prepare_config(config):
  """Validates a config and fills defaults that depend on other keys. Returns a private copy. Raises UserError."""
  config = ml_collections.ConfigDict(config.to_dict())  # a private, unlocked copy
  runtime_lib.validate(config.runtime)
  require(int(config.steps) >= 0, f"--config.steps={config.steps} must be non-negative")
  require(int(config.batch_size) >= 1, f"--config.batch_size={config.batch_size} must be positive")
  require(float(config.ema_halflife_kimg) > 0, f"--config.ema_halflife_kimg={config.ema_halflife_kimg} must be "
          "positive")
  require(config.get("ema_rampup") is None or float(config.ema_rampup) > 0,
          f"--config.ema_rampup={config.ema_rampup} must be positive, or None for no ramp-up")
  for key in ("log_every", "sample_every", "checkpoint_every"):
    require(int(config[key]) >= 1, f"--config.{key}={config[key]} must be at least 1")
  require(int(config.get("histogram_every") or 0) >= 0,
          f"--config.histogram_every={config.histogram_every} must be 0 (off) or a number of steps")
  require_choice(config.on_nonfinite, ("stop", "rollback"), "--config.on_nonfinite")
  parse_profile_steps(config.get("profile_steps"))
  require(int(config.channels) in (1, 3), f"--config.channels={config.channels} must be 1 or 3")
  pipelines.parse_resolution(config.resolution)
  pipelines.InputOptions.from_config(config.get("input"))
  periodic_eval.check_config(config)
  _attach_tokenizer(config)
  return models.resolve(config)


def _attach_tokenizer(config):
  """A model of VQ tokens (``model.tokens=vq``) gets the config of the VQ-VAE run ``model.vq_workdir`` as
  ``model.vq``: the model builds the VQ-VAE from it, and the run's own config.json keeps it. The data's resolution
  and channels must be the VQ-VAE's."""
  m = config.model
  if m.get("tokens") != "vq" or m.get("vq") is not None:
    return
  source = m.get("vq_workdir")
  require(source, "--config.model.tokens=vq needs --config.model.vq_workdir=DIR, a trained VQ-VAE run "
          "(launch/configs/vqvae.py)")
  require(tf.io.gfile.exists(os.path.join(source, "config.json")),
          f"--config.model.vq_workdir={source} is not a run directory (no config.json)")
  vq, _ = read_run(source)
  require(vq.model.name == "vqvae", f"--config.model.vq_workdir={source} holds a {vq.model.name} run; the tokens "
          "come from a trained VQ-VAE (launch/configs/vqvae.py)")
  for key in ("resolution", "channels"):
    require(str(config[key]) == str(vq[key]), f"--config.{key}={config[key]} but the VQ-VAE of {source} takes "
            f"{vq[key]}; set --config.{key}={vq[key]}")
  m.vq = ml_collections.ConfigDict(vq.to_dict())


def restore_pretrained(model):
  """Sets the parts of a new run's model that come from other runs (``model.pretrained()``: {module: run
  directory}, e.g. the VQ-VAE of a transformer over its codes) from their newest checkpoints. Returns the paths."""
  paths = []
  for module, source in model.pretrained().items():
    path = checkpoint_path(source)
    try:
      tf.train.Checkpoint(model=module).read(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, IndexError, tf.errors.OpError) as e:
      raise UserError(f"{path} doesn't fit the {type(module).__name__} it should set ({_reason(e)[:300]})") from None
    paths.append(path)
  return paths


def _shape_signature(config):
  keys = {"resolution": config.resolution, "channels": config.channels, "model.name": config.model.name}
  for key in models.shape_keys(config):
    keys[f"model.{key}"] = config.model.get(key)
  return keys


def _shape_changes(stored, config):
  """[(key, stored value, new value)] of the shape keys ``config`` changes from the ``stored`` run's. A key the
  stored config lacks came after the run was made (it ran with that key's default): not a change."""
  old, new = _shape_signature(stored), _shape_signature(config)
  absent = {f"model.{k}" for k in models.shape_keys(config) if k not in stored.model}
  return [(k, old.get(k), new[k]) for k in new if k not in absent and old.get(k) != new[k]]


def _read_config(workdir):
  """The run's stored config. Raises UserError, touching nothing, when the file is not a config."""
  path = os.path.join(workdir, "config.json")
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  try:
    return ml_collections.ConfigDict(json.loads(text))
  except ValueError as e:
    raise UserError(f"{path} is not valid JSON ({e}); the run's checkpoints are untouched: put back the config "
                    "(TensorBoard's text tab has it as run/config), or train in a new --workdir") from None


def check_resume_compatible(config, workdir):
  """Refuses a config that changes variable shapes of the run stored in ``workdir``."""
  if not tf.io.gfile.exists(os.path.join(workdir, "config.json")):
    return
  stored = _read_config(workdir)
  if stored.model.name != config.model.name:
    raise UserError(f"--workdir {workdir} holds a {stored.model.name} run, not {config.model.name}; "
                    "use a new --workdir")
  changed = _shape_changes(stored, config)
  if changed:
    k, old, new = changed[0]
    raise UserError(f"--workdir {workdir} holds a run with {k}={old}, but this config has {k}={new}; "
                    f"resume with --config.{k}={old} or use a new --workdir")


def write_config(config, info, workdir):
  """Writes the resolved config and what the model needs to know of its data, for resume and sampling."""
  tf.io.gfile.makedirs(workdir)
  with tf.io.gfile.GFile(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=2, sort_keys=True))
  with tf.io.gfile.GFile(os.path.join(workdir, "data_info.json"), "w") as f:
    json.dump(dataclasses.asdict(info), f, indent=2)


def read_run(workdir):
  """(config, DataInfo) of the run stored in ``workdir``. Raises UserError when there is none."""
  path = os.path.join(workdir, "config.json")
  require(tf.io.gfile.exists(path), f"no run in --workdir {workdir}: {path} is missing")
  config = _read_config(workdir)
  with tf.io.gfile.GFile(os.path.join(workdir, "data_info.json")) as f:
    info = pipelines.DataInfo.from_dict(json.load(f))
  return config, info


def write_status(workdir, status, step, **extra):
  """``<workdir>/status.json``: how the last process on this run ended (for ``launch.runs list``)."""
  storage.write_json(os.path.join(workdir, "status.json"), dict(
      status=status, step=int(step), time=time.time(), host=socket.gethostname(), pid=os.getpid(), **extra))


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


def runtime_for(config, strategy="auto", cpu_replicas=1, precision=None, xla=None):
  """A runtime for using a trained run: the given strategy, the run's precision and XLA setting unless overridden.
  Sets them in ``config.runtime`` too, so the model is built for what actually runs."""
  config.runtime.strategy = strategy
  config.runtime.cpu_replicas = int(cpu_replicas)
  if precision:
    config.runtime.precision = precision
  if xla is not None:
    config.runtime.xla = bool(xla)
  return runtime_lib.create(config.runtime)


@dataclasses.dataclass
class LoadedRun:
  """A trained run, ready to sample from or score."""
  workdir: str
  config: Any
  info: Any
  runtime: Any
  model: Any
  checkpoint: str  # the restored checkpoint's path
  step: int  # its training step


def _reason(error):
  """The first line of what a TensorFlow restore error says."""
  return str(getattr(error, "message", None) or error).strip().splitlines()[0]


def restore_model(model, path, config, workdir):
  """Restores the model part of checkpoint ``path``. Raises UserError when it doesn't fit or can't be read."""
  try:
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
  except (ValueError, IndexError, tf.errors.OpError) as e:  # shapes that differ; truncated or missing shards
    raise UserError(f"can't restore {path} into the {config.model.name} model that {workdir}/config.json "
                    f"describes ({_reason(e)}); was it written by another version of the code?") from e


def init_from(model, config, source):
  """Sets the networks of a new run's ``model`` (its tf.Module attributes: networks and EMA copies) from
  ``source``, another run's workdir (its newest checkpoint) or a checkpoint path; returns the checkpoint's path.
  The optimizers and model state variables are left as built. Raises UserError when the source's networks
  don't fit this config."""
  source = str(source)
  if tf.io.gfile.exists(os.path.join(source, "config.json")):
    other, _ = read_run(source)
    changed = [f"{k}: {old!r} there, {new!r} here" for k, old, new in _shape_changes(other, config)]
    require(not changed, f"--config.init_from={source} holds networks of another shape ({'; '.join(changed)}); "
            "start from a run with the same settings")
    path = checkpoint_path(source)
  else:
    require(tf.io.gfile.exists(source + ".index"), f"--config.init_from={source} is neither a run directory "
            "(with config.json) nor a checkpoint (a path whose .index file exists)")
    path = source
  networks = tf.Module()
  for name, value in sorted(vars(model).items()):
    if isinstance(value, tf.Module) and not name.startswith("_"):
      setattr(networks, name, value)
  try:
    tf.train.Checkpoint(model=networks).read(path).expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError, IndexError, tf.errors.OpError) as e:
    raise UserError(f"--config.init_from={source}: {path} doesn't fit this {config.model.name} model "
                    f"({_reason(e)[:300]})") from None
  return path


def load_run(workdir, checkpoint=None, **runtime_options):
  """Loads a trained run: its config, a runtime (``runtime_for`` keywords), its model and a checkpoint (default:
  the newest). Raises UserError with what to change."""
  config, info = read_run(workdir)
  path = checkpoint_path(workdir, checkpoint)
  runtime = runtime_for(config, **runtime_options)
  with runtime.strategy.scope():
    model = models.build(config, info, runtime.hardware)
  restore_model(model, path, config, workdir)
  return LoadedRun(workdir=workdir, config=config, info=info, runtime=runtime, model=model, checkpoint=path,
                   step=checkpoints.saved_step(path))
