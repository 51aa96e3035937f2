"""The outer training loop: compiled calls of the trainer, host actions in between (TF Model Garden Orbit's shape).

Each call is as long as it can be: up to ``steps_per_loop`` steps, never past the end of the current stage, the
run's last step, or the next step at which an action is due; its last step measures what the due actions need.
"""

from launch import actions as actions_lib


class Controller:
  """Drives ``trainer.run(n)`` to ``total_steps`` and hands every result to ``actions`` in order.

  Args:
    trainer: a launch.trainer.Trainer (restored, if the run resumes).
    actions: launch.actions.Action objects, in the order they see each call's result.
    total_steps: the run's last step.
    steps_per_loop: the longest compiled call.
  """

  def __init__(self, trainer, actions, total_steps, steps_per_loop):
    self.trainer, self.actions = trainer, list(actions)
    self.total, self.steps_per_loop = int(total_steps), int(steps_per_loop)

  def call_length(self, step):
    """Steps in the next call, from ``step``: up to the first boundary an action, the stage or the run sets."""
    wanted = [a.next_step(step) for a in self.actions]
    end = min([self.total] + [s for s in wanted if s is not None])
    return min(self.steps_per_loop, end - step, self.trainer.steps_left_in_stage())

  def measurements(self, end):
    """What a call that ends at step ``end`` must measure for the actions due then."""
    return {m for a in self.actions if a.due(end) for m in a.measure}

  def run(self):
    """Trains to the last step; returns the last call's result (None when there was nothing to do)."""
    step = int(self.trainer.step.numpy())
    for action in self.actions:
      action.begin(step)
    result = None
    while step < self.total:
      num = self.call_length(step)
      result = self.trainer.run(num, measure=self.measurements(step + num))
      for action in self.actions:
        if action(result) == actions_lib.DISCARD:
          break
      step = int(self.trainer.step.numpy())
    return result
