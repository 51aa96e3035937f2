"""Serve an exported model over TF Serving's REST API: ``python -m launch.serve --model_dir=DIR --port=8501``.

DIR is what ``launch.export --out=DIR`` wrote: version directories holding SavedModels. The newest version is
served (TF Serving's default policy) under the name ``--model_name`` (default: DIR's base name), with
  POST /v1/models/NAME[/versions/V]:predict   {"instances": [...]} or {"inputs": {...}}, optional "signature_name"
  GET  /v1/models/NAME[/versions/V]           the version's status
  GET  /v1/models/NAME[/versions/V]/metadata  the signatures' inputs and outputs
  GET  /                                      a demo page: pick a seed (and class, truncation, steps...), see images
in the request and response shapes of TF Serving, so a client written against this server works unchanged against
TF Serving or a Vertex AI endpoint. Errors come back as {"error": "..."} with status 400 (bad request) or 404
(unknown model, version or path).

This module and ``launch/rest.py`` (the request format) import TensorFlow, absl, the standard library and the HTTP
server only, none of the project's other code: the exported model needs nothing of genscale (the tests run the
server where the rest of the project can't be imported).
"""

import json
import os
import re
import signal
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from launch import rest  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("model_dir", None, "Directory of version directories (launch.export --out), local or gs://.")
flags.DEFINE_string("model_name", None, "Name in the request paths; default the model directory's base name.")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
flags.DEFINE_integer("port", 8501, "Port (TF Serving's REST port is 8501); 0 picks a free one.")
flags.DEFINE_integer("threads", 8, "Requests handled at the same time.")
flags.DEFINE_integer("max_request_bytes", 1 << 20, "Largest request body accepted.")
flags.DEFINE_integer("max_instances", 64, "Most examples in one request.")
flags.mark_flags_as_required(["model_dir"])
FLAGS = flags.FLAGS

METADATA = os.path.join("assets.extra", "genscale.json")
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<rest>:predict|/metadata)?$")
_DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates", "serve_demo.html")


class ServeError(Exception):
  """The server can't start (no model, unreadable directory): a one-line message for the command line."""


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def versions(model_dir):
  """The version numbers under ``model_dir`` that hold a SavedModel, in increasing order."""
  gfile = _gfile()
  if not gfile.isdir(model_dir):
    raise ServeError(f"--model_dir={model_dir} is not a directory: pass the --out of launch.export")
  found = []
  for entry in gfile.listdir(model_dir):
    entry = entry.rstrip("/")
    if entry.isdigit() and gfile.exists(os.path.join(model_dir, entry, "saved_model.pb")):
      found.append(int(entry))
  if not found:
    raise ServeError(f"{model_dir} holds no version directory with a saved_model.pb: export one with "
                     f"python -m launch.export --workdir=RUN --out={model_dir}")
  return sorted(found)


class Model:
  """One loaded SavedModel version and the conversion of predict requests for it."""

  def __init__(self, path, version):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self.tf = tf
    self.path, self.version = path, version
    self.loaded = tf.saved_model.load(path)
    self.signatures = dict(self.loaded.signatures)
    # {signature: {input: TensorSpec}}, read once: every request is checked against it.
    self.input_specs = {name: dict(fn.structured_input_signature[1]) for name, fn in self.signatures.items()}
    self.metadata = {}
    meta_path = os.path.join(path, METADATA)
    if tf.io.gfile.exists(meta_path):
      with tf.io.gfile.GFile(meta_path) as f:
        self.metadata = json.load(f)

  def inputs(self, signature):
    return self.input_specs[signature]

  def outputs(self, signature):
    return dict(self.signatures[signature].structured_outputs)

  def _bounds(self, signature, name):
    entry = self.metadata.get("signatures", {}).get(signature, {}).get(name, {})
    return {k: entry[k] for k in ("min", "max") if k in entry}

  def predict(self, body, max_instances):
    """The JSON response of a predict request."""
    signature, columns, rows = rest.parse(body, self.input_specs, max_instances)
    for name, values in columns.items():
      bounds = self._bounds(signature, name)
      if bounds:
        rest.check_range(name, values, bounds)
    specs = self.inputs(signature)
    tf = self.tf
    tensors = {name: tf.constant(values, specs[name].dtype) for name, values in columns.items()}
    try:
      outputs = self.signatures[signature](**tensors)
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
      raise rest.RequestError(str(e).strip().splitlines()[0]) from None
    return rest.response({name: value.numpy() for name, value in outputs.items()}, rows)

  def signature_def(self):
    """The metadata response's signature_def, in TF Serving's JSON form."""
    def tensor(spec, name):
      dims = [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape.as_list()]
      return {"dtype": rest.dtype_name(spec.dtype), "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": name}
    out = {}
    for signature in self.signatures:
      out[signature] = {
          "inputs": {n: tensor(s, f"{signature}_{n}:0") for n, s in self.inputs(signature).items()},
          "outputs": {n: tensor(s, f"StatefulPartitionedCall:{n}") for n, s in self.outputs(signature).items()},
          "method_name": "tensorflow/serving/predict"}
    return {"signature_def": out}


