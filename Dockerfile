# genscale in a container, for the Kubernetes and Vertex AI templates (launch/templates/) and TPU-less clusters.
#
#   docker build -t genscale:cpu .                              # CPU: TensorFlow's CPU wheel
#   docker build --build-arg EXTRA=gpu -t genscale:gpu .        # GPUs: tensorflow[and-cuda] (CUDA and cuDNN wheels;
#                                                               # the host needs the NVIDIA driver and container toolkit)
#   docker run --rm genscale:cpu python -m launch.train --config=dcgan:cpu --workdir=/tmp/dcgan
#
# The image holds the package only (no tests, no runs); workdirs and data go to gs:// or a mounted volume.
ARG PYTHON=3.11
FROM python:${PYTHON}-slim

ARG EXTRA=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/genscale
COPY setup.py setup.cfg README.md LICENSE NOTICE constraints.txt ./
COPY genscale/ genscale/
COPY launch/ launch/
COPY models/ models/
COPY pipelines/ pipelines/
COPY evaluation/ evaluation/
RUN pip install -c constraints.txt ".${EXTRA:+[$EXTRA]}" && python -c "import genscale, launch, models, pipelines, evaluation"

# Run from a directory of its own: --config=dcgan:cpu finds the packaged config files from anywhere.
WORKDIR /work
CMD ["python", "-m", "launch.train", "--helpshort"]
