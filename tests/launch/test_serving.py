"""Exported models (launch/serving.py, launch.export) and the REST server with its demo page (launch.serve).

One tiny model per family (widths 8-16; the VAE trained for a step in a run directory, the others at their initial
weights) is exported once for the module. What is checked:
  - reloaded in a fresh process where genscale can't be imported, each export draws the images that the project's
    sampler draws for the same seeds (``launch.sample --seed=S --num=1``), bit for bit, with the family's settings
    as inputs (StyleGAN2's truncation, diffusion steps and guidance), and ``from_latent`` of a seed's z equals
    ``serving_default`` of that seed;
  - signature inputs and outputs, and no op in the graphs that blocks serving or conversion;
  - the server, run where genscale can't be imported: both request forms, signatures, PNGs, errors, 20 requests at
    once, SIGTERM; and the demo page in headless Chromium.
"""

import base64
import concurrent.futures
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from genscale import images as image_lib
from genscale.errors import UserError
from genscale.random import normal_values
from launch import loop, rundir, serving
from launch.sampling import Sampler
from tests.conftest import ROOT, build_trainer, error_lines, run_module

# Model keys that set widths and depths, and tiny values for them; a family uses the ones it has.
_TINY = {"channels": 8, "num_blocks": 1, "channel_base": 256, "channel_max": 16, "width_base": 256, "width_max": 16,
         "z_dim": 16, "w_dim": 16, "latent_dim": 16, "mbstd_group_size": 2, "sample_steps": 3, "mapping_layers": 1,
         "channel_mults": "1", "attention_resolutions": "", "g_width": 8, "d_width": 8}

# name: (config file, its variant, overrides)
FAMILIES = {
    "dcgan": ("dcgan", "cpu", {}),
    "pggan": ("pggan", "cpu", {}),
    "stylegan2": ("stylegan2", "cpu", {"resolution": 8, "model.conditional": True}),
    "vae": ("vae", "cpu", {}),
    "edm": ("edm", "cpu", {}),  # class-conditional, Heun with churn
    "ddpm": ("ddpm", "cpu", {"model.sampler": "ddim", "model.eta": 0.5}),
    "rbm": ("rbm", "cpu", {"model.hidden": 16}),  # Gibbs chains in the graph
    "dbn": ("dbn", "cpu", {"model.layers": "16,8"}),  # Gibbs in the top RBM, then a down pass
    # Token after token from the key/value cache in a while loop; parallel decoding in 10 steps.
    "imagegpt": ("imagegpt", "cpu", {"model.width": 16, "model.depth": 1, "model.heads": 2}),
    "maskgit": ("maskgit", "cpu_pixels", {"model.width": 16, "model.depth": 1, "model.heads": 2}),
}

# What each family's requests set besides the seed: {input: values for seeds 1, 2, 7}.
SETTINGS = {
    "stylegan2": {"label": [3, 0, 9], "truncation": [1.0, 0.5, 0.7]},
    "edm": {"label": [3, 3, 0], "steps": [4, 2, 3], "guidance": [2.0, 1.0, 0.0]},
    "ddpm": {"label": [1, 2, 3], "steps": [3, 5, 1], "guidance": [1.0, 3.0, 1.0]},
    "imagegpt": {"label": [3, 0, 9], "temperature": [1.0, 0.0, 0.7], "top_k": [0, 0, 4], "top_p": [1.0, 1.0, 0.9]},
    "maskgit": {"label": [2, 5, 5], "temperature": [1.0, 0.5, 2.0], "choice_temperature": [4.5, 0.0, 1.0]},
}
SEEDS = [1, 2, 7]

# Imported first in the fresh processes: any import of the project's packages fails there.
_BLOCK_PROJECT = textwrap.dedent("""
    import importlib.abc, sys
    class _NoProject(importlib.abc.MetaPathFinder):
      allowed = {allowed!r}
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("genscale", "launch", "models", "pipelines", "evaluation", "tests") and \\
            name not in self.allowed:
          raise ImportError("the project is not importable here: " + name)
        return None
    sys.meta_path.insert(0, _NoProject())
""")


