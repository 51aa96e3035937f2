"""Checkpoints and fault tolerance: exact resume, kill -9, SIGTERM, corruption fallback, locks, retention."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import checkpoints
from launch import lock as lock_lib
from launch import loop
from launch import runs
from tests.conftest import ROOT, error_lines, run_module

TINY = ["--config=launch/configs/dcgan.py:cpu", "--config.model.g_width=8", "--config.model.d_width=8",
        "--config.model.latent_dim=16", "--config.batch_size=16", "--config.sample_every=1000",
        "--config.sample_grid=4", "--config.runtime.steps_per_loop=1", "--config.histogram_every=0"]


def _variables(path):
  return {name: tf.train.load_variable(path, name) for name, _ in tf.train.list_variables(path)
          if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _config(**changes):
  """The tiny DCGAN of TINY, as a config for ``loop.train`` in this process."""
  from launch.configs import common, dcgan  # pylint: disable=g-import-not-at-top
  values = {"model.g_width": 8, "model.d_width": 8, "model.latent_dim": 16, "batch_size": 16, "sample_every": 1000,
            "sample_grid": 4, "runtime.steps_per_loop": 1, "histogram_every": 0, **changes}
  return common.apply(dcgan.get_config("cpu"), values)


def _train_here(workdir, **changes):
  """``launch.train`` in this process; returns its standard output."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    loop.train(_config(**changes), workdir)
  return out.getvalue()


def test_a_resumed_run_is_bitwise_equal_to_an_unbroken_one(tmp_path):
  straight, broken = str(tmp_path / "straight"), str(tmp_path / "broken")
  common = dict(checkpoint_every=4, log_every=4)
  _train_here(straight, steps=8, **common)
  _train_here(broken, steps=4, **common)
  assert "resuming at step 4" in _train_here(broken, steps=8, **common)
  a, b = _variables(checkpoints.path_of(straight, 8)), _variables(checkpoints.path_of(broken, 8))
  assert a.keys() == b.keys()
  names = " ".join(a)
  assert "generator_ema" in names and "optimizers" in names and "position_offset" in names
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # weights, EMA, optimizer slots, counters


def test_op_determinism_runs_and_learns_what_the_default_learns_on_a_cpu(tmp_path):
  """runtime.deterministic turns on TensorFlow's op determinism for the process (so in a process of its own): the
  step then runs without reading the clock in the graph, and on a CPU, whose kernels are deterministic already,
  it learns the same weights bit for bit."""
  plain, deterministic = str(tmp_path / "plain"), str(tmp_path / "deterministic")
  _train_here(plain, steps=3, checkpoint_every=3, log_every=3)
  result = run_module("launch.train", *TINY, f"--workdir={deterministic}", "--config.steps=3",
                      "--config.checkpoint_every=3", "--config.log_every=3", "--config.runtime.deterministic=true")
  assert result.returncode == 0, result.stderr[-3000:]
  assert " deterministic, new run" in result.stdout and "input-wait" not in result.stdout
  a, b = _variables(checkpoints.path_of(plain, 3)), _variables(checkpoints.path_of(deterministic, 3))
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_new_run_starts_from_another_runs_networks_with_fresh_counters(tmp_path):
  source, tuned = str(tmp_path / "source"), str(tmp_path / "tuned")
  _train_here(source, steps=3, checkpoint_every=3, log_every=3)
  # A learning rate of 0 keeps the trained weights through the tuned run's one step.
  out = _train_here(tuned, steps=1, checkpoint_every=1, log_every=1, init_from=source, **{"model.lr": 0.0})
  assert f"networks from {checkpoints.path_of(source, 3)}" in out and "new run" in out
  a, b = _variables(checkpoints.path_of(source, 3)), _variables(checkpoints.path_of(tuned, 1))
  weights = [n for n in a if n.startswith(("model/generator/", "model/discriminator/"))]
  assert len(weights) > 10
  for name in weights:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  assert a["step/.ATTRIBUTES/VARIABLE_VALUE"] == 3 and b["step/.ATTRIBUTES/VARIABLE_VALUE"] == 1
  iterations = [n for n in b if n.startswith("model/optimizers/") and "iteration" in n]
  assert iterations and all(b[n] == 1 for n in iterations)  # the optimizers started again
  # Resuming the tuned run uses its own checkpoint; init_from no longer applies.
  assert "networks from" not in _train_here(tuned, steps=2, init_from=source, **{"model.lr": 0.0})


