# The jupyternetes-ssa reconciler image:
#   docker build -t registry.example.com/jupyternetes-ssa:0.1.0 .
#   docker run --rm registry.example.com/jupyternetes-ssa:0.1.0 --version
# Stage 1 builds the wheel (hatchling force-includes crds/ and tools/ into it); stage 2 installs it
# into a virtualenv on a clean base, removes the local cluster, and runs as a non-root numeric user.
# No compiler and no Go toolchain.
# tests/unit/test_dockerfile.py checks this file and repeats its install steps offline.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crds ./crds
COPY tools ./tools
COPY jupyternetes_ssa ./jupyternetes_ssa
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=build /dist/ /tmp/dist/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir /tmp/dist/*.whl \
 && rm -rf /tmp/dist \
 && find /opt/venv -type d -path '*/kubernetes_validate/kubernetes-json-schema/v*' \
      ! -name 'v1.36.0-local-strict' -prune -exec rm -rf {} +
# (kubernetes-validate ships the schemas of 13 Kubernetes versions, 100 MB; we read one.)
# The image runs the reconciler only: the local cluster (a developer command) and the Go module
# pins it builds from stay out (`jupyternetes-ssa local-cluster` says so in here).
RUN cd "$(/opt/venv/bin/python -c 'import jupyternetes_ssa as p; print(p.__path__[0])')" \
 && rm -r local_cluster tools
# Numeric, so that Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 10001:10001
ENTRYPOINT ["/opt/venv/bin/jupyternetes-ssa"]
CMD ["--help"]
