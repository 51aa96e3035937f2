"""Trains the same short runs on another commit and on this tree, and compares every checkpointed value bitwise.

  python -m tests.bitwise_compare --base=1693465
  python -m tests.bitwise_compare --base=1693465 --cases=dcgan,pggan --keep=/tmp/compare

A refactoring that must not change what is learned (the loop split into trainer, controller and actions) is
checked with it: for each case, ``launch.train`` runs once in a checkout of ``--base`` (``git worktree``) and once in
this tree, each in a fresh process on one CPU device, and every variable of the final checkpoints (model,
optimizer slots, counters) must be equal bit for bit; so must the EMA sample grids the runs wrote. The logged
TensorBoard scalars (losses, model state, not timings) are compared too, to 1e-6 relative, and their differences
listed; they fail the comparison only with --strict_scalars (a change of what a log line averages over, such as
counting the first compiled call's steps, changes them without changing what is learned).

Cases (each crosses what a change of the loop could break):
  dcgan       the default cpu config, 60 steps: 10 steps per compiled call, a checkpoint and samples at the end.
  pggan       the cpu config with 0.2-kimg stable and fade phases, 40 steps: 4x4, the 8x8 fade, 8x8, the 16x16
              fade (stages with their own traces and inputs; Adam restarts; lod in update_state).
  stylegan2   the cpu config at tiny widths, 9 steps with lazy R1 every 4 and path length every 2 steps, ADA
              every 2 steps (phases with intervals, update_state between phases).
  edm         the class-conditional cpu config at tiny widths, 12 steps, 3 steps per call.
Exit status 0 when every case matches, 1 otherwise.
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = {
    "dcgan": ["--config=launch/configs/dcgan.py:cpu", "--config.steps=60"],
    "pggan": ["--config=launch/configs/pggan.py:cpu", "--config.steps=40", "--config.model.stable_kimg=0.2",
              "--config.model.fade_kimg=0.2", "--config.log_every=5", "--config.sample_every=20",
              "--config.checkpoint_every=20"],
    "stylegan2": ["--config=launch/configs/stylegan2.py:cpu", "--config.steps=9", "--config.model.channel_base=256",
                  "--config.model.channel_max=16", "--config.model.mapping_layers=2", "--config.model.r1_interval=4",
                  "--config.model.pl_interval=2", "--config.model.ada_interval=2", "--config.batch_size=8",
                  "--config.log_every=3", "--config.sample_every=9", "--config.checkpoint_every=9",
                  "--config.sample_grid=16", "--config.runtime.steps_per_loop=3"],
    "edm": ["--config=launch/configs/edm.py:cpu", "--config.steps=12", "--config.model.channels=8",
            "--config.model.channel_mults=1,1,2", "--config.batch_size=16", "--config.log_every=4",
            "--config.sample_every=12", "--config.checkpoint_every=12", "--config.sample_grid=16",
            "--config.model.sample_steps=4", "--config.runtime.steps_per_loop=3"],
}


def train(tree, case, workdir):
  """Runs ``launch.train`` from ``tree`` (its own modules first on the path) into ``workdir``."""
  env = dict(os.environ, PYTHONPATH=tree, CUDA_VISIBLE_DEVICES="", GENSCALE_VERBOSE="")
  env.pop("TF_CONFIG", None)
  command = [sys.executable, "-m", "launch.train", *CASES[case], f"--workdir={workdir}",
             "--config.runtime.strategy=cpu", "--config.runtime.cpu_replicas=1"]
  result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    raise SystemExit(f"{case} in {tree} failed (status {result.returncode}):\n{result.stderr[-3000:]}")


def checkpoint_values(workdir):
  """{name: numpy value} of every variable in the run's newest checkpoint."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  index = sorted(glob.glob(os.path.join(workdir, "checkpoints", "ckpt-*.index")),
                 key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0]))[-1]
  path = index[:-len(".index")]
  reader = tf.train.load_checkpoint(path)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}, os.path.basename(path)