def _config(name):
  import importlib  # pylint: disable=g-import-not-at-top
  file, variant, overrides = FAMILIES[name]
  c = importlib.import_module(f"launch.configs.{file}").get_config(variant)
  with c.unlocked():
    c.resolution, c.batch_size, c.steps = 16, 4, 1
    c.sample_every, c.sample_grid, c.log_every, c.checkpoint_every, c.histogram_every = 1, 4, 1, 1, 0
    c.runtime.steps_per_loop = 1
    for key, value in _TINY.items():
      if key in c.model:
        c.model[key] = value
    for key, value in overrides.items():
      node = c
      *path, last = key.split(".")
      for part in path:
        node = node[part]
      node[last] = value
  return c


# Trained for a step and loaded from its run directory, as launch.export does; the others are exported as built
# (at their initial weights: the export's graph is the same, and tracing a training step costs seconds).
_TRAINED = ("vae",)


def _untrained(name):
  trainer = build_trainer(_config(name), strategy="cpu", xla=False)
  return rundir.LoadedRun(workdir=None, config=trainer.config, info=trainer.source.info, runtime=trainer.runtime,
                          model=trainer.model, checkpoint="(initial weights)", step=0)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  """{family: (loaded run, export path)}."""
  root = tmp_path_factory.mktemp("serving")
  out = {}
  for name in FAMILIES:
    if name in _TRAINED:
      workdir = str(root / "runs" / name)
      loop.train(_config(name), workdir)
      run = rundir.load_run(workdir, None, strategy="cpu", xla=False)
    else:
      run = _untrained(name)
    out[name] = (run, serving.export(run, str(root / "models" / name), version=1))
  return out


def _requests(name):
  """The inputs of a request for SEEDS: {input: list}."""
  inputs = {"seed": list(SEEDS)}
  inputs.update(SETTINGS.get(name, {}))
  return inputs


def _sampler_images(run, name):
  """What the project's sampler draws for each request row: uint8 [3, H, W, C]."""
  rows, samplers = [], {}
  for i, seed in enumerate(SEEDS):
    settings = {k: v[i] for k, v in _requests(name).items() if k not in ("seed", "label")}
    labels = np.array([_requests(name)["label"][i]], np.int32) if "label" in _requests(name) else None
    key = tuple(sorted(settings.items()))
    if key not in samplers:
      samplers[key] = Sampler(run.runtime, run.model, 1, **settings)
    rows.append(image_lib.to_uint8(samplers[key].generate(seed, 1, labels))[0])
  return np.stack(rows)


def _fresh_process(script, allowed=(), **kwargs):
  return subprocess.run([sys.executable, "-c", _BLOCK_PROJECT.format(allowed=set(allowed)) + script], cwd=ROOT,
                        capture_output=True, text=True, check=False, **kwargs)


