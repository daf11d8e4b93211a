# The model server alone (python -m ct_assets.serving): the package without its dependencies, plus the
# `serve` extra of pyproject.toml (MLflow, scikit-learn, Feast, Starlette on uvicorn...): no Dagster, no
# Spark, no Java. Built from the repository root:
#   docker build -f deploy/serving.Dockerfile -t registry.example.org/ct/model-server:0.1.0 .
# Base pinned by tag (pin its digest in CI, as deploy/Dockerfile says). Runs as an unprivileged user; the
# bearer token comes from $CT_SERVING_TOKEN (a Kubernetes secret), the registry from $MLFLOW_TRACKING_URI.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CT_HOME=/var/lib/ct

RUN groupadd --gid 10001 ct \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/ct ct

WORKDIR /tmp/ct-src
COPY pyproject.toml README.md ./
COPY ct_assets ct_assets
# The serve extra's requirements, read from pyproject.toml (one list of pins), then the package alone; the
# sources are removed once installed, and the build fails if Dagster or Spark came in anyway.
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['serve'], sep=chr(10))" > /tmp/serve.txt
RUN pip install -r /tmp/serve.txt \
    && pip install --no-deps . \
    && cd / && rm -rf /tmp/ct-src /tmp/serve.txt \
    && python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('dagster', 'pyspark')))" \
    && python -c "import ct_assets.serving.server" \
    && mkdir -p /var/lib/ct \
    && chown 10001:10001 /var/lib/ct

WORKDIR /var/lib/ct
USER 10001:10001
EXPOSE 8000
CMD ["python", "-m", "ct_assets.serving", "--host", "0.0.0.0", "--port", "8000", "--require-auth"]