class Server:
  """The WSGI application: routes, limits, JSON errors. Never lets an exception reach the HTTP server."""

  def __init__(self, model_dir, name=None, max_request_bytes=1 << 20, max_instances=64):
    self.model_dir = model_dir
    self.name = name or os.path.basename(os.path.normpath(model_dir))
    self.max_request_bytes, self.max_instances = int(max_request_bytes), int(max_instances)
    version = versions(model_dir)[-1]
    self.model = Model(os.path.join(model_dir, str(version)), version)
    self.started = time.time()
    self.requests = 0
    self._count_lock = threading.Lock()

  def warm_up(self):
    """Runs every signature once on one example of default inputs, so the first request isn't the slow one."""
    for signature, specs in ((s, self.model.inputs(s)) for s in self.model.signatures):
      described = self.model.metadata.get("signatures", {}).get(signature, {})
      row = {}
      for name, spec in specs.items():
        default = described.get(name, {}).get("default", 0)
        row[name] = self.model.tf.zeros(spec.shape.as_list()[1:], spec.dtype).numpy().tolist() \
            if spec.shape.rank > 1 else default
      self.model.predict({"signature_name": signature, "instances": [row]}, 1)

  def _version_or_404(self, name, version):
    if name != self.name:
      raise rest.RequestError(f"Servable not found for request: Latest({name})", 404)
    if version is not None and int(version) != self.model.version:
      raise rest.RequestError(f"Servable not found for request: Specific({name}, {version})", 404)

  def status(self):
    return {"model_version_status": [{"version": str(self.model.version), "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}

  def __call__(self, environ, start_response):
    try:
      status, body, content_type = self.handle(environ)
    except rest.RequestError as e:
      status, body, content_type = e.status, {"error": str(e)}, "application/json"
    except Exception as e:  # pylint: disable=broad-except
      status, body, content_type = 500, {"error": f"internal error: {type(e).__name__}: {e}"}, "application/json"
    if not isinstance(body, bytes):
      body = json.dumps(body).encode()
    reason = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
              413: "Payload Too Large", 500: "Internal Server Error"}[status]
    start_response(f"{status} {reason}", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]

  def handle(self, environ):
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    with self._count_lock:
      self.requests += 1
    if path in ("/", "/index.html") and method == "GET":
      with open(_DEMO, "rb") as f:
        return 200, f.read(), "text/html; charset=utf-8"
    if path == "/favicon.ico":
      return 204, b"", "image/x-icon"
    if path == "/demo/model.json" and method == "GET":
      return 200, {"name": self.name, "version": self.model.version, "metadata": self.model.metadata,
                   "signatures": self.model.signature_def()["signature_def"]}, "application/json"
    match = _PATH.match(path)
    if not match:
      raise rest.RequestError(f"Malformed request: {method} {path}", 404)
    self._version_or_404(match["name"], match["version"])
    rest = match["rest"]
    if rest == ":predict":
      if method != "POST":
        raise rest.RequestError(f"Malformed request: {method} {path}; predict takes POST", 405)
      return 200, self.model.predict(self._json_body(environ), self.max_instances), "application/json"
    if method != "GET":
      raise rest.RequestError(f"Malformed request: {method} {path}", 405)
    if rest == "/metadata":
      return 200, {"model_spec": {"name": self.name, "signature_name": "", "version": str(self.model.version)},
                   "metadata": {"signature_def": self.model.signature_def()}}, "application/json"
    return 200, self.status(), "application/json"

  def _json_body(self, environ):
    try:
      length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
      raise rest.RequestError("bad Content-Length") from None
    if length > self.max_request_bytes:
      raise rest.RequestError(f"request of {length} bytes is larger than this server's limit of "
                         f"{self.max_request_bytes} (--max_request_bytes)", 413)
    raw = environ["wsgi.input"].read(length) if length else b""
    try:
      return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
      raise rest.RequestError(f"JSON Parse error: {e}") from None


def main(argv):
  del argv
  import waitress  # pylint: disable=g-import-not-at-top
  try:
    server = Server(FLAGS.model_dir, FLAGS.model_name, FLAGS.max_request_bytes, FLAGS.max_instances)
  except ServeError as e:
    sys.stderr.write(f"genscale: error: {e}\n")
    sys.exit(2)
  started = time.time()
  server.warm_up()
  http = waitress.create_server(server, host=FLAGS.host, port=FLAGS.port, threads=FLAGS.threads,
                                max_request_body_size=FLAGS.max_request_bytes + 1024, ident="genscale")
  port = http.effective_port

  def stop(signum, frame):
    del signum, frame
    raise SystemExit(0)

  signal.signal(signal.SIGTERM, stop)
  print(f"serving {server.name} version {server.model.version} from {server.model.path} "
        f"(ready in {time.time() - started:.1f}s)", flush=True)
  print(f"listening on http://{FLAGS.host}:{port}/ (demo page) and "
        f"http://{FLAGS.host}:{port}/v1/models/{server.name}:predict", flush=True)
  try:
    http.run()
  except (SystemExit, KeyboardInterrupt):
    pass
  finally:
    http.close()
    print(f"stopped after {server.requests} requests", flush=True)


def _parse_flags(argv):
  """absl's parsing with an error as one ``genscale: error:`` line and status 2, as the other commands do (this
  module can't use ``genscale.cli``: it runs without the rest of the project)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"genscale: error: {str(e).rstrip('.')}; see python -m launch.serve --help\n")
    sys.exit(2)


def entry_point():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  entry_point()