def test_each_family_reloaded_without_genscale_draws_the_sampler_images(exports, tmp_path):
  jobs = {}
  for name, (run, path) in exports.items():
    inputs = _requests(name)
    job = {"path": path, "inputs": inputs}
    if run.model.latent_shape is not None:  # the z that the seeds draw, given back through from_latent
      z = [normal_values(tf.constant([s, 0], tf.int64), "sample/z",
                         tf.range(run.model.latent_shape[0], dtype=tf.int64)[None]).numpy()[0].tolist()
           for s in SEEDS]
      job["from_latent"] = {**{k: v for k, v in inputs.items() if k != "seed" or run.model.latent_needs_seed},
                            "z": z}
    jobs[name] = job
  spec = tmp_path / "jobs.json"
  spec.write_text(json.dumps(jobs))
  result = _fresh_process(textwrap.dedent(f"""
      import json, numpy as np, tensorflow as tf
      jobs = json.load(open({str(spec)!r}))
      out = {{}}
      for name, job in jobs.items():
        model = tf.saved_model.load(job["path"])
        def call(signature, inputs):
          fn = model.signatures[signature]
          specs = fn.structured_input_signature[1]
          return fn(**{{k: tf.constant(v, specs[k].dtype) for k, v in inputs.items()}})
        got = call("serving_default", job["inputs"])
        out[name] = got["images"].numpy()
        out[name + "/png0"] = tf.io.decode_png(got["images_bytes"][0]).numpy()
        if "from_latent" in job:
          out[name + "/from_latent"] = call("from_latent", job["from_latent"])["images"].numpy()
      np.savez({str(tmp_path / "out.npz")!r}, **out)
  """))
  assert result.returncode == 0, result.stderr[-3000:]
  got = np.load(tmp_path / "out.npz")
  for name, (run, _) in exports.items():
    expected = _sampler_images(run, name)
    assert got[name].dtype == np.uint8 and got[name].shape == expected.shape, name
    np.testing.assert_array_equal(got[name], expected, err_msg=name)
    np.testing.assert_array_equal(got[name + "/png0"], expected[0], err_msg=name)
    if name + "/from_latent" in got:
      np.testing.assert_array_equal(got[name + "/from_latent"], expected, err_msg=name)
  # The settings do something: rows differ, and the diffusion step counts change the images.
  assert not np.array_equal(got["edm"][0], got["edm"][1])


def test_signatures_have_the_family_inputs_and_no_forbidden_op(exports):
  expected_inputs = {
      "dcgan": {"seed": tf.int64}, "pggan": {"seed": tf.int64}, "vae": {"seed": tf.int64},
      "stylegan2": {"seed": tf.int64, "label": tf.int32, "truncation": tf.float32},
      "edm": {"seed": tf.int64, "label": tf.int32, "steps": tf.int32, "guidance": tf.float32},
      "ddpm": {"seed": tf.int64, "label": tf.int32, "steps": tf.int32, "guidance": tf.float32},
      "rbm": {"seed": tf.int64}, "dbn": {"seed": tf.int64},
      "imagegpt": {"seed": tf.int64, "label": tf.int32, "temperature": tf.float32, "top_k": tf.int32,
                   "top_p": tf.float32},
      "maskgit": {"seed": tf.int64, "label": tf.int32, "temperature": tf.float32, "choice_temperature": tf.float32},
  }
  for name, (run, path) in exports.items():
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == ({"serving_default", "from_latent"} if run.model.latent_shape else
                                      {"serving_default"}), name
    fn = loaded.signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    assert {k: s.dtype for k, s in specs.items()} == expected_inputs[name], name
    assert all(s.shape.as_list() == [None] for s in specs.values()), name
    outputs = fn.structured_outputs
    size = 8 if name == "stylegan2" else 16
    assert outputs["images"].dtype == tf.uint8 and outputs["images"].shape.as_list() == [None, size, size, 1]
    assert outputs["images_bytes"].dtype == tf.string and outputs["images_bytes"].shape.as_list() == [None]
    if "from_latent" in loaded.signatures:
      z = loaded.signatures["from_latent"].structured_input_signature[1]["z"]
      assert z.shape.as_list() == [None, 16] and z.dtype == tf.float32
    assert not serving.graph_ops(path) & serving.FORBIDDEN_OPS, name
    assert {"While", "StatelessWhile"} & serving.graph_ops(path), name  # one example at a time: tf.map_fn
    metadata = json.load(open(os.path.join(path, serving.METADATA)))
    assert metadata["step"] == (1 if name in _TRAINED else 0)
    assert metadata["weights"] == ("ema" if run.model.ema_pairs else "raw"), name  # no EMA copy: the raw weights
    assert metadata["family"] == name
  # The variables are the generator's alone: no optimizer slots, no discriminator.
  run, path = exports["dcgan"]
  saved = {name for name, _ in tf.train.list_variables(os.path.join(path, "variables", "variables"))}
  assert not any("optimizer" in v or "discriminator" in v for v in saved), sorted(saved)[:5]
  assert len([v for v in saved if "VARIABLE_VALUE" in v]) == len(run.model.generator_ema.variables)


