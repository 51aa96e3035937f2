"""TF_CONFIG for multi-worker training: from a host list, a Kubernetes indexed Job, or what a platform sets.

MultiWorkerMirroredStrategy learns the cluster from the ``TF_CONFIG`` environment variable:
``{"cluster": {"worker": ["host0:port", "host1:port", ...]}, "task": {"type": "worker", "index": i}}``. Worker 0
is the chief (it writes checkpoints, summaries and samples). Every worker runs the same command.

  python -m launch.cluster tf-config --hosts=10.0.0.2,10.0.0.3 --index=1      # prints an export line
  python -m launch.cluster exec --hosts=a,b --index=0 -- python -m launch.train ...
  python -m launch.cluster exec --from=k8s -- python -m launch.train ...       # inside an indexed Job

``--from=k8s`` reads the Job's completion index (JOB_COMPLETION_INDEX) and builds host names from the pod names
of an indexed Job behind a headless Service: ``<job>-<index>.<service>``, with the job name, service name and
worker count from GENSCALE_JOB_NAME, GENSCALE_SERVICE and GENSCALE_WORKERS (see launch/templates/). Vertex AI
custom jobs set TF_CONFIG themselves: run the train command as is.
"""

import json
import os
import sys

from genscale import cli

cli.configure_environment()

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_PORT = 2222

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_list("hosts", None, "Worker hosts, in worker-index order (host or host:port).")
  flags.DEFINE_integer("index", None, "This worker's index in --hosts.")
  flags.DEFINE_integer("port", DEFAULT_PORT, "Port for hosts given without one.")
  flags.DEFINE_enum("from", None, ["k8s"], "Derive the cluster from the environment of a platform.")


def tf_config(hosts, index, port=DEFAULT_PORT):
  """The TF_CONFIG dict for worker ``index`` of ``hosts``."""
  from genscale.errors import require  # pylint: disable=g-import-not-at-top
  require(hosts, "give the worker hosts, e.g. --hosts=10.0.0.2,10.0.0.3")
  require(index is not None and 0 <= int(index) < len(hosts),
          f"--index={index} must be between 0 and {len(hosts) - 1} for {len(hosts)} hosts")
  addresses = [h if ":" in h else f"{h}:{port}" for h in hosts]
  return {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": int(index)}}


def tf_config_from_k8s(environ, port=DEFAULT_PORT):
  """TF_CONFIG for a pod of a Kubernetes indexed Job behind a headless Service."""
  from genscale.errors import require  # pylint: disable=g-import-not-at-top
  missing = [k for k in ("JOB_COMPLETION_INDEX", "GENSCALE_JOB_NAME", "GENSCALE_SERVICE", "GENSCALE_WORKERS")
             if not environ.get(k)]
  require(not missing, f"--from=k8s needs the environment variables {', '.join(missing)} (see "
          "launch/templates/k8s-indexed-job.yaml)")
  job, service, count = environ["GENSCALE_JOB_NAME"], environ["GENSCALE_SERVICE"], int(environ["GENSCALE_WORKERS"])
  hosts = [f"{job}-{i}.{service}" for i in range(count)]
  return tf_config(hosts, int(environ["JOB_COMPLETION_INDEX"]), int(environ.get("GENSCALE_PORT", port)))


def main(argv):
  from genscale.errors import UserError  # pylint: disable=g-import-not-at-top
  if len(argv) < 2 or argv[1] not in ("tf-config", "exec"):
    raise UserError("usage: python -m launch.cluster tf-config|exec [--hosts=... --index=N | --from=k8s] "
                    "[-- command ...]")
  if FLAGS["from"].value == "k8s":
    config = tf_config_from_k8s(os.environ, FLAGS.port)
  else:
    config = tf_config(FLAGS.hosts, FLAGS.index, FLAGS.port)
  text = json.dumps(config)
  if argv[1] == "tf-config":
    print(f"export TF_CONFIG='{text}'")
    return
  command = argv[2:]
  if not command:
    raise UserError("exec needs a command after --, e.g. -- python -m launch.train ...")
  os.environ["TF_CONFIG"] = text
  sys.stdout.flush()
  os.execvp(command[0], command)


def entry_point():
  define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry_point()
