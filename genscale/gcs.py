"""Google Cloud Storage paths and the one client of a process, for the code that TensorFlow's gs:// support doesn't
cover (preconditions, listing without TensorFlow). Honours ``STORAGE_EMULATOR_HOST`` (a local fake server, as the
tests use). Shared by ``launch/storage.py`` and ``evaluation`` (which doesn't import the launch package)."""

import os
import random
import time

from genscale.errors import UserError


def is_gcs(path):
  return str(path).startswith("gs://")


def split_gcs(path):
  """gs://bucket/a/b -> ("bucket", "a/b")."""
  rest = str(path)[len("gs://"):]
  bucket, _, prefix = rest.partition("/")
  return bucket, prefix.strip("/")


_CLIENT = []


def client():
  """A google-cloud-storage client; anonymous when talking to an emulator."""
  if not _CLIENT:
    from google.cloud import storage  # pylint: disable=g-import-not-at-top
    if os.environ.get("STORAGE_EMULATOR_HOST"):
      from google.auth.credentials import AnonymousCredentials  # pylint: disable=g-import-not-at-top
      _CLIENT.append(storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator"),
                                    credentials=AnonymousCredentials()))
    else:
      import google.auth  # pylint: disable=g-import-not-at-top
      from google.auth import exceptions as auth_exceptions  # pylint: disable=g-import-not-at-top
      try:
        credentials, project = google.auth.default()
      except auth_exceptions.DefaultCredentialsError:
        raise UserError("no Google Cloud credentials for gs:// paths: run gcloud auth application-default login "
                        "(on Colab: from google.colab import auth; auth.authenticate_user()), or point "
                        "GOOGLE_APPLICATION_CREDENTIALS at a service-account key") from None
      # Bucket and object calls name their bucket; only listing or creating buckets needs a project, and user
      # credentials often carry none (Colab after authenticate_user): don't require one.
      project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "no-project-needed"
      _CLIENT.append(storage.Client(project=project, credentials=credentials))
  return _CLIENT[0]


def blob(path):
  bucket, name = split_gcs(path)
  return client().bucket(bucket).blob(name)


def append_line(path, line, attempts=100):
  """Appends ``line`` to the object ``path`` without losing a concurrent writer's line: the read and rewrite is
  conditional on the object's generation, and repeated when another writer came between (GCS can't append)."""
  from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
  for _ in range(attempts):
    target = blob(path)  # a fresh handle: one that has read a generation reloads that generation, not the newest
    try:
      target.reload()
      generation, old = target.generation, target.download_as_bytes(if_generation_match=target.generation)
    except exceptions.NotFound:
      generation, old = 0, b""  # 0: the upload succeeds only if the object still doesn't exist
    if old and not old.endswith(b"\n"):
      old += b"\n"
    try:
      target.upload_from_string(old + line.encode(), if_generation_match=generation)
      return
    except exceptions.PreconditionFailed:
      time.sleep(random.uniform(0.0, 0.05))  # another writer won this round; let the others spread out
      continue
  raise UserError(f"could not append to {path}: {attempts} other writers came in between; try again")
