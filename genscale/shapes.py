"""Image shapes as users write them."""

from genscale.errors import UserError


def parse_resolution(value):
  """An int ``R`` (square), a string ``"HxW"`` or a pair -> (height, width)."""
  if isinstance(value, (tuple, list)):
    height, width = value
  elif isinstance(value, str) and "x" in value:
    height, width = value.lower().split("x")
  else:
    height = width = value
  try:
    height, width = int(height), int(width)
  except ValueError as e:
    raise UserError(f"--config.resolution={value!r}: use an integer (square) or HxW, e.g. 64x128") from e
  if height < 1 or width < 1:
    raise UserError(f"--config.resolution={value!r} must be positive")
  return height, width
