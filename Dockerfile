# One image for the controller (modelway-controller) and the sidecar
# (modelway-proxy); the chart picks the command. Build: docker build -t modelway:dev .
# BASE is any Python 3.11 image with `python` on PATH: the public slim image by
# default; the test suite builds one from Debian packages (tests/tools/image).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Extra pip options: a build without the index passes "--no-index --find-links
# /wheels" with a folder of the locked wheels mounted there (tests/tools/image).
ARG PIP_OPTIONS=""
WORKDIR /src
# The exact packages, with their hashes (requirements.lock, `make image-lock`):
# an image built next month has what the tests ran. setuptools is locked too,
# since the project itself is built without build isolation.
COPY requirements.lock ./
RUN python -m venv /opt/modelway \
 && /opt/modelway/bin/pip install $PIP_OPTIONS --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml ./
COPY proxy ./proxy
COPY controller ./controller
COPY shared ./shared
RUN /opt/modelway/bin/pip install --no-deps --no-build-isolation .

FROM ${BASE}
COPY --from=build /opt/modelway /opt/modelway
ENV PATH=/opt/modelway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so Kubernetes can check runAsNonRoot without a passwd lookup.
USER 65532:65532
# Sidecar: 15000 (apps), 15020 (admin). Controller: 15012 (sidecar streams), 9443 (webhook), 15014 (admin).
EXPOSE 15000 15020 15012 9443 15014
CMD ["modelway-proxy", "--help"]