def scalars(workdir):
  """{(tag, step): value} of the TensorBoard scalars that don't measure time."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {}
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith(("perf/", "eval/")) or value.metadata.plugin_data.plugin_name != "scalars":
          continue
        out[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  return out


def compare(case, base_dir, head_dir, strict_scalars=False):
  """Returns a list of differences that fail the comparison (empty when the runs match); prints the others."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel("ERROR")
  problems, notes = [], []
  base, base_name = checkpoint_values(base_dir)
  head, head_name = checkpoint_values(head_dir)
  if base_name != head_name:
    problems.append(f"newest checkpoint {base_name} on the base, {head_name} here")
  for name in sorted(set(base) | set(head)):
    if name not in base or name not in head:
      problems.append(f"{name} only {'here' if name in head else 'on the base'}")
      continue
    a, b = np.asarray(base[name]), np.asarray(head[name])
    if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
      diff = np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))) if a.shape == b.shape and a.dtype.kind in "fi" else "?"
      problems.append(f"{name}: differs (max |diff| {diff})")
  for path in sorted(glob.glob(os.path.join(base_dir, "samples", "ema_*.png"))):
    other = os.path.join(head_dir, "samples", os.path.basename(path))
    if not os.path.exists(other):
      problems.append(f"samples/{os.path.basename(path)} missing here")
    elif open(path, "rb").read() != open(other, "rb").read():
      problems.append(f"samples/{os.path.basename(path)} differs")
  base_scalars, head_scalars = scalars(base_dir), scalars(head_dir)
  for key in sorted(set(base_scalars) | set(head_scalars)):
    if key not in head_scalars or key not in base_scalars:
      notes.append(f"scalar {key[0]} at step {key[1]} only {'here' if key in head_scalars else 'on the base'}")
    elif not np.isclose(base_scalars[key], head_scalars[key], rtol=1e-6, atol=1e-9):
      notes.append(f"scalar {key[0]} at step {key[1]}: {base_scalars[key]:.6g} on the base, "
                   f"{head_scalars[key]:.6g} here")
  if strict_scalars:
    problems, notes = problems + notes, []
  grids = len(glob.glob(os.path.join(head_dir, 'samples', 'ema_*.png')))
  print(f"{case}: {len(base)} checkpoint values ({head_name}) and {grids} EMA grids: "
        + ("bitwise equal" if not problems else f"{len(problems)} differences")
        + f"; {len(head_scalars) - len(notes)} of {len(head_scalars)} logged scalars equal", flush=True)
  for line in notes[:20]:
    print("  (logged) " + line)
  return problems


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--base", required=True, help="commit to compare with (e.g. the one before a refactoring)")
  parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
  parser.add_argument("--keep", default=None, help="directory for the checkout and the runs (default: temporary); "
                      "runs already in it are reused: delete the *-head directories to retrain this tree")
  parser.add_argument("--strict_scalars", action="store_true", help="fail on differences of logged scalars too")
  args = parser.parse_args()
  cases = [c for c in args.cases.split(",") if c]
  unknown = [c for c in cases if c not in CASES]
  if unknown:
    raise SystemExit(f"unknown --cases {', '.join(unknown)}: choose from {', '.join(CASES)}")
  scratch = args.keep or tempfile.mkdtemp(prefix="genscale-compare-")
  os.makedirs(scratch, exist_ok=True)
  base_tree = os.path.join(scratch, "base-tree")
  if not os.path.isdir(base_tree):
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", base_tree, args.base], check=True,
                   capture_output=True)
  failures = 0
  try:
    for case in cases:
      runs = {}
      for label, tree in (("base", base_tree), ("head", ROOT)):
        runs[label] = os.path.join(scratch, f"{case}-{label}")
        if not os.path.exists(os.path.join(runs[label], "status.json")):
          print(f"{case}: training on the {label} tree ...", flush=True)
          train(tree, case, runs[label])
      problems = compare(case, runs["base"], runs["head"], args.strict_scalars)
      for line in problems[:20]:
        print("  " + line)
      failures += bool(problems)
  finally:
    if not args.keep:
      subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", base_tree], check=False,
                     capture_output=True)
  print("all cases bitwise equal" if not failures else f"{failures} of {len(cases)} cases differ")
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
