"""Run by the Airflow venv's interpreter (not imported by the platform): print the DAGs of the metadata
database named by $AIRFLOW_HOME/airflow.cfg, paused or not, and the DAG import errors, as one JSON line."""

import json


def main() -> None:
    from airflow.models import DagModel
    from airflow.models.errors import ParseImportError
    from airflow.utils.session import create_session

    with create_session() as session:
        dags = [{"dag_id": d.dag_id, "is_paused": bool(d.is_paused), "is_active": bool(d.is_active),
                 "schedule": d.timetable_description}
                for d in session.query(DagModel).order_by(DagModel.dag_id)]
        errors = [{"filename": e.filename, "error": (e.stacktrace or "").strip().splitlines()[-1:][0][:300]
                   if e.stacktrace else ""} for e in session.query(ParseImportError)]
    print(json.dumps({"dags": dags, "import_errors": errors}))


if __name__ == "__main__":
    main()