def test_the_graph_scan_finds_an_assert(tmp_path):
  def checked(x):
    with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(x > 0), [x])]):
      return tf.identity(x)

  module = tf.Module()
  module.f = tf.function(checked, input_signature=[tf.TensorSpec([None], tf.float32)])
  tf.saved_model.save(module, str(tmp_path / "m"))
  assert "Assert" in serving.graph_ops(str(tmp_path / "m"))
  with pytest.raises(ValueError, match="Assert"):
    serving.check_ops(str(tmp_path / "m"))


def test_an_existing_version_is_refused_and_kept(exports, tmp_path):
  run, path = exports["dcgan"]
  before = sorted(os.listdir(path))
  with pytest.raises(UserError, match="exists: pass --version"):
    serving.export(run, os.path.dirname(path), version=1)
  assert sorted(os.listdir(path)) == before
  assert serving.export(run, os.path.dirname(path), version=7).endswith("7")
  assert not [d for d in os.listdir(os.path.dirname(path)) if d.startswith(".")]  # no staging left behind


@pytest.mark.parametrize("name, settings", [("dcgan", {}), ("edm", {"steps": 2, "guidance": 2.0})])
def test_sampling_by_seeds_draws_the_served_images_at_any_batch_size(exports, name, settings):
  """``launch.sample --seeds``: each seed's image alone, the same in a batch of 2 or 3 as at a batch of one."""
  run, _ = exports[name]
  seeds, labels = [7, 1, 2, 40, 5], np.array([3, 3, 0, 9, 1], np.int32)
  alone = Sampler(run.runtime, run.model, 1, **settings)
  expected = np.stack([alone.generate(s, 1, labels[i:i + 1])[0] for i, s in enumerate(seeds)])
  for batch in (2, 3):
    got = Sampler(run.runtime, run.model, batch, **settings).for_seeds(seeds, labels)
    np.testing.assert_array_equal(got, expected, err_msg=f"{name} batch {batch}")


@pytest.mark.parametrize("name", ["dcgan", "stylegan2"])
def test_a_latent_walk_starts_at_the_first_seeds_image_and_moves(exports, name):
  run, _ = exports[name]
  sampler = Sampler(run.runtime, run.model, 4)
  frames = sampler.walk([3, 8], 5, label=2)
  assert frames.shape[0] == 6
  ends = sampler.for_seeds([3, 8], np.array([2, 2], np.int32))
  np.testing.assert_array_equal(frames[0], ends[0])
  if name == "dcgan":  # no randomness besides z: the walk ends at the last seed's image
    np.testing.assert_array_equal(frames[-1], ends[1])
  assert all(not np.array_equal(frames[i], frames[i + 1]) for i in range(5))


@pytest.mark.parametrize("name, setting, values", [("stylegan2", "truncation", [1.0, 0.5, 0.0]),
                                                   ("edm", "steps", [1, 2, 4])])
def test_a_sweep_draws_what_the_export_draws_at_each_value(exports, name, setting, values):
  run, path = exports[name]
  frames = Sampler(run.runtime, run.model, 2).sweep(7, setting, values, label=4)
  fn = tf.saved_model.load(path).signatures["serving_default"]
  specs = fn.structured_input_signature[1]
  inputs = {k: [default] * 3 for k, (_, default) in run.model.serving_inputs().items()}
  inputs.update({"seed": [7] * 3, "label": [4] * 3, setting: values})
  served = fn(**{k: tf.constant(v, specs[k].dtype) for k, v in inputs.items()})["images"].numpy()
  np.testing.assert_array_equal(image_lib.to_uint8(frames), served)
  assert not np.array_equal(served[0], served[2])


