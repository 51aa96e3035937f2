"""launch/colab_tpu.ipynb runs end to end: parameters switched to the CPU and a few steps, workdir on gs://.

The notebook's own cells run unchanged after an injected cell that overrides its parameters (as papermill does):
the install step is skipped (the package under test is already importable), the strategy is the CPU, and the
workdir is a bucket on the local fake GCS server, so the notebook's Cloud Storage path is the one exercised.
"""

import base64
import os
import signal

import nbclient
import nbformat
import pytest

from tests.conftest import ROOT, in_ci
from tests.gcs_rig import GcsRig, RigUnavailable

NOTEBOOK = os.path.join(ROOT, "launch", "colab_tpu.ipynb")
BUCKET = "colab-test"
TEST_PARAMETERS = f"""
MODEL = "dcgan"
VARIANT = "tpu"
WORKDIR = "gs://{BUCKET}/runs/colab"
DATA = "embedded:mnist"
OVERRIDES = ["--config.runtime.strategy=cpu", "--config.runtime.xla=false", "--config.runtime.precision=float32",
             "--config.resolution=32", "--config.channels=1", "--config.batch_size=8", "--config.model.g_width=8",
             "--config.model.d_width=8", "--config.steps=4", "--config.runtime.steps_per_loop=2",
             "--config.log_every=2", "--config.sample_every=4", "--config.checkpoint_every=4",
             "--config.sample_grid=16"]
INSTALL = False
AUTHENTICATE = True
SHOW_TENSORBOARD = True
SAMPLES = 16
"""


def text_of(cell):
  parts = []
  for output in cell.get("outputs", []):
    if "text" in output:
      parts.append(output["text"])
    for kind in ("text/plain", "text/html"):
      if kind in output.get("data", {}):
        parts.append(output["data"][kind])
  return "".join(parts)


def stop_tensorboards(logdir):
  from tensorboard import manager  # pylint: disable=g-import-not-at-top
  for info in manager.get_all():
    if info.logdir == logdir:
      try:
        os.kill(info.pid, signal.SIGTERM)
      except ProcessLookupError:
        pass


def test_the_colab_notebook_trains_shows_tensorboard_and_samples(tmp_path):
  try:
    rig = GcsRig().start()
  except RigUnavailable as e:
    (pytest.fail if in_ci() else pytest.skip)(f"the fake GCS rig could not start here: {e}")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  injected = nbformat.v4.new_code_cell(TEST_PARAMETERS)
  nb.cells.insert(index + 1, injected)
  env = dict(os.environ, **rig.env, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             TENSORBOARD_INFO_DIR=str(tmp_path / "tb-info"))
  logdir = f"gs://{BUCKET}/runs/colab/tensorboard"
  try:
    rig.create_bucket(BUCKET)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": ROOT}})
    client.execute(env=env)
  finally:
    os.environ["TENSORBOARD_INFO_DIR"] = env["TENSORBOARD_INFO_DIR"]
    stop_tensorboards(logdir)
    del os.environ["TENSORBOARD_INFO_DIR"]
    rig.stop()
  texts = [text_of(c) for c in nb.cells]
  everything = "\n".join(texts)
  assert "strategy=cpu replicas=1" in everything  # the connect cell
  assert "done: step 4" in everything  # training ran to the end
  tensorboard_cell = next(t for c, t in zip(nb.cells, texts) if "notebook.start" in c.source)
  assert "iframe" in tensorboard_cell or "localhost" in tensorboard_cell, tensorboard_cell[-500:]
  images = [o["data"]["image/png"] for o in nb.cells[-1].get("outputs", []) if "image/png" in o.get("data", {})]
  assert len(images) == 1 and base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
