"""Every config file: each variant resolves to what its name promises, sets only what differs from the defaults, and an
unknown variant is a one-line error naming the variants."""

import importlib
import os

import pytest

from genscale.errors import UserError
from launch import rundir
from launch.configs import common

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "launch", "configs")
FAMILIES = sorted(name[:-3] for name in os.listdir(CONFIG_DIR)
                  if name.endswith(".py") and "def get_config" in open(os.path.join(CONFIG_DIR, name)).read())
# The strategy, precision and XLA setting a variant's name promises.
PROMISES = {"cpu": ("cpu", "float32", False), "gpu": ("auto", "mixed_float16", True),
            "tpu": ("tpu", "mixed_bfloat16", True)}
LARGEST_REPLICAS = {"gpu": 8, "tpu": 8}  # a host of 8 GPUs, a v3-8 / v4-8 TPU


def _module(family):
  return importlib.import_module(f"launch.configs.{family}")


def _cases():
  return [(family, variant) for family in FAMILIES for variant in _module(family).VARIANTS]


def test_every_family_has_a_config_file():
  assert {"dcgan", "pggan", "stylegan2", "ddpm", "edm"} <= set(FAMILIES)


@pytest.mark.parametrize("family,variant", _cases())
def test_each_variant_resolves_to_what_its_name_promises(family, variant, tiny_vq_runs):
  config = _module(family).get_config(variant)
  if config.model.get("tokens") == "vq":  # a model of VQ codes names its VQ-VAE run on the command line
    config.model.vq_workdir = tiny_vq_runs(int(config.resolution))
  config = rundir.prepare_config(config)
  assert config.model.name == family
  kind = variant.rstrip("0123456789").split("_")[0]  # gpu1024 -> gpu, cpu_uncond -> cpu
  assert (config.runtime.strategy, config.runtime.precision, config.runtime.xla) == PROMISES[kind]
  replicas = LARGEST_REPLICAS.get(kind, 1)
  assert int(config.batch_size) % replicas == 0, f"batch {config.batch_size} on {replicas} replicas"
  if kind == "cpu":
    domains = config.data[len("unpaired:"):].split("|") if config.data.startswith("unpaired:") else [config.data]
    assert all(d.startswith("embedded:") for d in domains)  # runs offline, on the data the package ships
  assert int(config.runtime.steps_per_loop) > 1  # several steps per compiled call everywhere
  if kind == "tpu":
    assert not config.histogram_every  # histograms would move every weight to the host


@pytest.mark.parametrize("family,variant", _cases())
def test_no_variant_restates_a_default(family, variant):
  module = _module(family)
  defaults = common.defaults(module.model())
  restated = []
  for key, value in module.VARIANTS[variant].items():
    section = defaults
    for name in key.split(".")[:-1]:
      section = section[name]
    if section[key.split(".")[-1]] == value:
      restated.append(key)
  assert not restated, f"{family}:{variant} sets {', '.join(restated)} to the default value"


@pytest.mark.parametrize("family", FAMILIES)
def test_an_unknown_variant_is_a_one_line_error_listing_the_variants(family):
  with pytest.raises(UserError) as error:
    _module(family).get_config("laptop")
  message = str(error.value)
  assert "\n" not in message and f"launch/configs/{family}.py" in message
  assert all(variant in message for variant in _module(family).VARIANTS)


def test_a_variant_key_that_does_not_exist_is_caught():
  with pytest.raises(KeyError, match="model.widht"):
    common.make(common.base().model, {"x": {"model.widht": 3}}, "x", "test")
