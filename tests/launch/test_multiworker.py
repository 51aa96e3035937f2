"""Multi-worker training through the local launcher: two processes with their own TF_CONFIG on loopback.

The workers must end with identical weights, equal to one process that runs MirroredStrategy over two logical
CPUs with the same global batch (plain SGD, whose step shows a wrongly scaled gradient, where Adam's would not); a
resumed multi-worker run must continue where it stopped, here with TensorFlow's ring all-reduce; only the chief
writes to the workdir; a worker that dies ends the launcher with an error that names it; SIGTERM to one worker or
to the launcher stops every worker at the same step.
"""

import glob
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from launch import cluster
from tests.conftest import ROOT, config_from_flags, error_lines, run_module

TINY = ["--config=launch/configs/dcgan.py:cpu", "--config.model.g_width=8", "--config.model.d_width=8",
        "--config.model.latent_dim=16", "--config.batch_size=16", "--config.log_every=3", "--config.sample_every=6",
        "--config.checkpoint_every=3", "--config.sample_grid=16", "--config.runtime.steps_per_loop=3",
        "--config.async_checkpoints=false", "--config.model.optimizer=sgd", "--config.model.lr=0.05",
        "--config.histogram_every=0"]
TRAIN = [sys.executable, "-m", "launch.train"]


def launch_workers(workdir, steps, dump, scratch, extra=()):
  env = dict(os.environ, GENSCALE_DUMP_WEIGHTS=dump, TMPDIR=scratch, PYTHONPATH=ROOT)
  os.makedirs(scratch, exist_ok=True)
  return run_module("launch.multiworker", "--workers=2", "--", *TRAIN, *TINY, f"--workdir={workdir}",
                    "--config.runtime.strategy=multiworker", f"--config.steps={steps}", *extra, env=env)


def load(path):
  with np.load(path) as values:
    return {k: values[k] for k in sorted(values.files)}


