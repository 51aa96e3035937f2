"""The runtime layer: strategy choice, precision, and the errors for bad runtime settings."""

import keras
import pytest
import tensorflow as tf

from genscale.errors import UserError
from launch import runtime as runtime_lib
from launch.configs import common


@pytest.fixture(autouse=True)
def _reset_keras_policy():
  yield
  keras.mixed_precision.set_global_policy("float32")


def _runtime(**overrides):
  config = common.runtime()
  config.update(overrides)
  return runtime_lib.create(config)


def test_cpu_with_one_replica_is_one_device():
  rt = _runtime(strategy="cpu")
  assert isinstance(rt.strategy, tf.distribute.OneDeviceStrategy)
  assert rt.num_replicas == 1 and rt.is_chief and rt.compute_dtype == tf.float32 and not rt.loss_scaling


def test_cpu_replicas_make_a_mirrored_strategy_over_logical_cpus():
  rt = _runtime(strategy="cpu", cpu_replicas=2)
  assert isinstance(rt.strategy, tf.distribute.MirroredStrategy)
  assert rt.num_replicas == 2
  assert all("CPU" in d for d in rt.devices)


def test_mirrored_without_gpus_uses_logical_cpus():
  assert _runtime(strategy="mirrored", cpu_replicas=2).num_replicas == 2


def test_auto_on_a_cpu_machine_is_cpu():
  assert _runtime(strategy="auto").kind == "cpu"


def test_the_same_settings_reuse_one_strategy():
  assert _runtime(strategy="cpu", cpu_replicas=2).strategy is _runtime(strategy="cpu", cpu_replicas=2).strategy


@pytest.mark.parametrize("precision,dtype,scaling", [
    ("float32", tf.float32, False), ("mixed_float16", tf.float16, True), ("mixed_bfloat16", tf.bfloat16, False)])
def test_precision_sets_compute_dtype_and_keras_policy(precision, dtype, scaling):
  rt = _runtime(strategy="cpu", precision=precision)
  assert rt.compute_dtype == dtype and rt.loss_scaling == scaling
  assert keras.mixed_precision.global_policy().name == precision


@pytest.mark.parametrize("kind,gpus,bf16,expected", [
    ("tpu", [], False, "mixed_bfloat16"),
    ("mirrored", [(8, 0), (8, 0)], False, "mixed_float16"),  # tensor cores
    ("mirrored", [(8, 0), (6, 1)], True, "float32"),  # one GPU without tensor cores decides for the replicas
    ("cpu", [], True, "mixed_bfloat16"),
    ("cpu", [], False, "float32"),
    ("multiworker", [], True, "mixed_bfloat16")])
def test_auto_precision_picks_by_device(kind, gpus, bf16, expected):
  assert runtime_lib.auto_precision(kind, gpu_capabilities=gpus, native_bfloat16=bf16) == expected


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path):
  for flags, expected in (("fpu sse avx2 avx512f", False), ("avx512f avx512_bf16", True), ("amx_bf16 amx_tile", True)):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n")
    assert runtime_lib.cpu_has_native_bfloat16(str(info)) == expected
  assert not runtime_lib.cpu_has_native_bfloat16(str(tmp_path / "missing"))


def test_auto_precision_on_this_machine_is_named_in_the_description():
  rt = _runtime(strategy="cpu", precision="auto")
  expected = "mixed_bfloat16" if runtime_lib.cpu_has_native_bfloat16() else "float32"
  assert rt.precision == expected and rt.compute_dtype == runtime_lib.PRECISIONS[expected]
  assert f"precision={expected} (auto)" in rt.describe()
  assert keras.mixed_precision.global_policy().name == expected


def test_xla_flag_compiles_with_jit():
  rt = _runtime(strategy="cpu", xla=True)
  fn = rt.compile(lambda x: x * 2.0)
  assert float(fn(tf.constant(2.0))) == 4.0
  assert fn._jit_compile  # pylint: disable=protected-access


@pytest.mark.parametrize("overrides,message", [
    ({"strategy": "gpu"}, "unknown --config.runtime.strategy='gpu'"),
    ({"precision": "float16"}, "unknown --config.runtime.precision='float16'"),
    ({"cpu_replicas": 0}, "cpu_replicas=0 must be at least 1"),
    ({"steps_per_loop": 0}, "steps_per_loop=0"),
    ({"all_reduce": "magic"}, "all_reduce"),
])
def test_bad_runtime_settings_are_refused(overrides, message):
  config = common.runtime()
  config.update(overrides)
  with pytest.raises(UserError, match=message.replace("(", r"\(")):
    runtime_lib.validate(config)


def test_more_cpu_replicas_than_the_started_runtime_has_is_refused():
  with pytest.raises(UserError, match="cpu_replicas=3 but TensorFlow already started with 2"):
    _runtime(strategy="cpu", cpu_replicas=3)


def test_multiworker_without_tf_config_is_refused(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(UserError, match="needs the TF_CONFIG"):
    _runtime(strategy="multiworker")


def test_worker_index_of_a_single_process_strategy():
  assert runtime_lib.worker_of(tf.distribute.OneDeviceStrategy("/cpu:0")) == (0, 1)
