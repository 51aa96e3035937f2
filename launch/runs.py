"""List training runs: ``python -m launch.runs list DIR_OR_GS_PREFIX``.

For every run directory (one holding ``config.json``) at or under the path: its model, the newest committed
checkpoint step against the target, when that checkpoint was saved, and its status — running (a lock with a fresh
heartbeat), stale lock, finished, preempted, failed, or stopped (no status written: killed or crashed). Reads only
small JSON files, with google-cloud-storage for gs:// paths; TensorFlow is not imported.
"""

import os
import sys
import time

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_float("stale_seconds", 600.0, "Heartbeat age after which a lock counts as stale.")
FLAGS = flags.FLAGS


def describe_run(path, stale_seconds=600.0, now=None):
  """A dict describing one run directory."""
  from genscale.progress import format_duration  # pylint: disable=g-import-not-at-top
  from launch import lock as lock_lib  # pylint: disable=g-import-not-at-top
  from launch import storage  # pylint: disable=g-import-not-at-top
  now = now or time.time()
  join = (lambda *p: "/".join([path.rstrip("/"), *p])) if storage.is_gcs(path) else (
      lambda *p: os.path.join(path, *p))
  config = storage.read_json(join("config.json")) or {}
  state = storage.read_json(join("checkpoints", "state.json")) or {}
  holder = storage.read_json(join(lock_lib.LOCK))
  ended = storage.read_json(join("status.json"))
  step = state.get("latest")
  saved = (state.get("saved_at") or {}).get(str(step)) if step is not None else None
  if not state:  # checkpoints written without a state file: go by the files themselves
    files = storage.list_files(join("checkpoints"))
    found = {int(n[len("ckpt-"):-len(".index")]): t for n, t in files.items()
             if n.startswith("ckpt-") and n.endswith(".index") and n[len("ckpt-"):-len(".index")].isdigit()}
    if found:
      step = max(found)
      saved = found[step]
  if holder is not None:
    status = ("stale lock: " if lock_lib.is_stale(holder, stale_seconds, now) else "running: ") + \
        lock_lib.describe(holder, now)
  elif ended is not None:
    status = ended.get("status", "?")
  elif step is not None and config.get("steps") is not None and step >= config["steps"]:
    status = "finished"
  else:
    status = "stopped (killed or crashed)" if step is not None else "not started"
  return {"run": path, "model": (config.get("model") or {}).get("name", "?"), "step": step,
          "steps": config.get("steps"), "saved": saved,
          "saved_ago": format_duration(now - saved) if saved else None, "status": status}


def list_runs(root, stale_seconds=600.0, stream=None):
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  from launch import storage  # pylint: disable=g-import-not-at-top
  stream = stream or sys.stdout
  if not storage.is_gcs(root) and not os.path.exists(root):
    raise UserError(f"{root} does not exist")
  rows = [describe_run(path, stale_seconds) for path in storage.find_runs(root)]
  if not rows:
    stream.write(f"no runs under {root}\n")
    return rows
  for row in rows:
    step = "-" if row["step"] is None else str(row["step"])
    saved = "never" if row["saved"] is None else (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(row["saved"])) + f" ({row['saved_ago']} ago)")
    stream.write(f"{row['run']}  {row['model']}  step {step}/{row['steps']}  last checkpoint {saved}  "
                 f"{row['status']}\n")
  return rows


def main(argv):
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  if len(argv) != 3 or argv[1] != "list":
    raise UserError("usage: python -m launch.runs list DIR_OR_GS_PREFIX")
  list_runs(argv[2], FLAGS.stale_seconds)


def entry_point():
  cli.run(main)


if __name__ == "__main__":
  entry_point()
