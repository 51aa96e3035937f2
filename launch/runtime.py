"""The one place that knows about hardware: distribution strategy, precision policy and XLA.

Everything the rest of the project needs from the machine is on the ``Runtime`` this module returns. Models receive
only a compute dtype; pipelines receive only the strategy's input contexts; the training loop asks the runtime to
compile functions. Nothing else creates a strategy or sets a precision policy.

Strategies (``runtime.strategy``):
  auto         a TPU if one is attached, else every visible GPU (Mirrored), else one CPU device.
  cpu          CPU only; ``runtime.cpu_replicas=N`` splits the CPU into N logical devices under MirroredStrategy,
               so multi-replica code paths run and are tested on a laptop.
  mirrored     every visible GPU, or the logical CPUs when there is no GPU.
  multiworker  MultiWorkerMirroredStrategy from the TF_CONFIG environment variable.
  tpu          TPUStrategy; ``runtime.tpu=local`` on Colab and TPU VMs, or a TPU name / grpc address.

Precision (``runtime.precision``): float32, mixed_float16 (with dynamic loss scaling) or mixed_bfloat16. Variables
are always float32; models cast to the compute dtype and keep sensitive maths in float32. ``auto`` picks by device
(``auto_precision``): mixed_bfloat16 on a TPU and on CPUs with native bfloat16 (AVX512_BF16 or AMX), mixed_float16 on
GPUs with tensor cores (compute capability 7.0 or later), float32 otherwise; the runtime's description names the
choice.

XLA (``runtime.xla``): the per-replica forward and backward pass (losses and gradients) is compiled. Optimizer
updates and variable assignments stay outside the compiled region, because XLA can't reach variables placed on
other devices under MirroredStrategy. On a TPU the whole step is compiled anyway. ``runtime.xla_whole_step`` (with
one device per worker) compiles each step's whole device work, optimizer updates, model state and EMA included,
as one XLA computation, as a TPU does; only reading the next batch stays outside.
"""

import dataclasses
import json
import os

from absl import logging
import tensorflow as tf

from genscale.errors import UserError, require

