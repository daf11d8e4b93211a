"""The legacy Airflow view of the platform: five DAGs generated from the Dagster definitions.

    python -m airflow_compat emit --out DIR    write the DAG files (main venv: reads ct_assets)
    python -m airflow_compat start             run Airflow 2.11 or 3 on them (either Airflow venv)
    python -m airflow_compat dagbag DIR        what Airflow makes of DIR, as JSON (Airflow venv)
"""
