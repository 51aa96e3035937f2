"""genscale: train generative image models with TensorFlow 2 on CPU, GPUs and TPUs.

The project's code lives in three layers: ``pipelines`` (tf.data input), ``models`` (networks, losses, per-replica
train steps) and ``launch`` (command-line tools, strategy and precision, the training loop). This small package holds
what all three share: the version, the error type for user mistakes, and console progress.
"""

__version__ = "0.1.0"
