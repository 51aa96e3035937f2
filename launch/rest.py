"""TF Serving's REST request and response format: JSON values to tensors' values and back.

The row form (``{"instances": [{input: value, ...}, ...]}``, answered with ``{"predictions": [...]}``) and the
column form (``{"inputs": {input: [values]}}``, answered with ``{"outputs": ...}``); binary values as
``{"b64": ...}``, and outputs whose names end in ``_bytes`` sent that way. Standard library only: ``launch.serve``
runs without genscale.
"""

import base64
import json


class RequestError(Exception):
  """A request the server refuses: the HTTP status and the message of TF Serving's ``{"error": ...}``."""

  def __init__(self, message, status=400):
    super().__init__(message)
    self.status = status


# ---- converting JSON values to tensors and back, as TF Serving does


def dtype_name(dtype):
  return "DT_" + dtype.name.upper()


def _check_value(value, dtype, where):
  """One JSON scalar as a Python value of ``dtype``; RequestError for a value of the wrong kind."""
  if isinstance(value, dict) and set(value) == {"b64"} and dtype.name == "string":
    try:
      return base64.b64decode(value["b64"], validate=True)
    except ValueError as e:
      raise RequestError(f"{where}: 'b64' is not valid base64 ({e})") from None
  if dtype.is_integer:
    if isinstance(value, bool) or not isinstance(value, int):
      raise RequestError(f"{where}: expected an integer for a {dtype_name(dtype)} input, got {json.dumps(value)}")
    if not dtype.min <= value <= dtype.max:
      raise RequestError(f"{where}: {value} is out of range for {dtype_name(dtype)}")
    return value
  if dtype.is_floating:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise RequestError(f"{where}: expected a number for a {dtype_name(dtype)} input, got {json.dumps(value)}")
    return float(value)
  if dtype.name == "string":
    if not isinstance(value, str):
      raise RequestError(f"{where}: expected a string for a DT_STRING input, got {json.dumps(value)}")
    return value.encode()
  raise RequestError(f"{where}: inputs of type {dtype_name(dtype)} are not supported")


def example(value, spec, where):
  """One example of input ``spec`` (shape [None, ...]) from JSON: nested lists matching spec.shape[1:]."""
  shape = spec.shape.as_list()[1:]

  def walk(v, dims, path):
    if not dims:
      if isinstance(v, list):
        raise RequestError(f"{where}{path}: expected a single value, got a list")
      return _check_value(v, spec.dtype, where + path)
    if not isinstance(v, list) or (dims[0] is not None and len(v) != dims[0]):
      raise RequestError(f"{where}{path}: expected a list of {dims[0]} values (shape {shape}), got "
                         f"{json.dumps(v)[:80]}")
    return [walk(item, dims[1:], f"{path}[{i}]") for i, item in enumerate(v)]

  return walk(value, shape, "")


def check_range(name, values, bounds):
  """RequestError if a value of input ``name`` lies outside its declared {"min", "max"} (the export's metadata)."""
  def flat(v):
    return [x for item in v for x in flat(item)] if isinstance(v, list) else [v]
  lo, hi = bounds.get("min"), bounds.get("max")
  for value in flat(values):
    if (lo is not None and value < lo) or (hi is not None and value > hi):
      allowed = f"{lo} to {hi}" if lo is not None and hi is not None else \
          (f"at least {lo}" if lo is not None else f"at most {hi}")
      raise RequestError(f"input '{name}' = {value} is out of range: this model takes {allowed}")


def parse(body, signatures, max_instances):
  """(signature name, {input: column of examples}, row format?) of a predict request body (a JSON object).

  ``signatures``: {name: {input: TensorSpec}} of the model.
  """
  if not isinstance(body, dict):
    raise RequestError("the request must be a JSON object with \"instances\" or \"inputs\"")
  signature = body.get("signature_name", "serving_default") or "serving_default"
  if not isinstance(signature, str) or signature not in signatures:
    raise RequestError(f"Serving signature name: \"{signature}\" not found in signature def; this model has "
                       f"{', '.join(sorted(signatures))}")
  specs = signatures[signature]
  unknown = sorted(set(body) - {"signature_name", "instances", "inputs"})
  if unknown:
    raise RequestError(f"unknown key(s) {', '.join(unknown)} in the request: use \"instances\" or \"inputs\" "
                       "and optionally \"signature_name\"")
  if ("instances" in body) == ("inputs" in body):
    raise RequestError("Missing 'inputs' or 'instances' key" if "instances" not in body else
                       "Only one of 'instances' or 'inputs' may be given, not both")
  if "instances" in body:
    return signature, _rows(body["instances"], specs, signature, max_instances), True
  return signature, _columns(body["inputs"], specs, signature, max_instances), False


