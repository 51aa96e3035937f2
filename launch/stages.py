"""A run's stages as the loop sees them: each stage's batch, resolution and phases, and data positions (host).

A model may split a run into stages (``GenerativeModel.stage``), each with its own image resolution and global
batch, e.g. one per resolution of a growing GAN. Everything here is a pure function of the image count, so a
resumed run finds the same stages and reads the same data. The data position is counted in examples: a stage of
batch B starts at step ceil(nimg / B) of its own stream. Most models have one stage.
"""

from genscale.errors import require
import pipelines


class Stages:
  """The stages of ``model`` for a run of ``config`` on ``num_replicas`` replicas.

  Walks the stages from the first at construction, so a stage batch the replicas can't share is refused before
  any compute, and every optimizer can be built for what it updates in any stage (``every_phase``).
  """

  def __init__(self, model, config, num_replicas):
    self.model, self.config, self.num_replicas = model, config, int(num_replicas)
    self._phases = {}
    self._seen = {}  # stage key -> stage
    nimg = 0
    while True:
      stage = self.at(nimg)
      self.phases(stage)
      if stage.end_nimg is None or len(self._phases) > 10_000:
        break
      nimg = int(stage.end_nimg)

  def at(self, nimg):
    """The stage of the step that starts after ``nimg`` images (remembered by key for ``seconds_left``)."""
    stage = self.model.stage(int(nimg))
    self._seen.setdefault(stage.key, stage)
    return stage

  def batch(self, stage):
    """The stage's global batch."""
    return int(stage.global_batch or self.config.batch_size)

  def resolution(self, stage):
    """(height, width) of the stage's images."""
    return pipelines.parse_resolution(stage.resolution or self.config.resolution)

  def phases(self, stage):
    """The model's phases in ``stage`` (asked of the model once per stage)."""
    if stage.key not in self._phases:
      batch = self.batch(stage)
      require(batch % self.num_replicas == 0, f"the batch size {batch} of training stage {stage.name or stage.key} "
              f"is not divisible by {self.num_replicas} replicas; use a multiple of {self.num_replicas}")
      self._phases[stage.key] = self.model.phases(stage)
    return self._phases[stage.key]

  def every_phase(self):
    """The phases of every stage met so far, in order."""
    return [p for phases in self._phases.values() for p in phases]

  def steps_left(self, nimg):
    """Steps until the stage after ``nimg`` images ends (at least 1; a large number when it never ends)."""
    stage = self.at(nimg)
    if stage.end_nimg is None:
      return 2**62
    return max(1, -(-(int(stage.end_nimg) - int(nimg)) // self.batch(stage)))

  def schedule(self, nimg, steps):
    """[(stage, steps in it)]: the next ``steps`` training steps from ``nimg`` images, stage by stage."""
    out, nimg, steps = [], int(nimg), int(steps)
    while steps > 0:
      stage = self.at(nimg)
      count = min(self.steps_left(nimg), steps)
      out.append((stage, count))
      nimg += count * self.batch(stage)
      steps -= count
    return out

  def work(self, stage):
    """Pixels a step of ``stage`` processes (batch x height x width): how its cost scales between stages."""
    height, width = self.resolution(stage)
    return self.batch(stage) * height * width

  def seconds_left(self, nimg, steps, measured):
    """Estimated seconds of the next ``steps`` steps from ``nimg`` images, or None before any measurement.

    ``measured`` maps the keys of stages already timed to their seconds per step, in the order they were timed. A
    timed stage takes its own figure; any other takes the seconds per pixel of the stage timed last times its own
    ``work``: a growing GAN's later resolutions cost more per step than the one running now."""
    if not measured:
      return None
    last_key = list(measured)[-1]
    per_pixel = measured[last_key] / self.work(self._seen[last_key])
    return sum(count * measured.get(stage.key, per_pixel * self.work(stage))
               for stage, count in self.schedule(nimg, steps))

  def position(self, nimg, offset):
    """The data-stream position of the step after ``nimg`` images, in steps of that stage's batch B.

    ceil(nimg / B) + offset: the examples already shown, rounded up to whole batches. With one batch size this is
    the step (plus the offset); when a stage changes the batch, the new stream starts at the first whole batch
    past the examples shown (at most B - 1 examples skipped), and a run resumed inside that stage lands on the
    same position. The offset only moves when a non-finite rollback skips the data of the diverged steps.
    """
    return -(-int(nimg) // self.batch(self.at(nimg))) + int(offset)


def interval_groups(phases):
  """Consecutive phases with the same interval, grouped: [(interval, [phase, ...]), ...]. Each group runs as one
  ``strategy.run``, and a group with an interval above 1 only on steps it divides."""
  groups = []
  for phase in phases:
    if groups and groups[-1][0] == phase.interval:
      groups[-1][1].append(phase)
    else:
      groups.append((phase.interval, [phase]))
  return groups


def unique_variables(variables):
  """``variables`` without repeats, in first-seen order (phases may share variables)."""
  seen, out = set(), []
  for v in variables:
    if id(v) not in seen:
      seen.add(id(v))
      out.append(v)
  return out
