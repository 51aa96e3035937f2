"""Evaluation during training: ``--config.eval_every=N`` scores the generator every N steps (and at the end).

The training loop builds one ``PeriodicEvaluation`` after the model (``from_config`` returns None when
``eval_every`` is 0) and calls it between compiled calls every ``every`` steps and at the end (the loop's
``launch.actions.Evaluate``), after that step's checkpoint. It runs on every worker (generation and feature
extraction are collectives); only the chief prints and writes. Settings come from the config's ``eval_*`` keys (see ``evaluation.evaluator``); the reference statistics
are computed at the first evaluation, or read from ``<workdir>/eval/`` when a resumed run already cached them.

The cost is part of the log: each evaluation prints its seconds and the share of this process's time spent
evaluating so far, and returns them as ``perf/eval_sec`` and ``perf/eval_fraction`` beside the scores.
"""

import time

from evaluation import evaluator as evaluator_lib
from evaluation import likelihood
from genscale.errors import require


def check_config(config):
  """Validates ``eval_every`` and, when evaluation is on, the eval_* settings, before anything is built."""
  every = int(config.get("eval_every") or 0)
  require(every >= 0, f"--config.eval_every={every} must be 0 (off) or a number of steps")
  if every:
    evaluator_lib.EvalSettings.from_config(config)


class PeriodicEvaluation:
  """Runs an ``Evaluator`` at due steps and reports what it cost. Host code.

  Args:
    config: the resolved run config.
    runtime: the run's Runtime.
    model: the GenerativeModel being trained (built under the runtime's strategy).
    info: the DataInfo of the training data.
    workdir: the run directory.
    print_fn: where the result line goes (the monitor's ``print``: chief only).
    clock: seconds, monotonic (tests pass a fake one).
  """

  def __init__(self, config, runtime, model, info, workdir, print_fn=print, clock=time.monotonic):
    self.every = int(config.eval_every)
    self.print = print_fn
    self.clock = clock
    self.evaluator = evaluator_lib.Evaluator(runtime, model, config, info, workdir, progress=runtime.is_chief,
                                             log_warnings=False)
    self._warned = set()
    self.started = clock()
    self.seconds = 0.0  # spent evaluating in this process, reference statistics included
    self.count = 0

  @classmethod
  def from_config(cls, config, runtime, model, info, workdir, print_fn=print):
    """A PeriodicEvaluation, or None when ``config.eval_every`` is 0 or unset."""
    if not int(config.get("eval_every") or 0):
      return None
    return cls(config, runtime, model, info, workdir, print_fn)

  def __call__(self, step):
    """Evaluates the current weights; returns TensorBoard scalars (scores, perf/eval_sec, perf/eval_fraction)."""
    start = self.clock()
    scalars = self.evaluator(step)
    seconds = self.clock() - start
    self.seconds += seconds
    self.count += 1
    elapsed = self.clock() - self.started
    fraction = self.seconds / elapsed if elapsed > 0 else 0.0
    record = self.evaluator.last_record
    scores = " ".join(f"{name}={_format(value, record['metrics'].get(name + '_std'))}"
                      for name, value in record["metrics"].items() if not name.endswith("_std"))
    scored = [f"{record['num']} images, {self.evaluator.extractor.name}"] if record["num"] else []
    if record.get("nll_data"):
      scored.append(f"{record['nll_count']} held-out images, {likelihood.describe(record)}")
    self.print(f"eval step {step}: {scores} ({'; '.join(scored)}) "
               f"in {seconds:.1f}s; evaluation is {100 * fraction:.1f}% of this process's {elapsed:.0f}s")
    for message in self.evaluator.warnings:
      if message not in self._warned:  # once per process: the same warning at every evaluation is noise
        self._warned.add(message)
        self.print(f"eval warning: {message}")
    scalars.update({"perf/eval_sec": seconds, "perf/eval_fraction": fraction})
    return scalars


def _format(value, spread=None):
  return f"{value:.4g}" + ("" if spread is None else f"±{spread:.2g}")
