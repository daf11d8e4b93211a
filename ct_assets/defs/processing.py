"""Processed visits: on one machine one DuckDB query (``engines/duck_visits.py``), on a cluster the PySpark job
of ``spark/visits.py``; the tests hold the two to the same table."""


import dagster as dg

from ct_assets.core.lake import new_version_dir, parquet_columns, parquet_rows, publish_dir
from ct_assets.core.provenance import STAGE_LOGIC, module_code_version
from ct_assets.core.sdtm import FINDINGS_DOMAINS
from ct_assets.defs import keys
from ct_assets.defs.failures import external
from ct_assets.defs.resources import Lake, Spark

VISIT_COLUMNS = {"SUBJECT_KEY": "string", "VISITNUM": "float64", "STUDY_DAY": "float64",
                 "EARLIEST_DAY": "float64", "LATEST_DAY": "float64",
                 "N_ABNORMAL": "int32", "N_RESULTS": "int32"}


@dg.asset(
    key=keys.PROCESSED_VISITS,
    group_name="processing",
    kinds={"duckdb", "spark", "parquet"},
    pool="spark_jobs",  # a transient failure (master unreachable, lost connection) is retried: core/faults.py
    code_version=module_code_version(*STAGE_LOGIC["processing"]),
    deps=[keys.validated(d) for d in FINDINGS_DOMAINS] + [keys.validated("DM")],
    description="One row per subject per visit: findings (vital signs, labs) in standard units, one column per test.",
)
def processed_visits(context: dg.AssetExecutionContext, pyspark: Spark, lake: Lake) -> dg.MaterializeResult:
    import pandas as pd

    out = lake.path_for(keys.PROCESSED_VISITS.path[-1])
    sources = {d: lake.path_for(keys.validated(d).path[-1]) for d in FINDINGS_DOMAINS}
    present = {d: p for d, p in sources.items() if parquet_rows(p)}
    version = new_version_dir(out)
    if present and not pyspark.takes(sum(parquet_rows(p) for p in present.values())):
        from ct_assets.engines import duck_visits  # one machine: no JVM to start (decision 0013)

        units = duck_visits.test_units(present)
        duck_visits.process_visits(present, lake.path_for(keys.validated("DM").path[-1]), version, tests=list(units))
        master, engine = "none", "duckdb"
    elif present:
        from spark import visits as job  # pyspark loads with the step, not with the code location

        with external("Spark", pyspark.master()):
            spark = pyspark.spark_session
            spark.sparkContext.setLogLevel("WARN")
            findings = {d: spark.read.parquet(str(p)) for d, p in present.items()}
            dm = spark.read.parquet(str(lake.path_for(keys.validated("DM").path[-1])))
            units = job.test_units(findings)  # its tests are the pivot's columns: no pass over the data to find them
            job.process_visits(findings, dm, tests=list(units)).write.mode("overwrite").parquet(str(version))
            master = spark.sparkContext.master
            engine = f"spark {master}"
    else:
        context.log.warning("no findings domain in this study: processed visits are empty")
        version.mkdir(parents=True)
        pd.DataFrame({c: pd.Series(dtype=t) for c, t in VISIT_COLUMNS.items()}).to_parquet(version / "part-0.parquet")
        units, master, engine = {}, "none", "none"
    publish_dir(version, out)
    per_subject = pd.read_parquet(out, columns=["SUBJECT_KEY"])["SUBJECT_KEY"].value_counts()  # one column, not the table
    tests = [c for c in parquet_columns(out) if c not in VISIT_COLUMNS]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(per_subject.sum()),
            "subjects": len(per_subject),
            "visits_per_subject_median": float(per_subject.median()) if len(per_subject) else 0.0,
            "tests": len(tests),
            "domains": ", ".join(sorted(present)) or "none",
            "engine": engine,
            "spark_master": master,
            "units": dg.MetadataValue.md("| test | unit |\n|---|---|\n" + "\n".join(f"| {t} | {units.get(t, '')} |" for t in tests)),
            "path": dg.MetadataValue.path(str(out)),
        }
    )
