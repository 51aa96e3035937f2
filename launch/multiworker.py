"""Run N workers of a command on this machine, each with its own TF_CONFIG on loopback ports.

  python -m launch.multiworker --workers=2 -- python -m launch.train --config=launch/configs/dcgan.py:cpu \\
      --workdir=W --config.runtime.strategy=multiworker

Every output line of worker i is printed as ``[worker i] ...``. When a worker dies (non-zero exit), the launcher
stops the others (SIGTERM, then SIGKILL after --grace_seconds) and exits non-zero, naming the worker and showing
its last lines. SIGTERM or Ctrl-C to the launcher is passed on to every worker, which all save at the same step
and exit with status 75. Worker 0 is the chief; the others write nothing to the workdir.

On a machine with GPUs each worker gets its own share of them through CUDA_VISIBLE_DEVICES (``--gpus_per_worker``;
by default the visible GPUs split evenly), so that N workers are one process per GPU group instead of N processes
that each grab every GPU.
"""

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer("workers", 2, "Number of worker processes.")
flags.DEFINE_float("grace_seconds", 30.0, "After a worker dies, how long the others get to stop before SIGKILL.")
flags.DEFINE_bool("hide_startup_info", True, "Don't print TensorFlow's informational start-up lines (I/W-level "
                  "lines logged before its logging is set up); errors are always printed.")
flags.DEFINE_integer("gpus_per_worker", -1, "GPUs each worker sees (CUDA_VISIBLE_DEVICES): -1 splits the "
                     "visible GPUs evenly, 0 leaves CUDA_VISIBLE_DEVICES as it is.")
FLAGS = flags.FLAGS
TAIL = 15
# TensorFlow's C++ start-up messages bypass TF_CPP_MIN_LOG_LEVEL (they are logged before absl logging starts), and
# with N workers they come N times: "I0000 00:00:1700000000.000000   123 port.cc:153] ..." and the notice about it.
_TF_STARTUP_INFO = re.compile(r"^(?:[IW]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\]|WARNING: All log messages before absl::"
                              r"InitializeLog\(\) is called)")


def free_ports(count):
  sockets, ports = [], []
  for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    sockets.append(s)
    ports.append(s.getsockname()[1])
  for s in sockets:
    s.close()
  return ports


def worker_configs(count):
  """One TF_CONFIG (as a JSON string) per worker, on free loopback ports."""
  addresses = [f"127.0.0.1:{p}" for p in free_ports(count)]
  return [json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}})
          for i in range(count)]


def visible_gpus():
  """The GPU ids this process may use, without starting TensorFlow: CUDA_VISIBLE_DEVICES when it is set, else
  what ``nvidia-smi -L`` lists (none when there is no driver)."""
  listed = os.environ.get("CUDA_VISIBLE_DEVICES")
  if listed is not None:
    return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
  try:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def gpu_shares(count, gpus, per_worker):
  """CUDA_VISIBLE_DEVICES for each of ``count`` workers from the visible ``gpus``, or None to leave it alone.
  Raises UserError when the shares don't fit."""
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  if per_worker == 0 or not gpus:
    if per_worker > 0:
      raise UserError(f"--gpus_per_worker={per_worker} but no GPU is visible; use --gpus_per_worker=0 on a CPU")
    return None
  if per_worker < 0:
    per_worker = len(gpus) // count
    if per_worker == 0:
      raise UserError(f"--workers={count} is more than the {len(gpus)} visible GPUs; give each worker a GPU "
                      "(--workers at most the GPU count) or share them with --gpus_per_worker=0")
  if per_worker * count > len(gpus):
    raise UserError(f"--gpus_per_worker={per_worker} with --workers={count} needs {per_worker * count} GPUs; "
                    f"{len(gpus)} are visible ({','.join(gpus)})")
  return [",".join(gpus[i * per_worker:(i + 1) * per_worker]) for i in range(count)]


class Workers:
  """The worker processes, their prefixed output, and the policy when one of them dies."""

  def __init__(self, command, count, grace_seconds, stream=None, hide_startup_info=True, gpus=None):
    self.stream = stream or sys.stdout
    self.hide_startup_info = hide_startup_info
    self.grace_seconds = grace_seconds
    self.tails = [collections.deque(maxlen=TAIL) for _ in range(count)]
    self._print_lock = threading.Lock()
    self.processes = []
    for index, config in enumerate(worker_configs(count)):
      env = dict(os.environ, TF_CONFIG=config, PYTHONUNBUFFERED="1")
      if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index]
      process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 bufsize=1, start_new_session=True)
      self.processes.append(process)
      threading.Thread(target=self._relay, args=(index, process), daemon=True).start()

  def _relay(self, index, process):
    for line in process.stdout:
      line = line.rstrip("\n")
      self.tails[index].append(line)
      if self.hide_startup_info and _TF_STARTUP_INFO.match(line):
        continue
      with self._print_lock:
        self.stream.write(f"[worker {index}] {line}\n")
        self.stream.flush()

  def signal_all(self, number):
    for process in self.processes:
      if process.poll() is None:
        try:
          os.killpg(process.pid, number)
        except ProcessLookupError:
          pass

  def stop_all(self):
    self.signal_all(signal.SIGTERM)
    deadline = time.monotonic() + self.grace_seconds
    while time.monotonic() < deadline and any(p.poll() is None for p in self.processes):
      time.sleep(0.2)
    self.signal_all(signal.SIGKILL)
    for process in self.processes:
      process.wait()

  def wait(self):
    """Waits for every worker; returns (exit status, the first failed worker or None)."""
    while True:
      codes = [p.poll() for p in self.processes]
      failed = [i for i, c in enumerate(codes) if c not in (None, 0, 75)]
      if failed:
        self.stop_all()
        return codes[failed[0]], failed[0]
      if all(c is not None for c in codes):
        time.sleep(0.2)  # let the relays print the last lines
        return (75 if 75 in codes else 0), None
      time.sleep(0.2)


def main(argv):
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  command = argv[1:]
  if command and command[0] == "--":
    command = command[1:]
  if not command:
    raise UserError("give the command after --, e.g. python -m launch.multiworker --workers=2 -- python -m "
                    "launch.train --config=... --workdir=... --config.runtime.strategy=multiworker")
  if FLAGS.workers < 1:
    raise UserError(f"--workers={FLAGS.workers} must be at least 1")
  gpus = gpu_shares(FLAGS.workers, visible_gpus(), FLAGS.gpus_per_worker)
  workers = Workers(command, FLAGS.workers, FLAGS.grace_seconds,
                    hide_startup_info=FLAGS.hide_startup_info, gpus=gpus)
  forward = lambda number, frame: workers.signal_all(signal.SIGTERM)
  signal.signal(signal.SIGTERM, forward)
  signal.signal(signal.SIGINT, forward)
  status, failed = workers.wait()
  if failed is not None:
    tail = "\n".join(f"    {line}" for line in workers.tails[failed])
    how = (f"was killed by signal {-status} ({signal.Signals(-status).name})" if status < 0
           else f"exited with status {status}")
    sys.stderr.write(f"genscale: error: worker {failed} {how}; stopped the other workers. Its last lines:\n{tail}\n")
    sys.exit(status if status and status > 0 else 1)
  sys.exit(status)


def entry_point():
  cli.run(main)


if __name__ == "__main__":
  entry_point()