def _checkpoint_model(workdir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from launch import checkpoints  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(checkpoints.latest(workdir))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("model/")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A 2-worker run of 6 steps resumed to 9 (with the ring all-reduce), and, in this process, a two-replica run of
  9 steps with the same global batch."""
  from launch import loop  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.mktemp("multiworker")
  workdir, scratch = str(base / "mw"), str(base / "scratch")
  first = launch_workers(workdir, 6, str(base / "dump6"), scratch)
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  resumed = launch_workers(workdir, 9, str(base / "dump9"), scratch, ["--config.runtime.all_reduce=ring"])
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
  config = config_from_flags(*TINY, "--config.runtime.strategy=cpu", "--config.runtime.cpu_replicas=2",
                             "--config.steps=9")
  loop.train(config, str(base / "single"))
  return dict(base=base, workdir=workdir, scratch=scratch, first=first, resumed=resumed,
              single=_checkpoint_model(str(base / "single")))


def test_every_line_is_prefixed_with_its_worker(runs):
  lines = [l for l in runs["first"].stdout.splitlines() if l.strip()]
  assert lines and all(l.startswith(("[worker 0] ", "[worker 1] ")) for l in lines), lines[:5]
  assert any("workers=2" in l for l in lines if l.startswith("[worker 0]"))


def test_workers_hold_identical_weights(runs):
  for dump in ("dump6", "dump9"):
    chief, other = load(runs["base"] / dump / "worker-0.npz"), load(runs["base"] / dump / "worker-1.npz")
    assert chief.keys() == other.keys() and len(chief) > 10
    for name in chief:
      np.testing.assert_array_equal(chief[name], other[name], err_msg=f"{dump}: {name}")


def test_resumed_multiworker_run_equals_one_process_with_the_same_global_batch(runs):
  assert "resuming at step 6" in runs["resumed"].stdout
  assert "[worker 0]" in runs["resumed"].stdout
  multi, single = _checkpoint_model(runs["workdir"]), runs["single"]
  assert multi.keys() == single.keys() and len(multi) > 10
  for name in multi:
    np.testing.assert_allclose(multi[name], single[name], rtol=1e-4, atol=1e-5, err_msg=name)
  # The comparison can fail: the weights moved during the 9 steps.
  before, after = load(runs["base"] / "dump6" / "worker-0.npz"), load(runs["base"] / "dump9" / "worker-0.npz")
  assert any(not np.allclose(before[n], after[n]) for n in after)


def test_only_the_chief_writes_and_worker_scratch_is_removed(runs):
  workdir = runs["workdir"]
  with open(os.path.join(workdir, "status.json"), encoding="utf-8") as f:
    assert json.load(f)["step"] == 9
  # One writer: one events file per run of the chief, one set of checkpoints.
  events = glob.glob(os.path.join(workdir, "tensorboard", "**", "events.out.tfevents.*"), recursive=True)
  assert len(events) == 2, events
  indexes = sorted(os.path.basename(p) for p in glob.glob(os.path.join(workdir, "checkpoints", "ckpt-*.index")))
  assert indexes == ["ckpt-3.index", "ckpt-6.index", "ckpt-9.index"]
  # The other worker's checkpoint writes went to a temporary directory that is gone.
  assert not glob.glob(os.path.join(runs["scratch"], "genscale-worker-*"))


def worker_pid(launcher_pid, index):
  """The pid of worker ``index`` started by the launcher, from the TF_CONFIG in its environment."""
  for status in glob.glob("/proc/[0-9]*/status"):
    pid = int(status.split("/")[2])
    try:
      with open(status, encoding="utf-8") as f:
        parent = int(next(l for l in f if l.startswith("PPid:")).split()[1])
      if parent != launcher_pid:
        continue
      with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    except (OSError, StopIteration, ValueError):
      continue
    config = env.get(b"TF_CONFIG")
    if config and json.loads(config)["task"]["index"] == index:
      return pid
  return None


def _lines_until(stream, predicate, timeout=240):
  """The lines a process prints until one satisfies ``predicate``; fails (never hangs) after ``timeout`` seconds
  or when the stream ends first."""
  lines = queue.Queue()
  threading.Thread(target=lambda: [lines.put(l) for l in stream] + [lines.put(None)], daemon=True).start()
  seen, deadline = [], time.monotonic() + timeout
  while True:
    try:
      line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
    except queue.Empty:
      raise AssertionError("timed out waiting; last lines:\n" + "".join(seen[-20:])) from None
    if line is None:
      raise AssertionError("the process ended first; last lines:\n" + "".join(seen[-20:]))
    seen.append(line)
    if predicate(line):
      return seen, lines


def _rest(lines):
  """What is left in a ``_lines_until`` queue once the process has ended."""
  out = []
  while True:
    line = lines.get(timeout=30)
    if line is None:
      return "".join(out)
    out.append(line)


def _launch(tmp_path, *extra, stderr=subprocess.STDOUT):
  env = dict(os.environ, PYTHONPATH=ROOT)
  command = [sys.executable, "-m", "launch.multiworker", "--workers=2", *extra, "--", *TRAIN, *TINY,
             f"--workdir={tmp_path / 'w'}", "--config.runtime.strategy=multiworker", "--config.steps=100000",
             "--config.checkpoint_every=100000"]
  return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


# A stand-in worker: prints a step line, then waits to be stopped. The launcher's part (notice a dead worker, stop
# the others, name it) doesn't depend on what the workers run; the tests above and below run real training.
_STAND_IN = "import time; print('step 1', flush=True); time.sleep(300)"


def test_a_dead_worker_stops_the_launcher_with_an_error_naming_it():
  env = dict(os.environ, PYTHONPATH=ROOT)
  launcher = subprocess.Popen([sys.executable, "-m", "launch.multiworker", "--workers=2", "--grace_seconds=5", "--",
                               sys.executable, "-c", _STAND_IN], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
  try:
    # Wait for the victim's own line: until it prints, worker 1 may still be between fork and exec, where its
    # environment (TF_CONFIG, which worker_pid reads) is not yet its own.
    output, _ = _lines_until(launcher.stdout, lambda l: l.startswith("[worker 1] step "))
    victim = worker_pid(launcher.pid, 1)
    assert victim, "".join(output[-20:])
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    _, stderr = launcher.communicate(timeout=120)
  finally:
    if launcher.poll() is None:
      launcher.kill()
  assert launcher.returncode != 0
  errors = error_lines(stderr)
  assert len(errors) == 1 and "worker 1 was killed by signal 9 (SIGKILL)" in errors[0], stderr[-2000:]
  assert "stopped the other workers" in errors[0]
  assert worker_pid(launcher.pid, 0) is None and time.monotonic() - start < 60


@pytest.mark.xdist_group("multiworker-signals")
@pytest.mark.parametrize("target", ["one worker", "the launcher"])
def test_sigterm_stops_every_worker_at_the_same_step(tmp_path, target):
  launcher = _launch(tmp_path)
  try:
    output, lines = _lines_until(launcher.stdout, lambda l: l.startswith("[worker 0] step "))
    if target == "one worker":
      os.kill(worker_pid(launcher.pid, 1), signal.SIGTERM)  # the non-chief: the chief must learn of it
    else:
      launcher.send_signal(signal.SIGTERM)  # the launcher passes it to every worker
    launcher.wait(timeout=120)
    rest = _rest(lines)
  finally:
    if launcher.poll() is None:
      launcher.kill()
  output = "".join(output) + rest
  assert launcher.returncode == 75, output[-3000:]
  stops = sorted(l for l in output.splitlines() if "genscale: stopped by" in l)
  assert len(stops) == 2, output[-3000:]
  steps = {int(l.rsplit("at step ", 1)[1].split(";")[0]) for l in stops}
  assert len(steps) == 1, stops
  step = steps.pop()
  if target == "one worker":
    assert "[worker 0] genscale: stopped by a stop request from another worker at step" in stops[0]
  else:
    assert all("stopped by SIGTERM" in l for l in stops), stops
  workdir = tmp_path / "w"
  assert os.path.exists(workdir / "checkpoints" / f"ckpt-{step}.index")
  with open(workdir / "status.json", encoding="utf-8") as f:
    assert json.load(f)["step"] == step


def test_tf_config_for_a_host_list():
  config = cluster.tf_config(["10.0.0.2", "10.0.0.3:5000"], 1)
  assert config == {"cluster": {"worker": ["10.0.0.2:2222", "10.0.0.3:5000"]}, "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize("index", [2, -1, None])
def test_tf_config_refuses_an_index_outside_the_host_list(index):
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="--index"):
    cluster.tf_config(["a", "b"], index)


def test_tf_config_for_a_kubernetes_indexed_job():
  env = {"JOB_COMPLETION_INDEX": "2", "GENSCALE_JOB_NAME": "gan", "GENSCALE_SERVICE": "gan-workers",
         "GENSCALE_WORKERS": "3"}
  config = cluster.tf_config_from_k8s(env)
  assert config["cluster"]["worker"] == ["gan-0.gan-workers:2222", "gan-1.gan-workers:2222", "gan-2.gan-workers:2222"]
  assert config["task"] == {"type": "worker", "index": 2}


def test_kubernetes_environment_missing_names_what_to_set():
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="GENSCALE_SERVICE, GENSCALE_WORKERS"):
    cluster.tf_config_from_k8s({"JOB_COMPLETION_INDEX": "0", "GENSCALE_JOB_NAME": "gan"})


def test_cluster_exec_runs_the_command_with_tf_config():
  probe = "import os, json; print(json.dumps(json.loads(os.environ['TF_CONFIG'])))"
  result = run_module("launch.cluster", "exec", "--hosts=h0,h1", "--index=1", "--", sys.executable, "-c", probe)
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout.strip().splitlines()[-1]) == cluster.tf_config(["h0", "h1"], 1)


@pytest.mark.parametrize("visible, args, expected", [
    ("0,1,2,3", [], ["0,1", "2,3"]),  # split evenly
    ("4,5,6", ["--gpus_per_worker=1"], ["4", "5"]),
    ("0,1", ["--gpus_per_worker=0"], ["0,1", "0,1"]),  # left alone
])
def test_each_worker_sees_its_own_gpus(visible, args, expected):
  show = "import os; print('gpus=' + os.environ['CUDA_VISIBLE_DEVICES'])"
  result = run_module("launch.multiworker", "--workers=2", *args, "--", sys.executable, "-c", show,
                      env={"CUDA_VISIBLE_DEVICES": visible})
  assert result.returncode == 0, result.stderr[-2000:]
  seen = sorted(line for line in result.stdout.splitlines() if "gpus=" in line)
  assert seen == [f"[worker {i}] gpus={g}" for i, g in enumerate(expected)]


def test_gpu_shares_that_do_not_fit_are_one_error():
  result = run_module("launch.multiworker", "--workers=2", "--gpus_per_worker=2", "--", sys.executable, "-c", "0",
                      env={"CUDA_VISIBLE_DEVICES": "0,1,2"})
  assert result.returncode == 2
  assert error_lines(result.stderr) == [
      "genscale: error: --gpus_per_worker=2 with --workers=2 needs 4 GPUs; 3 are visible (0,1,2)"]