def test_slerp_keeps_the_ends_and_interpolates_the_norm():
  from launch.sampling import _slerp  # pylint: disable=g-import-not-at-top
  a, b = np.array([3.0, 0.0]), np.array([0.0, 1.0])
  np.testing.assert_array_equal(_slerp(a, b, 0.0), a)
  np.testing.assert_allclose(_slerp(a, b, 1.0), b, atol=1e-12)
  middle = _slerp(a, b, 0.5)
  np.testing.assert_allclose(np.linalg.norm(middle), 2.0)  # half-way in norm
  np.testing.assert_allclose(middle / np.linalg.norm(middle), [np.sqrt(0.5), np.sqrt(0.5)])  # and in angle


def test_seed_lists_parse_and_bad_ones_are_refused():
  from launch.sampling import parse_seeds  # pylint: disable=g-import-not-at-top
  assert parse_seeds("0-3,9,5-5") == [0, 1, 2, 3, 9, 5]
  for bad, message in (("a-b", "e.g. 0-63"), ("5-2", "not a range"), ("-3", "e.g. 0-63"), ("1,,2", "e.g. 0-63")):
    with pytest.raises(UserError, match=message):
      parse_seeds(bad)


# ---- the server


def _post(url, body, timeout=60):
  data = body if isinstance(body, bytes) else json.dumps(body).encode()
  request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def _get(url):
  try:
    with urllib.request.urlopen(url, timeout=30) as response:
      return response.status, response.read()
  except urllib.error.HTTPError as e:
    return e.code, e.read()


@pytest.fixture(scope="module")
def server(exports):
  """The server on the conditional EDM export, started where genscale can't be imported: its base URL."""
  _, path = exports["edm"]
  script = ("import runpy, sys; sys.argv = ['serve', '--model_dir=' + " + repr(os.path.dirname(path)) +
            ", '--port=0', '--max_instances=8', '--max_request_bytes=4096']; "
            "runpy.run_module('launch.serve', run_name='__main__')")
  blocker = _BLOCK_PROJECT.format(allowed={"launch", "launch.serve", "launch.rest"})
  process = subprocess.Popen([sys.executable, "-c", blocker + script], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  url = None
  deadline = time.time() + 120
  lines = []
  while time.time() < deadline:
    line = process.stdout.readline()
    if not line:
      break
    lines.append(line)
    match = re.search(r"listening on (http://[\d.]+:\d+)/", line)
    if match:
      url = match.group(1)
      break
  if url is None:
    process.kill()
    pytest.fail("the server did not start: " + "".join(lines) + process.stderr.read()[-3000:])
  yield url, process
  if process.poll() is None:
    process.kill()


def _png(prediction):
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(prediction["images_bytes"]["b64"]))))


