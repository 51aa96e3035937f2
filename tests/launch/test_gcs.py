"""The whole run on gs:// against a local fake GCS server (tests/gcs_rig.py): data and workdir on gs://, train,
stop, resume, list, sample, evaluate; the preflight; the lock."""

import json
import os
import subprocess
import sys
import time

import pytest

from genscale.errors import UserError
from launch import lock as lock_lib
from launch import storage
from tests.conftest import ROOT, error_lines, in_ci, run_module
from tests.gcs_rig import GcsRig, RigUnavailable

TINY = ["--config=launch/configs/dcgan.py:cpu", "--config.model.g_width=8", "--config.model.d_width=8",
        "--config.model.latent_dim=16", "--config.batch_size=16", "--config.sample_grid=4",
        "--config.runtime.steps_per_loop=1", "--config.histogram_every=0"]
BUCKET = "genscale-test-runs"


@pytest.fixture(scope="module")
def rig():
  try:
    server = GcsRig().start()
  except RigUnavailable as e:
    (pytest.fail if in_ci() else pytest.skip)(f"the fake GCS rig could not start here: {e}")
  server.create_bucket(BUCKET)
  saved = {k: os.environ.get(k) for k in server.env}
  os.environ.update({k: v for k, v in server.env.items() if k in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")})
  storage._CLIENT.clear()  # pylint: disable=protected-access
  yield server
  storage._CLIENT.clear()  # pylint: disable=protected-access
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  server.stop()


def _names(prefix):
  return sorted(b.name for b in storage.client().list_blobs(BUCKET, prefix=prefix))


def _upload_digits(prefix, tmp_path):
  """The embedded test digits as prepared TFRecords (two shards), written locally and copied to gs://BUCKET/."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pipelines import embedded, records  # pylint: disable=g-import-not-at-top
  images, labels = embedded.load("test")
  local = tmp_path / "records"
  local.mkdir()
  shards = [records.shard_name(i, 2) for i in range(2)]
  for i, name in enumerate(shards):
    with tf.io.TFRecordWriter(str(local / name)) as writer:
      for image, label in zip(images[i::2], labels[i::2]):
        writer.write(records.serialize(image, label))
  records.write_metadata(str(local), {
      "count": len(images), "resolution": list(images.shape[1:3]), "channels": int(images.shape[3]),
      "label_names": list(embedded.LABEL_NAMES),
      "shards": [{"file": name, "count": len(images[i::2])} for i, name in enumerate(shards)]})
  bucket = storage.client().bucket(BUCKET)
  for name in sorted(os.listdir(local)):
    bucket.blob(f"{prefix}/{name}").upload_from_filename(str(local / name))
  return f"gs://{BUCKET}/{prefix}"


def test_a_whole_run_on_gcs_data_and_workdir(rig, tmp_path):
  """One sequence through the proxy: train on tfrecord:gs:// data into a gs:// workdir, SIGTERM after the first
  checkpoint (saved, exit 75), resume, list the runs, sample into the bucket, evaluate the run."""
  data = _upload_digits("data/digits", tmp_path)
  workdir = f"gs://{BUCKET}/runs/dcgan"
  args = [*TINY, f"--config.data=tfrecord:{data}", f"--workdir={workdir}", "--config.checkpoint_every=3",
          "--config.log_every=3", "--config.sample_every=6"]
  env = dict(os.environ, PYTHONPATH=ROOT, **rig.env)
  process = subprocess.Popen([sys.executable, "-m", "launch.train", *args, "--config.steps=100000"], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while "runs/dcgan/checkpoints/state.json" not in _names("runs/dcgan/"):
    assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
    time.sleep(0.5)
  process.terminate()
  _, err = process.communicate(timeout=180)
  assert process.returncode == 75, err[-2000:]
  status = storage.read_json(f"{workdir}/status.json")
  assert status["status"] == "preempted" and status["step"] >= 3
  names = _names("runs/dcgan/")
  assert "runs/dcgan/config.json" in names and "runs/dcgan/lock.json" not in names
  assert any(n.startswith("runs/dcgan/tensorboard/events.out.tfevents") for n in names)
  assert f"runs/dcgan/checkpoints/ckpt-{status['step']}.index" in names and "runs/dcgan/samples/reals.png" in names
  total = status["step"] + 3
  second = run_module("launch.train", *args, f"--config.steps={total}", env=rig.env)
  assert second.returncode == 0, second.stderr[-3000:]
  assert f"resuming at step {status['step']}" in second.stdout and f"step {total}/{total}" in second.stdout
  assert storage.read_json(f"{workdir}/checkpoints/state.json")["latest"] == total
  listed = run_module("launch.runs", "list", f"gs://{BUCKET}/runs", env=rig.env)
  assert listed.returncode == 0, listed.stderr[-2000:]
  assert f"{workdir}  dcgan  step {total}/{total}  last checkpoint" in listed.stdout and "finished" in listed.stdout
  sample = run_module("launch.sample", f"--workdir={workdir}", "--num=4", f"--out={workdir}/grid.png", env=rig.env)
  assert sample.returncode == 0, sample.stderr[-2000:]
  assert "runs/dcgan/grid.png" in _names("runs/dcgan/")
  scored = run_module("launch.evaluate", f"--workdir={workdir}", "--metrics=fid", "--num=32", "--reference_num=64",
                      "--batch_size=16", env=rig.env)
  assert scored.returncode == 0, scored.stderr[-2000:]
  assert f"ckpt-{total} (step {total})" in scored.stdout and "fid" in scored.stdout
  names = _names("runs/dcgan/")
  assert "runs/dcgan/metrics.jsonl" in names and any(n.startswith("runs/dcgan/eval/reference-") for n in names)


def test_preflight_refuses_a_missing_bucket_before_training(rig):
  result = run_module("launch.train", *TINY, "--workdir=gs://no-such-bucket/run", "--config.steps=2", env=rig.env)
  assert result.returncode == 2
  assert error_lines(result.stderr) == [
      "genscale: error: bucket gs://no-such-bucket of --workdir gs://no-such-bucket/run does not exist or is not "
      "visible to these credentials; create it (gcloud storage buckets create gs://NAME) or fix the path"]
  assert "genscale: dcgan on" not in result.stdout


def test_gcs_lock_uses_a_generation_precondition(rig):
  workdir = f"gs://{BUCKET}/runs/locked"
  with lock_lib.WorkdirLock(workdir, heartbeat_seconds=0.2) as held:
    holder = storage.read_json(f"{workdir}/lock.json")
    assert holder["pid"] == os.getpid()
    with pytest.raises(UserError, match="is in use by host"):
      lock_lib.WorkdirLock(workdir).acquire()
    time.sleep(1.0)
    assert storage.read_json(f"{workdir}/lock.json")["heartbeat"] > holder["heartbeat"]  # refreshed in place
    refused = run_module("launch.train", *TINY, f"--workdir={workdir}", "--config.steps=2", env=rig.env)
    assert refused.returncode == 2 and f"pid {os.getpid()}" in refused.stderr
    del held
  assert storage.read_json(f"{workdir}/lock.json") is None
  stale = json.dumps({"host": "gone-vm", "pid": 7, "started": 0, "heartbeat": time.time() - 7200})
  storage.blob(f"{workdir}/lock.json").upload_from_string(stale)
  with pytest.raises(UserError, match="stale lock from host gone-vm pid 7"):
    lock_lib.WorkdirLock(workdir).acquire()
  with lock_lib.WorkdirLock(workdir, break_stale=True):
    assert storage.read_json(f"{workdir}/lock.json")["pid"] == os.getpid()


def test_racing_creators_on_gcs_one_wins(rig):
  """Creating the lock is one upload with the precondition "no object yet" (if_generation_match=0): of creators
  that race, at the same moment, exactly one gets the lock, every round."""
  import threading  # pylint: disable=g-import-not-at-top
  workdir = f"gs://{BUCKET}/runs/race"
  for _ in range(3):
    contenders = [lock_lib.WorkdirLock(workdir) for _ in range(6)]
    barrier = threading.Barrier(len(contenders))
    won = []

    def create(lock):
      barrier.wait()
      won.append(lock._create())  # pylint: disable=protected-access

    threads = [threading.Thread(target=create, args=(lock,)) for lock in contenders]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join(timeout=60)
    assert sorted(won) == [False] * 5 + [True], won
    storage.blob(f"{workdir}/lock.json").delete()


@pytest.fixture
def no_emulator(monkeypatch):
  """The real client path (no STORAGE_EMULATOR_HOST), with the cached client cleared before and after."""
  monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
  monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
  from genscale import gcs  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(gcs, "_CLIENT", [])


def test_missing_credentials_are_one_line_that_says_how_to_log_in(no_emulator, monkeypatch):
  import google.auth  # pylint: disable=g-import-not-at-top
  from google.auth import exceptions  # pylint: disable=g-import-not-at-top

  def no_credentials(*args, **kwargs):
    raise exceptions.DefaultCredentialsError("Your default credentials were not found.")

  monkeypatch.setattr(google.auth, "default", no_credentials)
  with pytest.raises(UserError, match="no Google Cloud credentials for gs:// paths: run gcloud auth "
                                      "application-default login .*authenticate_user"):
    storage.preflight("gs://some-bucket/run")


def test_credentials_without_a_project_still_make_a_client(no_emulator, monkeypatch):
  """User credentials on Colab carry no project; bucket and object calls don't need one."""
  import google.auth  # pylint: disable=g-import-not-at-top
  from google.auth.credentials import AnonymousCredentials  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(google.auth, "default", lambda *args, **kwargs: (AnonymousCredentials(), None))
  client = storage.client()
  assert client.project == "no-project-needed"
  assert isinstance(client._credentials, AnonymousCredentials)  # pylint: disable=protected-access


def test_the_workdir_is_checked_before_the_data_and_the_runtime(monkeypatch, tiny_dcgan):
  """A bad gs:// workdir must fail before the data source opens and the runtime starts (TPU initialisation and
  worker rendezvous take minutes)."""
  from launch import loop  # pylint: disable=g-import-not-at-top
  built = []

  def refuse(workdir):
    raise UserError(f"checked {workdir}")

  monkeypatch.setattr(storage, "preflight", refuse)
  monkeypatch.setattr(loop.pipelines, "open_source", lambda *args, **kwargs: built.append("data"))
  monkeypatch.setattr(loop.runtime_lib, "create", lambda *args, **kwargs: built.append("runtime"))
  with pytest.raises(UserError, match="checked gs://bucket/run"):
    loop.train(tiny_dcgan, "gs://bucket/run")
  assert not built


@pytest.mark.parametrize("tf_config, chief", [
    (None, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True),
])
def test_the_chief_is_known_from_tf_config_before_any_strategy(monkeypatch, tf_config, chief):
  from launch import runtime as runtime_lib  # pylint: disable=g-import-not-at-top
  if tf_config is None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
  else:
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
  assert runtime_lib.chief_task() is chief


def test_concurrent_appends_to_a_gcs_metrics_file_lose_no_line(rig):
  """GCS objects can't be appended to: each append rewrites the object conditional on its generation."""
  from evaluation.evaluator import append_jsonl  # pylint: disable=g-import-not-at-top
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  path = f"gs://{BUCKET}/appends/metrics.jsonl"
  with concurrent.futures.ThreadPoolExecutor(6) as pool:
    list(pool.map(lambda i: append_jsonl(path, {"writer": i % 6, "n": i}), range(30)))
  lines = storage.blob(path).download_as_bytes().decode().splitlines()
  assert sorted(json.loads(line)["n"] for line in lines) == list(range(30))
