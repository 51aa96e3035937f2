"""The Dockerfile: built and run where a container engine answers, otherwise linted against the repository."""

import ast
import fnmatch
import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

INSTRUCTIONS = {"FROM", "ARG", "ENV", "WORKDIR", "COPY", "ADD", "RUN", "CMD", "ENTRYPOINT", "LABEL", "USER", "EXPOSE",
                "VOLUME", "SHELL", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD"}


def _instructions():
  """(instruction, arguments) of the Dockerfile, comments dropped and continuation lines joined."""
  text = open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8").read()
  lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
  joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
  return [tuple(line.strip().split(None, 1)) for line in joined.splitlines() if line.strip()]


def _packages():
  """The top-level packages setup.py installs (its find_packages include list)."""
  tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
  for node in ast.walk(tree):
    if isinstance(node, ast.keyword) and node.arg == "include":
      return sorted({ast.literal_eval(node.value)[i].split(".")[0] for i in range(len(node.value.elts))})
  raise AssertionError("setup.py has no find_packages(include=...)")


def test_the_dockerfile_is_well_formed_and_copies_what_setup_installs():
  steps = _instructions()
  assert all(name in INSTRUCTIONS for name, _ in steps), [name for name, _ in steps if name not in INSTRUCTIONS]
  names = [name for name, _ in steps]
  assert all(name == "ARG" for name in names[:names.index("FROM")])  # only ARGs may come before FROM
  copied = set()
  for name, args in steps:
    if name == "COPY":
      *sources, _ = args.split()
      for source in sources:
        assert os.path.exists(os.path.join(ROOT, source)), f"COPY {source}: no such file in the repository"
        copied.add(source.rstrip("/"))
  assert set(_packages()) <= copied, f"setup.py installs {_packages()}; the image copies {sorted(copied)}"
  ignored = [line.strip() for line in open(os.path.join(ROOT, ".dockerignore")) if line.strip()]
  assert not [c for c in copied for pattern in ignored if fnmatch.fnmatch(c, pattern)]
  install = " ".join(args for name, args in steps if name == "RUN")
  assert 'pip install -c constraints.txt ".${EXTRA:+[$EXTRA]}"' in install  # the tested versions
  extras = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
  assert '"gpu": [' in extras  # the EXTRA the Dockerfile's header documents


def _engine_answers():
  docker = shutil.which("docker")
  if not docker:
    return False
  try:
    return subprocess.run([docker, "info"], capture_output=True, timeout=30, check=False).returncode == 0
  except (OSError, subprocess.SubprocessError):
    return False


def test_the_image_builds_and_runs_a_dry_run():
  if not _engine_answers():
    pytest.skip("no container engine answers here (docker info); the Dockerfile is linted above instead")
  tag = "genscale-test:cpu"
  build = subprocess.run(["docker", "build", "-t", tag, ROOT], capture_output=True, text=True, timeout=3600,
                         check=False)
  assert build.returncode == 0, build.stderr[-3000:]
  run = subprocess.run(["docker", "run", "--rm", tag, "python", "-m", "launch.train", "--config=dcgan:cpu",
                        "--dry_run"], capture_output=True, text=True, timeout=600, check=False)
  assert run.returncode == 0 and '"name": "dcgan"' in run.stdout, run.stderr[-3000:]