def test_predict_in_both_forms_equals_the_export(server, exports):
  url, _ = server
  inputs = _requests("edm")
  rows = [{k: v[i] for k, v in inputs.items()} for i in range(len(SEEDS))]
  status, body = _post(f"{url}/v1/models/edm:predict", {"instances": rows})
  assert status == 200, body
  images = np.array([p["images"] for p in body["predictions"]], np.uint8)
  np.testing.assert_array_equal(images, _sampler_images(exports["edm"][0], "edm"))
  np.testing.assert_array_equal(_png(body["predictions"][1]).reshape(images[1].shape), images[1])
  status, columnar = _post(f"{url}/v1/models/edm/versions/1:predict",
                           {"inputs": inputs, "signature_name": "serving_default"})
  assert status == 200, columnar
  np.testing.assert_array_equal(np.array(columnar["outputs"]["images"], np.uint8), images)
  assert columnar["outputs"]["images_bytes"][2] == body["predictions"][2]["images_bytes"]
  status, latent = _post(f"{url}/v1/models/edm:predict", {"signature_name": "from_latent", "instances": rows})
  assert status == 400 and "from_latent" in latent["error"] and "serving_default" in latent["error"]
  status, raw = _get(f"{url}/v1/models/edm")
  assert status == 200 and json.loads(raw)["model_version_status"][0] == {
      "version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
  status, raw = _get(f"{url}/v1/models/edm/metadata")
  inputs_def = json.loads(raw)["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
  assert inputs_def["seed"]["dtype"] == "DT_INT64" and inputs_def["steps"]["tensor_shape"]["dim"] == [
      {"size": "-1", "name": ""}]


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "JSON Parse error"),
    ({"instances": [{"seed": 1}]}, 400, "no value for input(s) guidance, label, steps"),
    ({"instances": [{"seed": 1.5, "label": 3, "steps": 2, "guidance": 1}]}, 400, "expected an integer"),
    ({"instances": [{"seed": 1, "label": 3, "steps": 2, "guidance": "x"}]}, 400, "expected a number"),
    ({"instances": [{"seed": 1, "label": 10, "steps": 2, "guidance": 1}]}, 400, "'label' = 10 is out of range"),
    ({"instances": [{"seed": 1, "label": 3, "steps": 0, "guidance": 1}]}, 400, "'steps' = 0 is out of range"),
    ({"inputs": {"seed": [1, 2], "label": [3], "steps": [2], "guidance": [1]}}, 400, "different numbers"),
    ({"instances": [], "inputs": {}}, 400, "not both"),
    ({"instances": [{"seed": s, "label": 0, "steps": 1, "guidance": 1} for s in range(9)]}, 400, "at most 8"),
    ({"signature_name": "nope", "instances": [1]}, 400, "\"nope\" not found"),
    ({"instances": ["x" * 5000]}, 413, "larger than this server's limit"),
])
def test_a_bad_request_gets_an_error_and_the_server_goes_on(server, body, status, message):
  url, process = server
  got_status, got = _post(f"{url}/v1/models/edm:predict", body)
  assert (got_status, message in got.get("error", "")) == (status, True), got
  assert _get(f"{url}/v1/models/other:predict")[0] == 404
  assert process.poll() is None


def test_twenty_concurrent_requests_get_their_own_images(server, exports):
  url, _ = server
  def ask(seed):
    status, body = _post(f"{url}/v1/models/edm:predict",
                         {"instances": [{"seed": seed, "label": seed % 10, "steps": 2, "guidance": 1.0}]})
    assert status == 200, body
    return np.array(body["predictions"][0]["images"], np.uint8)
  with concurrent.futures.ThreadPoolExecutor(20) as pool:
    images = list(pool.map(ask, range(20)))
  run = exports["edm"][0]
  sampler = Sampler(run.runtime, run.model, 1, steps=2, guidance=1.0)
  for seed in (0, 13, 19):
    expected = image_lib.to_uint8(sampler.generate(seed, 1, np.array([seed % 10], np.int32)))[0]
    np.testing.assert_array_equal(images[seed], expected)
  assert len({im.tobytes() for im in images}) == 20


