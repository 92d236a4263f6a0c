# The Dataflow worker container: Beam's Python 3.11 SDK harness (same Beam version as the launcher),
# CUDA torch, fairseq-fixed, this package and (optionally) the models baked in.
#
#   make image IMAGE=REGION-docker.pkg.dev/PROJECT/REPO/ssrp-worker:0.1.0
#   docker push $IMAGE
#   ssrp build ... --runner dataflow -- --sdk_container_image=$IMAGE --sdk_location=container ...
#
# The torch wheels bundle the CUDA runtime; the driver comes from Dataflow's install-nvidia-driver.
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION}

ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/ssrp

# 1. torch first, pinned (the CUDA build on x86_64)
RUN pip install torch==2.14.1 torchvision==0.29.1

# 2. the package and its pinned dependencies (apache-beam is already the SDK's, same version)
COPY pyproject.toml README.md ./
COPY ssrp ./ssrp
RUN pip install . \
 && pip install --no-deps --no-build-isolation fairseq-fixed==0.12.3.1 \
 && pip install --no-build-isolation fastBPE==0.1.0 \
 && python -c "import apache_beam, torch, fairseq, fastBPE, stanza, ssrp; assert apache_beam.__version__ == '${BEAM_VERSION}'"

# 3. optional: bake the models in (otherwise stage them on a shared path and pass --models)
ARG MODELS_DIR=
COPY ${MODELS_DIR:-pyproject.toml} /opt/ssrp/models-src
RUN if [ -d /opt/ssrp/models-src ]; then mv /opt/ssrp/models-src /opt/models; else rm /opt/ssrp/models-src; fi

# Beam's SDK harness boot stays the entrypoint (from the base image).
ENTRYPOINT ["/opt/apache/beam/boot"]