STRATEGIES = ("auto", "cpu", "mirrored", "multiworker", "tpu")
PRECISIONS = {"float32": tf.float32, "mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}
ALL_REDUCE = ("auto", "nccl", "hierarchical_copy", "ring")


@dataclasses.dataclass
class Runtime:
  """What the training loop needs to know about the hardware it runs on."""
  strategy: tf.distribute.Strategy
  kind: str  # the strategy actually built: cpu | mirrored | multiworker | tpu
  precision: str
  compute_dtype: tf.DType
  xla: bool
  steps_per_loop: int
  devices: tuple
  worker_index: int = 0
  num_workers: int = 1
  xla_whole_step: bool = False
  deterministic: bool = False  # TensorFlow's op determinism is on (runtime.deterministic)
  chosen: bool = False  # the precision was picked for the device (runtime.precision=auto)

  @property
  def num_replicas(self):
    return self.strategy.num_replicas_in_sync

  @property
  def is_chief(self):
    """Only the chief writes checkpoints, summaries and samples."""
    return self.worker_index == 0

  @property
  def loss_scaling(self):
    return self.precision == "mixed_float16"

  @property
  def hardware(self):
    """What models may know of this machine (``models.base.Hardware``)."""
    from models.base import Hardware  # pylint: disable=g-import-not-at-top
    if self.kind == "tpu":
      device = "tpu"
    elif any("GPU" in d.upper() for d in self.devices):
      device = "gpu"
    else:
      device = "cpu"
    return Hardware(compute_dtype=self.compute_dtype, replicas=self.num_replicas, xla=self.xla, device=device)

  # The model code and the step are written with TensorFlow's own control flow (tf.cond, tf.while_loop), so
  # AutoGraph need not rewrite them: converting every layer and loss function cost about a third of a first trace.
  def compile(self, fn):
    """Wraps a per-replica function that returns tensors (no variable writes); XLA-compiled when enabled."""
    return tf.function(fn, jit_compile=True, autograph=False) if self.xla else tf.function(fn, autograph=False)

  def compile_step(self, fn):
    """Wraps a training step's device work: one XLA computation with ``xla_whole_step``, else ``fn`` itself
    (traced inside the training call, left as written by AutoGraph)."""
    if self.xla_whole_step:
      return tf.function(fn, jit_compile=True, autograph=False)
    return tf.autograph.experimental.do_not_convert(fn)

  def any_worker(self, flag):
    """True on every worker when ``flag`` is true on any of them: a collective, so call it on all workers alike.

    Used between compiled calls so that a stop request (SIGTERM on one machine) stops every worker at the same
    step, instead of leaving the others waiting in a collective.
    """
    if self.num_workers == 1:
      return bool(flag)
    if not hasattr(self, "_any_fn"):
      strategy = self.strategy

      @tf.function
      def any_fn(value):
        per_replica = strategy.run(lambda: tf.identity(value))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

      self._any_fn = any_fn  # pylint: disable=attribute-defined-outside-init
    return bool(self._any_fn(tf.constant(1.0 if flag else 0.0)) > 0)

  def describe(self):
    return (f"strategy={self.kind} replicas={self.num_replicas} workers={self.num_workers} "
            f"precision={self.precision}{' (auto)' if self.chosen else ''} xla={self.xla}{' (whole step)' if self.xla_whole_step else ''} "
            f"devices={','.join(self.devices)}{' deterministic' if self.deterministic else ''}")


def validate(config):
  """Checks the runtime section of a config before anything is built. Raises UserError."""
  require(config.strategy in STRATEGIES,
          f"unknown --config.runtime.strategy={config.strategy!r}: choose one of {', '.join(STRATEGIES)}")
  require(config.precision in PRECISIONS or config.precision == "auto",
          f"unknown --config.runtime.precision={config.precision!r}: choose one of {', '.join(PRECISIONS)}, auto")
  require(int(config.cpu_replicas) >= 1,
          f"--config.runtime.cpu_replicas={config.cpu_replicas} must be at least 1")
  require(int(config.steps_per_loop) >= 1,
          f"--config.runtime.steps_per_loop={config.steps_per_loop} must be at least 1")
  require(not config.get("xla_whole_step") or config.xla,
          "--config.runtime.xla_whole_step=true needs --config.runtime.xla=true")
  require(config.get("all_reduce", "auto") in ALL_REDUCE,
          f"unknown --config.runtime.all_reduce={config.get('all_reduce')!r}: choose one of {', '.join(ALL_REDUCE)}")


def _logical_cpus(count):
  """Returns the names of ``count`` logical CPU devices, creating them if TF has not started yet."""
  physical = tf.config.list_physical_devices("CPU")
  try:
    current = tf.config.get_logical_device_configuration(physical[0])
    if count > 1 and (not current or len(current) < count):
      tf.config.set_logical_device_configuration(
          physical[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
  except RuntimeError:
    pass  # TensorFlow already initialised its devices: use what exists.
  logical = [d.name for d in tf.config.list_logical_devices("CPU")]
  require(len(logical) >= count,
          f"--config.runtime.cpu_replicas={count} but TensorFlow already started with {len(logical)} CPU device(s); "
          "set cpu_replicas before TensorFlow initialises (a fresh process)")
  return logical[:count]


def _cross_device_ops(all_reduce, devices):
  """Chooses the all-reduce for MirroredStrategy. NCCL is the fast path for GPUs; without it, hierarchical copy."""
  gpus = [d for d in devices if "GPU" in d.upper()]
  if not gpus:
    return None  # MirroredStrategy picks reduction-to-one-device on CPUs.
  if all_reduce == "hierarchical_copy":
    return tf.distribute.HierarchicalCopyAllReduce()
  if all_reduce in ("nccl", "auto"):
    nccl_ok = tf.test.is_built_with_cuda()
    if all_reduce == "nccl":
      require(nccl_ok, "--config.runtime.all_reduce=nccl but this TensorFlow has no NCCL; use hierarchical_copy")
    if nccl_ok:
      return tf.distribute.NcclAllReduce()
    logging.warning("NCCL not available; falling back to hierarchical-copy all-reduce")
    return tf.distribute.HierarchicalCopyAllReduce()
  return None


def _tpu_attached():
  """A cheap guess whether this host has a TPU, so ``auto`` can try TPUStrategy without a slow failure."""
  return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or os.path.exists("/dev/accel0")
              or os.path.exists("/dev/vfio/0"))


def _tpu_strategy(name):
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
  if name != "local":
    tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def _multiworker_strategy(all_reduce):
  require(os.environ.get("TF_CONFIG"),
          "--config.runtime.strategy=multiworker needs the TF_CONFIG environment variable; start the workers with "
          "`python -m launch.multiworker --workers=N -- <train command>` or set TF_CONFIG per host")
  implementation = {
      "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
      "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
      "ring": tf.distribute.experimental.CommunicationImplementation.RING,
      "hierarchical_copy": tf.distribute.experimental.CommunicationImplementation.RING,
  }[all_reduce]
  options = tf.distribute.experimental.CommunicationOptions(implementation=implementation)
  return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def worker_of(strategy):
  """Returns (worker index, number of workers) for a strategy; (0, 1) unless it spans several hosts."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return 0, 1
  spec = resolver.cluster_spec().as_dict()
  workers = len(spec.get("worker", [])) + len(spec.get("chief", []))
  task_type, task_id = resolver.task_type, resolver.task_id
  if "chief" in spec:
    index = 0 if task_type == "chief" else task_id + 1
  else:
    index = task_id
  return index, max(workers, 1)


# One strategy per kind and device set in a process. Two MirroredStrategy objects over the same devices share
# collective keys, so their all-reduces can pair up with each other's and fail with shape mismatches.
_STRATEGY_CACHE = {}


def cpu_info(cpuinfo="/proc/cpuinfo"):
  """(model name, set of flags) of the first CPU in ``cpuinfo`` (Linux); (None, empty set) where unreadable."""
  model, flags = None, set()
  try:
    with open(cpuinfo) as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
          model = value.strip()
        elif key.strip() == "flags" and not flags:
          flags = set(value.split())
        if model is not None and flags:
          break
  except OSError:
    pass
  return model, flags


def cpu_has_native_bfloat16(cpuinfo="/proc/cpuinfo"):
  """Whether the CPU multiplies bfloat16 natively (the avx512_bf16 or amx_bf16 flag); False when unknown."""
  flags = cpu_info(cpuinfo)[1]
  return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_precision(kind, gpu_capabilities=None, native_bfloat16=None):
  """The precision ``runtime.precision=auto`` means for a strategy ``kind`` on this machine.

  ``gpu_capabilities``: (major, minor) of each visible GPU (default: asked of TensorFlow); ``native_bfloat16``:
  whether the CPU has it (default: /proc/cpuinfo)."""
  if kind == "tpu":
    return "mixed_bfloat16"
  if gpu_capabilities is None:
    gpu_capabilities = [tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0))
                        for gpu in tf.config.list_physical_devices("GPU")]
  if gpu_capabilities:
    return "mixed_float16" if min(gpu_capabilities) >= (7, 0) else "float32"
  if native_bfloat16 is None:
    native_bfloat16 = cpu_has_native_bfloat16()
  return "mixed_bfloat16" if native_bfloat16 else "float32"


def _cached(key, build):
  if key not in _STRATEGY_CACHE:
    _STRATEGY_CACHE[key] = build()
  return _STRATEGY_CACHE[key]


def create(config):
  """Builds the strategy and sets the precision policy from the ``runtime`` config section."""
  validate(config)
  kind = config.strategy
  all_reduce = config.get("all_reduce", "auto")
  cpu_replicas = int(config.cpu_replicas)

  if kind == "auto":
    if _tpu_attached():
      try:
        name = config.get("tpu", "local")
        strategy = _cached(("tpu", name), lambda: _tpu_strategy(name))
        kind = "tpu"
      except (ValueError, RuntimeError, tf.errors.OpError) as e:
        logging.warning("a TPU looked attached but could not be initialised (%s); using GPUs or CPU", e)
        kind = "auto"
    if kind == "auto":
      kind = "mirrored" if tf.config.list_physical_devices("GPU") else "cpu"

  if kind == "tpu" and config.strategy == "tpu":
    name = config.get("tpu", "local")
    strategy = _cached(("tpu", name), lambda: _tpu_strategy(name))
  elif kind == "multiworker":
    strategy = _cached(("multiworker", all_reduce), lambda: _multiworker_strategy(all_reduce))
  elif kind in ("mirrored", "cpu"):
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")] if kind == "mirrored" else []
    devices = tuple(gpus or _logical_cpus(cpu_replicas))
    if len(devices) == 1:
      strategy = _cached(("one", devices), lambda: tf.distribute.OneDeviceStrategy(devices[0]))
    else:
      strategy = _cached(("mirrored", devices, all_reduce), lambda: tf.distribute.MirroredStrategy(
          list(devices), cross_device_ops=_cross_device_ops(all_reduce, devices)))
  elif kind != "tpu":
    raise UserError(f"unknown --config.runtime.strategy={kind!r}")

  precision = auto_precision(kind) if config.precision == "auto" else config.precision
  # One precision policy for any Keras layer a model may use; our own layers take the compute dtype explicitly.
  import keras  # pylint: disable=g-import-not-at-top
  keras.mixed_precision.set_global_policy(precision)
  deterministic = bool(config.get("deterministic", False))
  if deterministic:
    # For the whole process: GPU kernels with atomics (cuDNN's fastest convolutions, scatter-adds, bias gradients)
    # get deterministic versions, and an op that has none raises instead of running.
    tf.config.experimental.enable_op_determinism()

  devices = tuple(getattr(strategy.extended, "worker_devices", ()) or ())
  worker_index, num_workers = worker_of(strategy)
  # On a TPU the strategy compiles the steps itself; elsewhere one XLA computation can't hold variables on
  # several devices or cross-worker collectives.
  whole_step = bool(config.get("xla_whole_step")) and kind != "tpu"
  require(not whole_step or (len(devices) == 1 and num_workers == 1),
          f"--config.runtime.xla_whole_step=true needs a single device, not {len(devices)} device(s) on "
          f"{num_workers} worker(s); turn it off for {kind}")
  return Runtime(strategy=strategy, kind=kind, precision=precision, chosen=config.precision == "auto",
                 compute_dtype=PRECISIONS[precision], xla=bool(config.xla) or kind == "tpu",
                 steps_per_loop=int(config.steps_per_loop), devices=devices,
                 worker_index=worker_index, num_workers=num_workers, xla_whole_step=whole_step,
                 deterministic=deterministic)


def chief_task():
  """Whether this process is the chief of its cluster, from TF_CONFIG alone (before any strategy exists): the
  "chief" task, or worker 0 of a cluster without one, or a process without TF_CONFIG. Agrees with ``worker_of``."""
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    return True
  parsed = json.loads(raw)
  task = parsed.get("task", {})
  if "chief" in parsed.get("cluster", {}):
    return task.get("type") == "chief"
  return task.get("type") in (None, "worker") and int(task.get("index", 0)) == 0


def task_info():
  """(task type, task id) from TF_CONFIG, or (None, None) when it isn't set."""
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    return None, None
  task = json.loads(raw).get("task", {})
  return task.get("type"), task.get("index")
