# One image for the controller (modelway-controller) and the sidecar
# (modelway-proxy); the chart picks the command. Build: docker build -t modelway:dev .
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
COPY proxy ./proxy
COPY controller ./controller
# A virtualenv we can copy whole into the runtime stage; `fast` adds uvloop.
RUN python -m venv /opt/modelway \
 && /opt/modelway/bin/pip install '.[fast]'

FROM python:3.11-slim
COPY --from=build /opt/modelway /opt/modelway
ENV PATH=/opt/modelway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so Kubernetes can check runAsNonRoot without a passwd lookup.
USER 65532:65532
# Sidecar: 15000 (apps), 15020 (admin). Controller: 15012 (sidecar streams), 9443 (webhook), 15014 (admin).
EXPOSE 15000 15020 15012 9443 15014
CMD ["modelway-proxy", "--help"]
