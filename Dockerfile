# syntax=docker/dockerfile:1
# The concordose image: one image for the receiver, the Prefect server, the Prefect worker, the
# flow runs (Kubernetes jobs), the Dask scheduler and workers, and the one-shot registration.
# Multi-stage: the first stage builds the wheel from the checkout; the second installs that wheel
# (not the checkout) into a virtual environment and runs as an unprivileged user. No secret is
# baked in: the pseudonymisation key, the S3 keys, the Prefect auth string and the database
# password reach the containers at run time (compose secrets, Kubernetes Secrets; see
# deploy/README.md). Not built in the project's CI (no container engine there): tests parse it.
#
#   docker build -t concordose:latest .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY . .
RUN python -m pip install --no-cache-dir --upgrade "pip>=24" \
    && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE} AS runtime
# libGL and glib: opencv-python, which rt-utils installs, loads them (RTSTRUCT VOIs).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 concordose \
    && useradd --system --uid 10001 --gid concordose --home-dir /var/lib/concordose \
       --create-home --shell /usr/sbin/nologin concordose
# Prefect plugins: the Kubernetes work pool (`prefect worker start --type kubernetes`) and the
# Dask task runner (`--task-runner dask:…`, the `sweep-dask` deployment, the Dask containers).
ARG WORKER_PLUGINS="prefect-kubernetes>=0.8 prefect-dask>=0.3"
COPY --from=build /dist/ /tmp/wheels/
# rt-utils pulls the Python 3.6 `dataclasses` backport, which shadows the standard library inside
# Prefect's server: removed as scripts/bootstrap does.
RUN python -m venv /opt/concordose/.venv \
    && /opt/concordose/.venv/bin/pip install --no-cache-dir /tmp/wheels/concordose-*.whl ${WORKER_PLUGINS} \
    && /opt/concordose/.venv/bin/pip uninstall -y dataclasses \
    && rm -rf /tmp/wheels
COPY --chmod=0755 deploy/docker-entrypoint.sh /usr/local/bin/concordose-entrypoint
# The deployments' definition, versioned with the code it names (module-path entrypoints into the
# installed package): what the one-shot registration runs `prefect deploy` on.
COPY --chmod=0644 deploy/prefect.yaml /opt/concordose/prefect.yaml
ENV PATH=/opt/concordose/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PREFECT_HOME=/var/lib/concordose/prefect
RUN install -d -o concordose -g concordose /var/lib/concordose/spool /etc/concordose
USER concordose:concordose
WORKDIR /var/lib/concordose
# 11112 DICOM (receiver), 4200 Prefect API and UI (server), 8786/8787 Dask scheduler.
EXPOSE 11112 4200 8786 8787
ENTRYPOINT ["concordose-entrypoint"]
CMD ["concordose", "--help"]
