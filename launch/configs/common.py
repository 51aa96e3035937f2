"""Keys every model honours, the runtime presets, and how a family's config file is put together.

A family's config file (``launch/configs/<family>.py``) holds a ``model()`` block and a dict ``VARIANTS`` of
changes by variant name, each a dict of dotted keys to values that differ from ``base()`` and the model block;
``get_config(variant)`` is ``common.make(model(), VARIANTS, variant)``. Science settings (data, model, schedule)
live at the top level and under ``model``; hardware settings live under ``runtime`` and never change what is
learned, only how fast. The runtime presets and the output cadences of large runs are here, and only here.
"""

import math

import ml_collections

from genscale.errors import UserError


def runtime(**changes):
  """The ``runtime`` section: its defaults, with ``changes``."""
  r = ml_collections.ConfigDict()
  r.strategy = "auto"  # auto | cpu | mirrored | multiworker | tpu
  # float32 | mixed_float16 | mixed_bfloat16 | auto (bfloat16 on TPUs and CPUs with native bfloat16, float16 on
  # GPUs with tensor cores, else float32; launch.devices prints the choice)
  r.precision = "float32"
  r.xla = False  # compile the per-replica forward/backward with XLA (always on for TPU)
  r.xla_whole_step = False  # with xla on one device: compile each step's whole device work, as a TPU does
  r.cpu_replicas = 1  # logical CPU devices; >1 runs MirroredStrategy on a CPU
  r.steps_per_loop = 1  # training steps per compiled call
  r.tpu = "local"  # TPU name or grpc address; "local" on Colab and TPU VMs
  r.all_reduce = "auto"  # GPU all-reduce: auto (NCCL if present) | nccl | hierarchical_copy | ring
  r.deterministic = False  # TensorFlow's op determinism: bitwise-repeatable steps on GPUs too, somewhat slower
  r.update(changes)
  return r


def input_options():
  """Pipeline settings; see pipelines/sources.py (InputOptions) for each."""
  i = ml_collections.ConfigDict()
  i.crop = "center"  # fit the aspect ratio: center | pad | none
  i.shuffle_buffer = 10_000
  i.cache = False  # decode once into memory: exact order and resume for small datasets
  i.deterministic = True
  i.folder_labels = False  # folder:DIR -> class = first sub-folder
  i.tfds_data_dir = ml_collections.config_dict.placeholder(str)
  i.tfds_download = True
  i.image_key = "image"
  i.label_key = "label"
  i.labelled = ml_collections.config_dict.placeholder(int)  # keep N labels, even over the classes (others -1)
  return i