def _browser():
  """A headless Chromium driven by Selenium through the system chromedriver, or None where there is none."""
  try:
    from selenium import webdriver  # pylint: disable=g-import-not-at-top
    from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  binary = shutil.which("chromium") or shutil.which("chromium-browser")
  driver = shutil.which("chromedriver")
  if not binary or not driver:
    return None
  options = webdriver.ChromeOptions()
  options.binary_location = binary
  for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,700"):
    options.add_argument(argument)
  return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def test_the_demo_page_shows_images_in_a_browser(server, tmp_path):
  url, _ = server
  browser = _browser()
  if browser is None:
    message = "no headless Chromium with chromedriver (Debian packages chromium, chromium-driver; pip selenium)"
    if os.environ.get("CI"):
      pytest.fail(message)
    pytest.skip(message)
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  try:
    browser.get(url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    for name, value in (("seed", "5"), ("label", "3"), ("steps", "2"), ("guidance", "1")):
      field = browser.find_element(By.ID, "in-" + name)
      field.clear()
      field.send_keys(value)
    browser.find_element(By.ID, "count").clear()
    browser.find_element(By.ID, "count").send_keys("2")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-generated") == "1")
    images = browser.find_elements(By.CSS_SELECTOR, "img.sample")
    assert [im.get_attribute("alt") for im in images] == ["seed 5", "seed 6"]
    wait.until(lambda b: all(b.execute_script("return arguments[0].naturalWidth", im) == 16 for im in images))
    browser.find_element(By.ID, "random").click()
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-generated") == "2")
    assert browser.find_elements(By.CSS_SELECTOR, "img.sample")[0].get_attribute("alt") != "seed 5"
    browser.find_element(By.ID, "in-label").clear()
    browser.find_element(By.ID, "in-label").send_keys("12")
    # The page offers the ranges the export declares: the browser refuses to send a class the model lacks.
    assert browser.execute_script("return document.getElementById('in-label').checkValidity()") is False
    browser.save_screenshot(str(tmp_path / "demo.png"))
  finally:
    browser.quit()


def test_sigterm_stops_the_server_cleanly(server):
  _, process = server
  process.send_signal(signal.SIGTERM)
  out, _ = process.communicate(timeout=60)
  assert process.returncode == 0 and "stopped after" in out


def test_the_export_command_with_tflite_and_a_bad_directory(exports, tmp_path):
  run, _ = exports["vae"]
  out = tmp_path / "vae_models"
  result = run_module("launch.export", f"--workdir={run.workdir}", f"--out={out}", "--weights=raw", "--format=tflite")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"to {out / '1'}" in result.stdout and json.load(open(out / "1" / serving.METADATA))["weights"] == "raw"
  # The TFLite generator draws what the SavedModel's from_latent draws for the same z.
  interpreter = tf.lite.Interpreter(model_path=str(out / "1" / serving.TFLITE))
  z = np.random.RandomState(0).standard_normal([1, 16]).astype(np.float32)
  lite = interpreter.get_signature_runner()(z=z)["images"]
  saved = tf.saved_model.load(str(out / "1")).signatures["from_latent"](z=tf.constant(z))["images"].numpy()
  assert lite.shape == saved.shape == (1, 16, 16, 1)
  assert np.abs(lite.astype(int) - saved).max() <= 1  # XNNPACK's float order may move a pixel by one level
  empty = run_module("launch.serve", f"--model_dir={tmp_path}", "--port=0")
  assert empty.returncode == 2 and len(error_lines(empty.stderr)) == 1
  assert "holds no version directory" in empty.stderr
  missing = run_module("launch.serve", "--port=0")
  assert missing.returncode == 2 and len(error_lines(missing.stderr)) == 1 and "--model_dir" in missing.stderr


@pytest.mark.parametrize("name", ["dcgan", "pggan"])
def test_a_gan_generator_converts_to_tflite_and_draws_the_saved_model_images(exports, tmp_path, name):
  run, path = exports[name]
  exporter = serving.Exporter(run.model, (16, 16, 1))
  assert serving.convert_tflite(exporter, str(tmp_path / "g.tflite")) > 0
  runner = tf.lite.Interpreter(model_path=str(tmp_path / "g.tflite")).get_signature_runner()
  saved = tf.saved_model.load(path).signatures["from_latent"]
  for seed in (1, 2):
    z = np.random.RandomState(seed).standard_normal([1, 16]).astype(np.float32)
    lite, expected = runner(z=z)["images"], saved(z=tf.constant(z))["images"].numpy()
    assert lite.shape == expected.shape == (1, 16, 16, 1) and lite.dtype == np.uint8
    assert np.abs(lite.astype(int) - expected).max() <= 1, name


@pytest.mark.parametrize("name", ["stylegan2", "edm"])
def test_tflite_refuses_a_generator_that_needs_the_random_numbers(exports, tmp_path, name):
  run, _ = exports[name]
  with pytest.raises(UserError, match="can't be converted: .*Flex"):
    serving.export(run, str(tmp_path / name), tflite=True)
  assert not os.path.exists(tmp_path / name / "1")
