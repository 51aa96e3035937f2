"""The shape docs/architecture.md promises: small modules and functions in launch/, a one-way contract between
models and the loop, and no package cycle between evaluation and the loop."""

import ast
import glob
import os
import re

from tests.conftest import ROOT


def _python_files(package):
  return sorted(glob.glob(os.path.join(ROOT, package, "**", "*.py"), recursive=True))


def test_launch_modules_and_functions_are_small():
  too_long = []
  for path in _python_files("launch"):
    source = open(path, encoding="utf-8").read()
    name = os.path.relpath(path, ROOT)
    if len(source.splitlines()) >= 400:
      too_long.append(f"{name}: {len(source.splitlines())} lines")
    for node in ast.walk(ast.parse(source)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
        too_long.append(f"{name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
  assert not too_long, "\n".join(too_long)


def test_models_know_nothing_of_loss_scaling_the_runtime_config_or_aggregation():
  """One helper in models/base.py may name the aggregation of shared state; nothing else in models/."""
  hits = []
  for path in _python_files("models"):
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
      if re.search(r"inner_optimizer|config\.runtime|VariableAggregation", line):
        hits.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
  assert len(hits) <= 1 and all(h.startswith(os.path.join("models", "base.py")) for h in hits), "\n".join(hits)


def test_models_and_evaluation_do_not_import_the_loop():
  imports = []
  for package in ("models", "evaluation", "pipelines", "genscale"):
    for path in _python_files(package):
      for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        imports += [f"{os.path.relpath(path, ROOT)}: {n}" for n in names if n == "launch" or n.startswith("launch.")]
  assert not imports, "\n".join(imports)


def test_every_console_script_names_a_module_function_that_exists():
  """setup.py's console scripts: each ``genscale-x=module:function`` names a function the module defines (read from
  the source: importing the command modules together would define their absl flags twice)."""
  setup = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
  scripts = re.findall(r'"(genscale-[\w-]+)=([\w.]+):(\w+)"', setup)
  assert len(scripts) >= 12, scripts
  for name, module, function in scripts:
    path = os.path.join(ROOT, *module.split(".")) + ".py"
    assert os.path.exists(path), f"{name}: no {path}"
    defined = {n.name for n in ast.parse(open(path, encoding="utf-8").read()).body if isinstance(n, ast.FunctionDef)}
    assert function in defined, f"{name}: {module} defines no {function}()"
