"""The cluster templates under launch/templates stay consistent with the code that reads them."""

import json
import os
import stat
import subprocess
import sys

import yaml

from launch import cluster
from tests.conftest import ROOT

TEMPLATES = os.path.join(ROOT, "launch", "templates")


def train_flags(args):
  """The --config file of a train command's arguments must exist, and the strategy must be multiworker."""
  config = next(a.split("=", 1)[1] for a in args if a.startswith("--config="))
  path, variant = config.split(":")
  assert os.path.exists(os.path.join(ROOT, path)), config
  assert variant in ("cpu", "gpu", "tpu")
  assert "--config.runtime.strategy=multiworker" in args
  assert any(a.startswith("--workdir=gs://") for a in args)


def test_kubernetes_indexed_job_names_agree_with_the_tf_config_it_derives():
  with open(os.path.join(TEMPLATES, "k8s-indexed-job.yaml"), encoding="utf-8") as f:
    service, job = list(yaml.safe_load_all(f))
  assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
  assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
  pod = job["spec"]["template"]["spec"]
  container = pod["containers"][0]
  env = {e["name"]: e["value"] for e in container["env"]}
  assert env["GENSCALE_JOB_NAME"] == job["metadata"]["name"]
  assert env["GENSCALE_SERVICE"] == service["metadata"]["name"] == pod["subdomain"]
  assert service["spec"]["selector"]["job-name"] == job["metadata"]["name"]
  workers = int(env["GENSCALE_WORKERS"])
  assert job["spec"]["completions"] == job["spec"]["parallelism"] == workers
  assert int(env["GENSCALE_PORT"]) == service["spec"]["ports"][0]["port"] == container["ports"][0]["containerPort"]
  command = container["command"]
  assert command[:6] == ["python", "-m", "launch.cluster", "exec", "--from=k8s", "--"]
  assert command[6:9] == ["python", "-m", "launch.train"]
  train_flags(command[9:])
  last = cluster.tf_config_from_k8s(dict(env, JOB_COMPLETION_INDEX=str(workers - 1)))
  name, subdomain = job["metadata"]["name"], service["metadata"]["name"]
  assert last["cluster"]["worker"] == [f"{name}-{i}.{subdomain}:{env['GENSCALE_PORT']}" for i in range(workers)]
  assert last["task"]["index"] == workers - 1


def test_vertex_ai_pools_run_the_same_train_command():
  with open(os.path.join(TEMPLATES, "vertex-ai-job.yaml"), encoding="utf-8") as f:
    spec = yaml.safe_load(f)
  pools = spec["workerPoolSpecs"]
  assert len(pools) == 2 and pools[0]["replicaCount"] == 1  # pool 0 is the chief
  commands = [p["containerSpec"]["command"] + p["containerSpec"]["args"] for p in pools]
  assert commands[0] == commands[1]
  assert commands[0][:3] == ["python", "-m", "launch.train"]
  train_flags(commands[0][3:])
  assert len({p["machineSpec"]["acceleratorCount"] for p in pools}) == 1  # the batch splits evenly


def test_hosts_script_hands_each_host_its_tf_config(tmp_path):
  # A `python` first on PATH that records the train command and passes everything else to this interpreter.
  shim = tmp_path / "bin" / "python"
  shim.parent.mkdir()
  shim.write_text("#!/bin/sh\n"
                  "if [ \"$2\" = launch.train ]; then echo \"$TF_CONFIG\"; shift 2; echo \"$@\"; exit 0; fi\n"
                  f"exec {sys.executable} \"$@\"\n")
  shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
  env = dict(os.environ, PATH=f"{shim.parent}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=ROOT,
             HOSTS="10.0.0.2,10.0.0.3", INDEX="1", WORKDIR="gs://b/run")
  result = subprocess.run([os.path.join(TEMPLATES, "hosts.sh"), "--config.steps=7"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False, timeout=120)
  assert result.returncode == 0, result.stderr
  config_line, args_line = result.stdout.strip().splitlines()[-2:]
  assert json.loads(config_line) == cluster.tf_config(["10.0.0.2", "10.0.0.3"], 1)
  args = args_line.split()
  train_flags(args)
  assert args[-1] == "--config.steps=7"


def test_hosts_script_says_what_is_missing():
  env = {k: v for k, v in os.environ.items() if k not in ("HOSTS", "INDEX", "WORKDIR")}
  result = subprocess.run([os.path.join(TEMPLATES, "hosts.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False, timeout=60)
  assert result.returncode != 0 and "set HOSTS" in result.stderr