@pytest.mark.parametrize("changes, message", [
    ({"model.g_width": 16}, r"holds networks of another shape \(model.g_width: 8 there, 16 here\)"),
    ({"init_from": "/no/such/run"}, "is neither a run directory .* nor a checkpoint"),
])
def test_init_from_a_run_that_does_not_fit_is_one_error(tmp_path, changes, message):
  source = str(tmp_path / "source")
  _train_here(source, steps=1, checkpoint_every=1, log_every=1)
  with pytest.raises(UserError, match=message):
    _train_here(str(tmp_path / "tuned"), steps=1, **{"init_from": source, **changes})


def _wait_for(predicate, timeout, process):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return
    if process.poll() is not None:
      raise AssertionError(f"training exited early: {process.returncode}\n{process.stderr.read()[-2000:]}")
    time.sleep(0.2)
  raise AssertionError("timed out")


def _start(workdir, *args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable, "-m", "launch.train", *TINY, f"--workdir={workdir}", *args], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _latest(workdir):
  state = checkpoints.read_state(workdir)
  return state["latest"] if state else 0


def test_kill_9_then_rerun_resumes_from_the_last_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")
  args = ["--config.steps=100000", "--config.checkpoint_every=5", "--config.log_every=5"]
  process = _start(workdir, *args)
  _wait_for(lambda: _latest(workdir) >= 10, 180, process)
  process.kill()
  process.wait()
  saved = _latest(workdir)
  assert not os.path.exists(os.path.join(workdir, "status.json"))  # no clean exit was recorded
  listed = runs.describe_run(workdir)
  assert listed["status"].startswith("stale lock") and listed["step"] == saved  # dead pid on this host
  again = _train_here(workdir, steps=saved + 5, checkpoint_every=5, log_every=5)
  assert f"resuming at step {saved}" in again
  assert checkpoints.committed_steps(workdir)[0] == saved + 5


def test_sigterm_saves_the_current_step_and_exits_75(tmp_path):
  workdir = str(tmp_path / "run")
  process = _start(workdir, "--config.steps=100000", "--config.checkpoint_every=1000", "--config.log_every=5")
  _wait_for(lambda: os.path.exists(os.path.join(workdir, "samples", "reals.png")), 120, process)  # loop started
  _wait_for(lambda: os.path.exists(os.path.join(workdir, "tensorboard")) and _logged_step(workdir) >= 5, 120,
            process)  # some steps trained
  process.send_signal(signal.SIGTERM)
  out, err = process.communicate(timeout=120)
  assert process.returncode == 75, err[-2000:]
  status = json.load(open(os.path.join(workdir, "status.json")))
  assert status["status"] == "preempted" and status["signal"] == "SIGTERM"
  assert checkpoints.committed_steps(workdir)[0] == status["step"] > 0  # saved at the step it stopped
  assert f"saved step {status['step']} and stopped" in out
  assert not os.path.exists(os.path.join(workdir, "lock.json"))  # released


def _logged_step(workdir):
  """The last step with a D/loss scalar in the run's events (0 before the first)."""
  steps = [0]
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.*")):
    try:
      for event in tf.compat.v1.train.summary_iterator(path):
        steps += [event.step for v in event.summary.value if v.tag == "D/loss"]
    except tf.errors.DataLossError:  # the writer is appending
      pass
  return max(steps)