def _rows(rows, specs, signature, max_instances):
  """The row form: a list with one object {input: value} per example (a bare value for a single input)."""
  names = sorted(specs)
  if not isinstance(rows, list) or not rows:
    raise RequestError("'instances' must be a non-empty list, one entry per example")
  if len(rows) > max_instances:
    raise RequestError(f"{len(rows)} instances in one request; this server takes at most {max_instances} "
                       "(--max_instances)")
  columns = {name: [] for name in names}
  for i, row in enumerate(rows):
    if len(names) == 1 and not isinstance(row, dict):
      row = {names[0]: row}
    if not isinstance(row, dict):
      raise RequestError(f"instances[{i}] must be an object with the inputs {', '.join(names)}")
    missing, extra = sorted(set(names) - set(row)), sorted(set(row) - set(names))
    if missing:
      raise RequestError(f"instances[{i}] has no value for input(s) {', '.join(missing)}; signature "
                         f"'{signature}' takes {', '.join(names)}")
    if extra:
      raise RequestError(f"instances[{i}] has unknown input(s) {', '.join(extra)}; signature '{signature}' "
                         f"takes {', '.join(names)}")
    for name in names:
      columns[name].append(example(row[name], specs[name], f"instances[{i}].{name}"))
  return columns


def _columns(inputs, specs, signature, max_instances):
  """The column form: an object {input: [one value per example]} (a bare list for a single input)."""
  names = sorted(specs)
  if len(names) == 1 and not isinstance(inputs, dict):
    inputs = {names[0]: inputs}
  if not isinstance(inputs, dict):
    raise RequestError(f"'inputs' must be an object with the inputs {', '.join(names)}")
  missing, extra = sorted(set(names) - set(inputs)), sorted(set(inputs) - set(names))
  if missing or extra:
    raise RequestError(f"'inputs' must name exactly {', '.join(names)} for signature '{signature}'" +
                       (f"; missing {', '.join(missing)}" if missing else "") +
                       (f"; unknown {', '.join(extra)}" if extra else ""))
  columns, sizes = {}, set()
  for name in names:
    column = inputs[name]
    if not isinstance(column, list) or not column:
      raise RequestError(f"inputs.{name} must be a non-empty list, one value per example")
    columns[name] = [example(v, specs[name], f"inputs.{name}[{i}]") for i, v in enumerate(column)]
    sizes.add(len(column))
  if len(sizes) > 1:
    raise RequestError(f"the inputs have different numbers of examples ({sorted(sizes)}); give each the same")
  if sizes.pop() > max_instances:
    raise RequestError(f"too many examples in one request; this server takes at most {max_instances} "
                       "(--max_instances)")
  return columns


def encode(name, array):
  """An output as JSON values: strings of ``*_bytes`` outputs as {"b64": ...}, as TF Serving does."""
  if array.dtype.kind not in ("S", "O"):
    return array.tolist()

  def one(v):
    return {"b64": base64.b64encode(v).decode()} if name.endswith("_bytes") else v.decode("utf-8", "replace")

  def walk(a):
    return [walk(x) for x in a] if getattr(a, "ndim", 0) else one(a.item() if hasattr(a, "item") else a)

  return walk(array)


def response(outputs, rows):
  """The predict response for ``outputs`` ({name: numpy array with one row per example}): the row form's
  ``{"predictions": [...]}`` (an object per example; bare values for a single output) or the column form's
  ``{"outputs": ...}`` (an object of columns; one bare column for a single output)."""
  encoded = {name: encode(name, value) for name, value in outputs.items()}
  if len(encoded) == 1:
    return {"predictions" if rows else "outputs": next(iter(encoded.values()))}
  if not rows:
    return {"outputs": encoded}
  count = len(next(iter(encoded.values())))
  return {"predictions": [{name: value[i] for name, value in encoded.items()} for i in range(count)]}
