# Airflow 2.11 with the bridge's dependencies (airflow_compat/requirements.txt, locked) and
# airflow_compat itself, for deploy/compose.yaml. Built from the repository root:
#   docker build -f deploy/airflow.Dockerfile -t registry.example.org/ct/airflow:0.1.0 .
# Base pinned by tag (pin its digest in CI); the image's own unprivileged user `airflow` (uid 50000).
FROM apache/airflow:2.11.2-python3.11

COPY --chown=airflow:root airflow_compat/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
COPY --chown=airflow:root airflow_compat /opt/airflow/ct/airflow_compat
ENV PYTHONPATH=/opt/airflow/ct
USER 50000