def test_sigint_in_this_process_saves_and_stops_and_a_second_one_interrupts(tmp_path):
  import threading  # pylint: disable=g-import-not-at-top
  from launch import signals as signals_lib  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  timer = threading.Timer(6.0, lambda: os.kill(os.getpid(), signal.SIGINT))  # Ctrl-C, once training runs
  timer.start()
  try:
    with pytest.raises(loop.Preempted, match="stopped by SIGINT at step"):
      _train_here(workdir, steps=100000, checkpoint_every=100000, log_every=5)
  finally:
    timer.cancel()
  status = json.load(open(os.path.join(workdir, "status.json")))
  assert status["status"] == "preempted" and status["signal"] == "SIGINT"
  assert checkpoints.committed_steps(workdir) == [status["step"]] and status["step"] > 0
  # A second Ctrl-C while the first is being handled (the save) interrupts at once.
  stop = signals_lib.StopSignals()
  stop._handle(signal.SIGINT, None)  # pylint: disable=protected-access
  assert stop.requested == "SIGINT"
  with pytest.raises(KeyboardInterrupt):
    stop._handle(signal.SIGINT, None)  # pylint: disable=protected-access
  stop._handle(signal.SIGTERM, None)  # pylint: disable=protected-access  (a second SIGTERM only notes it)
  assert stop.requested == "SIGTERM"


def test_a_truncated_newest_checkpoint_falls_back_with_a_warning(tmp_path):
  workdir = str(tmp_path / "run")
  _train_here(workdir, steps=10, checkpoint_every=5)
  newest = checkpoints.path_of(workdir, 10)
  data = glob.glob(newest + ".data-*")[0]
  size = os.path.getsize(data)
  with open(data, "r+b") as f:
    f.truncate(size // 2)
  again = _train_here(workdir, steps=15, checkpoint_every=5)
  assert f"warning: checkpoint {newest} failed to restore" in again
  assert "falling back to ckpt-5" in again and "resuming at step 5" in again
  assert os.path.exists(newest + ".index")  # the bad checkpoint is never deleted automatically


def test_a_corrupt_state_file_falls_back_to_the_checkpoint_files(tmp_path):
  workdir = str(tmp_path / "run")
  _train_here(workdir, steps=4, checkpoint_every=2)
  state = os.path.join(checkpoints.directory_of(workdir), "state.json")
  with open(state, "w") as f:
    f.write('{"steps": [2, 4], "lat')  # cut off mid-write
  assert checkpoints.committed_steps(workdir) == [4, 2]  # from the .index files
  again = _train_here(workdir, steps=6, checkpoint_every=2)
  assert f"warning: {state} is not valid JSON" in again and "resuming at step 4" in again
  assert checkpoints.read_state(workdir)["latest"] == 6  # rewritten whole by the next commit


def test_orphan_temp_directories_are_removed_at_start(tmp_path):
  workdir = str(tmp_path / "run")
  orphan = os.path.join(checkpoints.directory_of(workdir), "ckpt-7_temp")
  os.makedirs(os.path.join(orphan, "part-00000"))
  _train_here(workdir, steps=2, checkpoint_every=2)
  assert not os.path.exists(orphan)


def test_a_held_lock_refuses_and_a_stale_one_is_detected(tmp_path):
  workdir = str(tmp_path / "run")
  with lock_lib.WorkdirLock(workdir):  # this test process holds it, with a fresh heartbeat
    with pytest.raises(UserError) as held:
      _train_here(workdir, steps=2)
  assert str(held.value).startswith(f"--workdir {workdir} is in use by host ") and f"pid {os.getpid()}" in str(
      held.value)
  stale = {"host": "elsewhere", "pid": 1, "started": 0, "heartbeat": time.time() - 3600}
  with open(os.path.join(workdir, "lock.json"), "w") as f:
    json.dump(stale, f)
  with pytest.raises(UserError, match="has a stale lock from host elsewhere pid 1.*rerun with --break_lock"):
    _train_here(workdir, steps=2)
  loop.train(_config(steps=2), workdir, break_lock=True)
  assert not os.path.exists(os.path.join(workdir, "lock.json"))


def _store(tmp_path, keep, milestone_every, asynchronous=True):
  import keras  # pylint: disable=g-import-not-at-top
  v = tf.Variable(tf.zeros([4]))
  step = tf.Variable(0, dtype=tf.int64)
  opt = keras.optimizers.Adam(0.1)
  opt.build([v])
  checkpoint = tf.train.Checkpoint(v=v, step=step, opt=opt)
  return checkpoints.Store(str(tmp_path), checkpoint, keep, milestone_every, asynchronous=asynchronous), v, step, opt


def test_retention_keeps_the_newest_and_the_milestones_and_async_saves_repeat(tmp_path):
  store, v, step, opt = _store(tmp_path, keep=2, milestone_every=4)
  for s in range(1, 10):
    step.assign(s)
    v.assign_add(tf.ones([4]))
    opt.apply_gradients([(tf.ones([4]), v)])
    store.save(s)
  store.close()
  assert checkpoints.committed_steps(str(tmp_path)) == [9, 8, 4]
  files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(checkpoints.directory_of(str(tmp_path)),
                                                                     "ckpt-*.index")))
  assert files == ["ckpt-4.index", "ckpt-8.index", "ckpt-9.index"]
  values = _variables(checkpoints.path_of(str(tmp_path), 9))
  np.testing.assert_array_equal(values["v/.ATTRIBUTES/VARIABLE_VALUE"], v.numpy())
  assert values["step/.ATTRIBUTES/VARIABLE_VALUE"] == 9


