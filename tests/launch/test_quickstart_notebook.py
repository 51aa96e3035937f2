"""launch/quickstart.ipynb runs end to end on the CPU: train, show the grid, draw by seed, export and reload.

Its cells run unchanged after an injected cell that overrides the parameters (as papermill does): a tiny DCGAN for 4
steps, a workdir in a temporary directory, no install (the package under test is importable).
"""

import os

import nbclient
import nbformat

from tests.conftest import ROOT

NOTEBOOK = os.path.join(ROOT, "launch", "quickstart.ipynb")


def test_the_quickstart_notebook_trains_samples_and_exports(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  workdir = str(tmp_path / "run")
  nb.cells.insert(index + 1, nbformat.v4.new_code_cell(f"""
MODEL, VARIANT, WORKDIR, INSTALL, SEEDS = "dcgan", "cpu", {workdir!r}, False, "0-3"
OVERRIDES = ["--config.model.g_width=8", "--config.model.d_width=8", "--config.batch_size=8", "--config.steps=4",
             "--config.log_every=2", "--config.sample_every=4", "--config.checkpoint_every=4",
             "--config.sample_grid=16", "--config.runtime.steps_per_loop=2", "--config.histogram_every=0"]
"""))
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
  saved = dict(os.environ)
  os.environ.update(env)
  try:
    client.execute()
  finally:
    os.environ.clear()
    os.environ.update(saved)
  text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
  assert "step 4/4" in text and "wrote 4 samples" in text and "exported dcgan" in text
  images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert len(images) == 3  # the training grid, the seeds' grid, the exported model's image of seed 5
  assert os.path.exists(os.path.join(workdir, "export", "4", "saved_model.pb"))