def base():
  c = ml_collections.ConfigDict()
  c.data = "embedded:mnist"  # source spec, see pipelines/sources.py
  # Training resolution: an integer (square) or "HxW". Typed as any object so that --config.resolution=64 gives
  # an int and --config.resolution=32x64 a string.
  c.resolution = ml_collections.config_dict.placeholder(object)
  c.resolution = 32
  c.channels = 1  # image channels the model sees (1 or 3); the pipeline converts
  c.flip = False  # random horizontal flips (mirror augmentation)
  c.input = input_options()
  c.steps = 1000  # total training steps (one global batch each)
  c.batch_size = 64  # global batch, split evenly over replicas
  c.seed = 0  # initial weights, data order and every random draw derive from it
  # Fine-tuning: a new run starts its networks (and their EMA copies) from another run's workdir or checkpoint;
  # the optimizer, the counters and model state (ADA's p, lod, w_avg) start fresh. Ignored once the run has a
  # checkpoint of its own.
  c.init_from = ml_collections.config_dict.placeholder(str)
  c.ema_halflife_kimg = 10.0  # half-life of the generator EMA, in thousands of images
  c.ema_rampup = 0.05  # the half-life is at most this fraction of the images seen so far (None: off)
  c.log_every = 100  # steps between log lines and TensorBoard scalars
  c.sample_every = 500  # steps between sample grids
  c.checkpoint_every = 500  # steps between checkpoints
  c.keep_checkpoints = 3  # most recent checkpoints kept
  c.milestone_every = 0  # also keep every checkpoint at a multiple of this many steps (0: none)
  c.async_checkpoints = True  # write checkpoints in the background while training continues
  c.on_nonfinite = "stop"  # stop | rollback (restore the last checkpoint and skip the diverged data)
  c.max_rollbacks = 3  # rollbacks allowed per process before stopping
  c.sample_grid = 64  # images in a sample grid (a square number reads best)
  c.histogram_every = 500  # steps between weight and gradient histograms (0: off; costly on TPUs)
  c.profile_steps = ""  # "A,B": capture a profiler trace from step A to step B (TensorBoard's Profile tab)
  # Evaluation during training (evaluation/evaluator.py); the same scores as `python -m launch.evaluate`.
  c.eval_every = 0  # steps between evaluations of the EMA generator, and at the end (0: off)
  c.eval_num = 10_000  # generated images per evaluation (published FIDs use 50,000)
  c.eval_metrics = "fid,kid"  # comma-separated: fid, kid, is, pr, nll (held-out likelihood, models that have one)
  c.eval_extractor = "classifier"  # classifier (offline; digits) | inception (needs eval_inception_weights)
  c.eval_inception_weights = ml_collections.config_dict.placeholder(str)  # local or gs:// path
  c.eval_data = ml_collections.config_dict.placeholder(str)  # reference data spec; default the training data
  c.eval_batch_size = 64  # images per compiled evaluation call
  c.eval_nll_samples = 64  # nll: importance samples k of the IWAE bound (Burda et al. use 5,000)
  c.eval_nll_data = ml_collections.config_dict.placeholder(str)  # nll: held-out data; default the test split
  c.eval_ais_runs = 100  # nll of an energy model (RBM): AIS runs for log Z
  c.eval_ais_betas = 14_500  # nll of an energy model: AIS intermediate distributions
  c.runtime = runtime()
  c.model = ml_collections.ConfigDict()
  return c


# Runtime presets: the variants' hardware settings. float32 on CPUs: those without AVX512_BF16 emulate bfloat16
# convolutions about 10x slower than float32 (docs/benchmarks.md).
CPU = {"runtime.strategy": "cpu", "runtime.steps_per_loop": 10}
GPU = {"runtime.precision": "mixed_float16", "runtime.xla": True, "runtime.steps_per_loop": 50}  # every visible GPU
TPU = {"runtime.strategy": "tpu", "runtime.precision": "mixed_bfloat16", "runtime.xla": True,
       "runtime.steps_per_loop": 100,
       "histogram_every": 0}  # histograms move every weight and gradient to the host


def large_run(every=5000, log_every=500):
  """The output cadences of long runs (hours to days on accelerators): samples and checkpoints ``every`` steps."""
  return {"log_every": log_every, "sample_every": every, "checkpoint_every": every}


LARGE_RUN = large_run()


def ema_halflife_kimg(beta, batch_size):
  """The EMA half-life (thousands of images) that gives a decay of ``beta`` per step at ``batch_size``."""
  return batch_size * math.log(0.5) / math.log(beta) / 1000.0


def apply(config, changes):
  """Sets dotted keys ("model.lr", "runtime.strategy") of ``config`` to the values of ``changes``."""
  for key, value in changes.items():
    *parents, leaf = key.split(".")
    section = config
    for name in parents:
      section = section[name]
    if leaf not in section:
      raise KeyError(f"config has no key {key!r}")
    section[leaf] = value
  return config


def defaults(model_block):
  """``base()`` with ``model_block`` as its model section: what every variant of a family starts from."""
  c = base()
  c.model = model_block
  return c


def make(model_block, variants, variant, family):
  """The config of ``variant``: ``defaults(model_block)`` with ``variants[variant]`` applied. Raises UserError
  for an unknown variant, naming ``family``'s variants."""
  if variant not in variants:
    raise UserError(f"unknown variant {variant!r} of launch/configs/{family}.py: choose one of "
                    f"{', '.join(variants)}")
  return apply(defaults(model_block), variants[variant])
