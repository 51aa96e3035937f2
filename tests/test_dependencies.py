"""setup.py's requirements against constraints.txt, the versions CI installs: every range holds them, every lower bound is one."""

import ast
import os

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT


def _install_requires():
  tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "install_requires":
      return [Requirement(r) for r in ast.literal_eval(node.value)]
  raise AssertionError("setup.py has no install_requires list")


def _pins(name):
  pins = {}
  for line in open(os.path.join(ROOT, name), encoding="utf-8"):
    line = line.split("#")[0].strip()
    if line:
      package, version = line.split("==")
      pins[canonicalize_name(package)] = version
  return pins


def _tensorflow():
  # The TensorFlow requirement is added at run time (GENSCALE_TENSORFLOW); read its default from the module.
  source = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
  default = source.split('os.environ.get("GENSCALE_TENSORFLOW", "')[1].split('"')[0]
  return Requirement(default)


def _requirements():
  """genscale's own requirements (not the extras'), each with its canonical name."""
  return [(canonicalize_name(r.name), r) for r in _install_requires() + [_tensorflow()]]


def test_ci_pins_a_version_of_every_requirement_inside_its_declared_range():
  pins = _pins("constraints.txt")
  for name, requirement in _requirements():
    assert name in pins, f"constraints.txt pins no version of {requirement.name}"
    assert requirement.specifier.contains(pins[name]), f"constraints.txt's {name}=={pins[name]} is outside {requirement}"


def test_every_stated_lower_bound_is_the_version_ci_tests():
  # A lower bound is a claim that the version works; CI runs exactly the pinned versions, so only those are proven.
  pins = _pins("constraints.txt")
  for name, requirement in _requirements():
    lower = [s.version for s in requirement.specifier if s.operator == ">="]
    if lower:
      assert Version(pins[name]) == Version(lower[0]), f"setup.py says {requirement}; CI tests {name}=={pins[name]}"
