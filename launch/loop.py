"""The one training loop, for every model family: ``train(config, workdir)``.

It reads top to bottom: config and workdir checks, runtime, input, the trainer (model, optimizers and the
compiled step, launch/trainer.py), restore, the actions (launch/actions.py), and the controller that alternates
compiled calls with the actions (launch/controller.py). docs/architecture.md draws the boxes.
"""

import contextlib
import os

from absl import logging
import numpy as np

from evaluation import periodic as periodic_eval
from launch import actions as actions_lib
from launch import checkpoints
from launch import lock as lock_lib
from launch import monitor as monitor_lib
from launch import rundir
from launch import runtime as runtime_lib
from launch import storage
from launch.actions import NonFiniteLoss  # pylint: disable=unused-import (raised by train)
from launch.controller import Controller
from launch.signals import Preempted, StopSignals  # pylint: disable=unused-import (Preempted: raised by train)
from launch.trainer import Trainer
import pipelines


def train(config, workdir, break_lock=False):
  """Trains (or resumes) the run in ``workdir`` to ``config.steps``. Returns the last call's metric values.

  Raises UserError for bad input (before any compute), NonFiniteLoss when a loss diverges (the last checkpoint
  stays as it was), and Preempted after saving on SIGTERM/SIGINT.
  """
  config = rundir.prepare_config(config)
  total = int(config.steps)
  if runtime_lib.chief_task():
    storage.preflight(workdir)  # before anything is read or built; only the chief writes to the workdir
  rundir.check_resume_compatible(config, workdir)
  done = checkpoints.committed_steps(workdir)
  if done and done[0] >= total:
    print(f"{workdir} already reached step {done[0]} (steps={total}); nothing to do", flush=True)
    return {}
  source = pipelines.open_source(config.data, config.get("input"))
  runtime = runtime_lib.create(config.runtime)
  holds_lock = lock_lib.WorkdirLock(workdir, break_stale=break_lock) if runtime.is_chief else contextlib.nullcontext()
  with holds_lock, StopSignals() as signals:
    return _train(config, workdir, runtime, source, signals)


def build_actions(config, workdir, trainer, store, monitor, signals):
  """The actions of a training run, in the order they see each compiled call's result."""
  total, runtime = int(config.steps), trainer.runtime
  actions = [
      actions_lib.NonFinitePolicy(total, trainer, store, monitor, config, workdir),
      actions_lib.StageLog(total, trainer, monitor),
      actions_lib.LogLine(total, config.log_every, trainer, monitor),
      actions_lib.Histograms(total, config.get("histogram_every"), trainer, monitor),
      actions_lib.SampleGrids(total, config.sample_every, trainer, monitor, config.sample_grid),
      actions_lib.SaveCheckpoint(total, config.checkpoint_every, store),
  ]
  evaluation = periodic_eval.PeriodicEvaluation.from_config(config, runtime, trainer.model, trainer.source.info,
                                                            workdir, monitor.print)
  if evaluation is not None:
    actions.append(actions_lib.Evaluate(total, evaluation, monitor))
  actions.append(actions_lib.StopOnRequest(total, signals, store, runtime, monitor, workdir))
  window = rundir.parse_profile_steps(config.get("profile_steps"))
  if window:
    actions.append(actions_lib.Profile(total, window, workdir, monitor, enabled=runtime.is_chief))
  return actions


def _describe(monitor, config, trainer, workdir, step):
  """The run's first line, and its config, versions and hyperparameters in TensorBoard."""
  info, runtime = trainer.source.info, trainer.runtime
  monitor.print(f"genscale: {config.model.name} on {info.spec} ({info.count} images), {runtime.describe()}, "
                f"{'resuming at step ' + str(step) if step else 'new run'} -> step {config.steps}")
  monitor.text(step, "run/config", "```\n" + config.to_json(indent=2, sort_keys=True) + "\n```")
  monitor.text(step, "run/versions", monitor_lib.versions() + f"\n- runtime: {runtime.describe()}")
  monitor.hparams(config, os.path.basename(workdir.rstrip("/")) or workdir)


def _train(config, workdir, runtime, source, signals):
  trainer = Trainer(config, runtime, source)
  if runtime.is_chief:
    rundir.write_config(config, source.info, workdir)
  store = checkpoints.Store(workdir, trainer.checkpoint, config.keep_checkpoints, config.milestone_every,
                            runtime.is_chief, asynchronous=config.async_checkpoints)
  store.remove_orphans()
  if store.restore_latest(warn=print) is None:
    for path in rundir.restore_pretrained(trainer.model):
      print(f"pretrained part from {path}", flush=True)
    if config.get("init_from"):
      path = rundir.init_from(trainer.model, config, config.init_from)
      print(f"networks from {path}; the optimizer, the counters and model state start fresh", flush=True)
  trainer.mark_start()
  step = int(trainer.step.numpy())
  monitor = monitor_lib.Monitor(workdir, config.steps, step, enabled=runtime.is_chief)
  try:
    actions = build_actions(config, workdir, trainer, store, monitor, signals)
    _describe(monitor, config, trainer, workdir, step)
    result = Controller(trainer, actions, config.steps, runtime.steps_per_loop).run()
    store.wait()
    step = int(trainer.step.numpy())
    if runtime.is_chief:
      rundir.write_status(workdir, "finished", step)
    _dump_weights(trainer, runtime)
    monitor.print(f"done: step {step}, {monitor.elapsed():.0f}s in this process, workdir {workdir}")
  finally:
    store.close()
    monitor.close()
    logging.flush()
  # Workers leave together: one that exits while another still writes its last files is reported by
  # TensorFlow's coordination service as crashed, and the other then waits for it until a timeout.
  runtime.any_worker(False)
  return result.values() if result else {}


def _dump_weights(trainer, runtime):
  """Diagnostics for distributed runs: with GENSCALE_DUMP_WEIGHTS=DIR, every worker writes its copy of the
  model's variables to DIR/worker-<index>.npz at the end of training, so copies can be compared."""
  directory = os.environ.get("GENSCALE_DUMP_WEIGHTS")
  if not directory:
    return
  os.makedirs(directory, exist_ok=True)
  values = {f"{i:04d}:{v.name}": v.numpy() for i, v in enumerate(trainer.model.variables)}
  np.savez(os.path.join(directory, f"worker-{runtime.worker_index}.npz"), **values)
