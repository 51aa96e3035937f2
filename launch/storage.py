"""Run directories on a local disk or in Google Cloud Storage, for the host-side tools.

TensorFlow reads and writes ``gs://`` itself (checkpoints, events, samples). What it can't do, this module does
with ``google-cloud-storage``: check that a bucket exists and is writable before any compute is spent, create an
object only if it doesn't exist (the workdir lock), and list runs without importing TensorFlow. The client honours
``STORAGE_EMULATOR_HOST`` (a local fake server, as the tests use). Local paths use the standard library.
"""

import json
import os
import uuid

from genscale.errors import UserError
from genscale.gcs import _CLIENT, blob, client, is_gcs, split_gcs  # pylint: disable=unused-import


def preflight(workdir):
  """Checks that ``workdir`` can be written, before anything else runs. Raises UserError."""
  if not is_gcs(workdir):
    try:
      os.makedirs(workdir, exist_ok=True)
      probe = os.path.join(workdir, f".genscale-probe-{uuid.uuid4().hex[:8]}")
      with open(probe, "w") as f:
        f.write("ok")
      os.remove(probe)
    except OSError as e:
      raise UserError(f"can't write to --workdir {workdir}: {e.strerror or e}") from e
    return
  from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
  bucket_name, prefix = split_gcs(workdir)
  try:
    bucket = client().lookup_bucket(bucket_name)
  except exceptions.GoogleAPIError as e:
    raise UserError(f"can't reach gs://{bucket_name} for --workdir {workdir}: {_reason(e)}") from e
  if bucket is None:
    raise UserError(f"bucket gs://{bucket_name} of --workdir {workdir} does not exist or is not visible to these "
                    "credentials; create it (gcloud storage buckets create gs://NAME) or fix the path")
  probe = bucket.blob(f"{prefix}/.genscale-probe-{uuid.uuid4().hex[:8]}".lstrip("/"))
  try:
    probe.upload_from_string(b"ok")
    probe.delete()
  except exceptions.GoogleAPIError as e:
    raise UserError(f"can't write to --workdir {workdir}: {_reason(e)}") from e


def _reason(error):
  return str(getattr(error, "message", None) or error).splitlines()[0]


def read_json(path):
  """The JSON object at a local or gs:// path, or None when it doesn't exist."""
  if is_gcs(path):
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    try:
      return json.loads(blob(path).download_as_bytes())
    except exceptions.NotFound:
      return None
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_json(path, value):
  """Writes a JSON object atomically (an object upload on GCS; write-then-rename locally)."""
  data = json.dumps(value, indent=2, sort_keys=True)
  if is_gcs(path):
    blob(path).upload_from_string(data, content_type="application/json")
    return
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  temp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
  with open(temp, "w") as f:
    f.write(data)
  os.replace(temp, path)


def find_runs(root):
  """Run directories (those holding config.json) at or under ``root``, sorted."""
  if is_gcs(root):
    bucket, prefix = split_gcs(root)
    names = [b.name for b in client().list_blobs(bucket, prefix=prefix + "/" if prefix else None)]
    runs = [f"gs://{bucket}/{n[:-len('/config.json')]}" for n in names if n.endswith("/config.json")]
    if f"{prefix}/config.json" in names or (not prefix and "config.json" in names):
      runs.append(root.rstrip("/"))
    return sorted(set(runs))
  runs = []
  for directory, subdirs, files in os.walk(root):
    if "config.json" in files:
      runs.append(directory)
      subdirs[:] = []  # a run's own folders hold no other runs
  return sorted(runs)


def list_files(directory):
  """{name: modification time} of the files directly in a local or gs:// directory ({} when it is missing)."""
  if is_gcs(directory):
    bucket, prefix = split_gcs(directory)
    out = {}
    for item in client().list_blobs(bucket, prefix=prefix + "/", delimiter="/"):
      out[item.name[len(prefix) + 1:]] = item.updated.timestamp() if item.updated else None
    return out
  if not os.path.isdir(directory):
    return {}
  return {n: os.path.getmtime(os.path.join(directory, n)) for n in os.listdir(directory)
          if os.path.isfile(os.path.join(directory, n))}