def test_an_asynchronous_save_holds_the_values_of_the_moment_it_was_taken(tmp_path):
  store, v, step, _ = _store(tmp_path, keep=3, milestone_every=0)
  v.assign([1.0, 2.0, 3.0, 4.0])
  step.assign(1)
  store.save(1)
  v.assign([9.0, 9.0, 9.0, 9.0])  # training goes on while the file is written
  store.close()
  restored = _variables(checkpoints.path_of(str(tmp_path), 1))["v/.ATTRIBUTES/VARIABLE_VALUE"]
  np.testing.assert_array_equal(restored, [1.0, 2.0, 3.0, 4.0])


def test_no_restorable_checkpoint_is_one_error_that_names_them_and_deletes_nothing(tmp_path):
  store, _, step, _ = _store(tmp_path, keep=3, milestone_every=0, asynchronous=False)
  for s in (1, 2):
    step.assign(s)
    store.save(s)
  store.close()
  files = sorted(glob.glob(os.path.join(checkpoints.directory_of(str(tmp_path)), "*")))
  for data in glob.glob(os.path.join(checkpoints.directory_of(str(tmp_path)), "*.data-*")):
    with open(data, "r+b") as f:
      f.truncate(3)
  warnings = []
  with pytest.raises(UserError, match=r"none of the checkpoints in .* could be restored \(tried ckpt-2, ckpt-1;.*"
                                      r"nothing was deleted: train in a new --workdir, or move that directory aside"):
    store.restore_latest(warn=warnings.append)
  assert len(warnings) == 2 and sorted(glob.glob(os.path.join(checkpoints.directory_of(str(tmp_path)), "*"))) == files


def test_a_corrupt_config_file_is_one_error_and_stays_as_it_was(tmp_path):
  from launch import rundir  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text('{"model": {"name": "dcg')
  with pytest.raises(UserError, match=r"config.json is not valid JSON .*the run's checkpoints are untouched: put "
                                      r"back the config \(TensorBoard's text tab has it as run/config\)"):
    rundir.read_run(str(workdir))
  assert (workdir / "config.json").read_text() == '{"model": {"name": "dcg'


def test_runs_list_reports_step_time_and_status(tmp_path, capsys):
  workdir = str(tmp_path / "runs" / "a")
  _train_here(workdir, steps=4, checkpoint_every=2)
  result = run_module("launch.runs", "list", str(tmp_path / "runs"))
  assert result.returncode == 0, result.stderr[-2000:]
  line = [l for l in result.stdout.splitlines() if l.startswith(workdir)][0]
  assert "dcgan  step 4/4  last checkpoint 20" in line and line.endswith("finished")
  del capsys
