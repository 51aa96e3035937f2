"""Every script in benchmarks/ runs once, on a tiny setting, and prints its command and its table: none can rot.

The figures themselves are not checked (they belong in docs/benchmarks.md, measured on an idle machine).
"""

import pytest

from benchmarks import peak
from tests.conftest import run_module

TINY_DCGAN = ["--config.model.g_width=8", "--config.model.d_width=8", "--config.model.latent_dim=16",
              "--config.batch_size=8"]
RUNS = {
    "checkpoint_stall": ["--widths=8", "--saves=1", *TINY_DCGAN],
    "input_pipeline": ["--count=64", "--batches=1", "--repeats=1", "--train_steps=2", "--resolutions=32"],
    "modconv": ["--batch=4", "--layers=8:8:8:same", "--cases=scaled:false:fwd", "--calls=1", "--repeats=1",
                "--compile_limit=120"],
    "sampling_speed": ["--config=launch/configs/edm.py:cpu", "--config.model.channels=8", "--samplers=ddim:2",
                       "--batch=4", "--repeats=1"],
    "summary_cost": [*TINY_DCGAN, "--config.sample_grid=4", "--steps=1", "--repeats=1"],
    "train_throughput": [*TINY_DCGAN, "--settings=float32:false", "--steps=1", "--repeats=1", "--peak_size=128"],
}


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.xdist_group(f"bench-{s}")) for s in RUNS])
def test_the_benchmark_runs_on_a_tiny_setting(script):
  result = run_module(f"benchmarks.{script}", *RUNS[script])
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  assert f"command: python -m benchmarks.{script}" in result.stdout
  rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
  assert len(rows) >= 3, result.stdout[-2000:]  # a header, its rule, and at least one measured row


def test_the_matmul_peak_is_a_positive_rate():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  assert peak.matmul_peak(tf.float32, 64, repeats=1) > 0
