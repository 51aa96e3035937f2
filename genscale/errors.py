"""The error type for mistakes a user can fix by changing a flag, a config value or a path."""


class UserError(Exception):
  """A problem with the user's input. Its message is one line that says what to change.

  Command-line entry points catch it, print ``genscale: error: <message>`` and exit with status 2, without a
  traceback. Everything else that goes wrong is a bug or an environment problem and keeps its traceback.
  """


def require(condition, message):
  """Raises ``UserError(message)`` unless ``condition`` holds."""
  if not condition:
    raise UserError(message)


def require_choice(value, choices, flag):
  """Raises ``UserError`` naming ``flag`` and the choices unless ``value`` is one of ``choices``."""
  require(value in choices, f"unknown {flag}={value!r}: choose one of {', '.join(choices)}")
