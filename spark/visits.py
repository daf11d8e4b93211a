"""Processed visits: one row per subject per visit, findings in standard units, one column per test.

Pure ``DataFrame -> DataFrame`` functions, used by the Dagster asset ``processed_visits`` and by
the ``spark-submit`` entry point below. Besides PySpark it needs only ``ct_assets.core.dates`` (the one
reading of SDTM dates, pure Python), installed with the package or shipped with ``--py-files``:

    spark-submit --master spark://host:7077 spark/visits.py \
        --findings VS=/lake/validated/vs.parquet --findings LB=/lake/validated/lb.parquet \
        --dm /lake/validated/dm.parquet --output /lake/processed/visits.parquet
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ct_assets.core.units import UNIT_CONVERSIONS
from ct_assets.engines.spark_dates import spark_date_bounds, spark_study_days

SUBJECT = "SUBJECT_KEY"
ABNORMAL_FLAGS = ["HIGH", "LOW", "ABNORMAL", "H", "L", "A", "HH", "LL"]



def _col_or_null(df: DataFrame, name: str, dtype: str = "string") -> Column:
    return F.col(name) if name in df.columns else F.lit(None).cast(dtype)


def findings_long(df: DataFrame, domain: str) -> DataFrame:
    """One row per numeric result: subject, visit, day, test (prefixed by domain), value, unit."""
    d = domain
    nrind = _col_or_null(df, f"{d}NRIND")
    return df.where(F.col(f"{d}STRESN").isNotNull()).select(
        F.col(SUBJECT),
        F.col("VISITNUM").cast("double").alias("VISITNUM"),
        _col_or_null(df, f"{d}DY", "double").cast("double").alias("DY"),
        _col_or_null(df, f"{d}DTC").alias("DTC"),
        F.concat(F.lit(f"{d}_"), F.col(f"{d}TESTCD")).alias("TEST"),
        F.col(f"{d}STRESN").cast("double").alias("VALUE"),
        _col_or_null(df, f"{d}STRESU").alias("UNIT"),
        F.upper(F.coalesce(nrind, F.lit(""))).isin(ABNORMAL_FLAGS).cast("int").alias("ABNORMAL"),
    )


def to_standard_units(long: DataFrame) -> DataFrame:
    """Convert results recorded in a known non-standard unit; others pass through unchanged."""

    def lookup(pick) -> Column:
        pairs = [F.lit(x) for unit, conv in UNIT_CONVERSIONS.items() for x in (unit, pick(conv))]
        return F.create_map(*pairs)[F.col("UNIT")]

    target, factor, offset = lookup(lambda c: c[0]), lookup(lambda c: c[1]), lookup(lambda c: c[2])
    return long.withColumn(
        "VALUE", F.when(factor.isNotNull(), F.col("VALUE") * factor + offset).otherwise(F.col("VALUE"))
    ).withColumn("UNIT", F.coalesce(target, F.col("UNIT")))


def with_study_day(long: DataFrame, dm: DataFrame) -> DataFrame:
    """Each result's study day interval (EARLIEST_DAY, LATEST_DAY) from --DY when delivered, else from its
    date and DM's reference start (ct_assets.core.dates, as Spark columns: a partial date is bounded, never imputed); DY only
    where the day is known."""
    ref_lo, ref_hi = spark_date_bounds(F.col("RFSTDTC"))
    ref = dm.select(SUBJECT, ref_lo.alias("_REF_LO"), ref_hi.alias("_REF_HI"))
    lo, hi = spark_date_bounds(F.col("DTC"))
    # Each step its own columns: inlined into one expression the date parsing repeats until the generated code
    # outgrows the JVM's 64 KB method limit.
    first, last = spark_study_days(F.col("_LO"), F.col("_HI"), F.col("_REF_LO"), F.col("_REF_HI"))
    return (
        long.withColumns({"_LO": lo, "_HI": hi})
        .join(ref, SUBJECT, "left")
        .withColumns({"_FIRST": first, "_LAST": last})
        .withColumns({"EARLIEST_DAY": F.coalesce(F.col("DY"), F.col("_FIRST")),
                      "LATEST_DAY": F.coalesce(F.col("DY"), F.col("_LAST")),
                      "DY": F.coalesce(F.col("DY"), F.when(F.col("_FIRST") == F.col("_LAST"), F.col("_FIRST")))})
        .drop("_LO", "_HI", "_REF_LO", "_REF_HI", "_FIRST", "_LAST", "DTC")
    )


def visits_wide(long: DataFrame, tests: list[str]) -> DataFrame:
    """Pivot to one row per subject and visit; repeated measures (positions, time points) averaged.
    STUDY_DAY is the visit's first known day; EARLIEST_DAY and LATEST_DAY bound every result of the visit
    (a result with a partial date widens them), so features can keep a visit only when all of it lies
    inside their window.
    One aggregate per visit, each test's mean a conditional average: a single shuffle, of rows already
    reduced map-side to one per visit (Spark's pivot aggregates per test first, then shuffles again)."""
    keys = [SUBJECT, "VISITNUM"]
    # Each row's test as a number: an integer comparison per test and row costs less than a string one.
    number = F.create_map(*[F.lit(x) for i, test in enumerate(tests) for x in (test, i)])[F.col("TEST")] if tests else F.lit(None)
    return long.withColumn("_TEST_NO", number).groupBy(*keys).agg(
        F.min("DY").alias("STUDY_DAY"),
        F.min("EARLIEST_DAY").alias("EARLIEST_DAY"),
        F.max("LATEST_DAY").alias("LATEST_DAY"),
        F.sum("ABNORMAL").cast("int").alias("N_ABNORMAL"),
        F.count(F.lit(1)).cast("int").alias("N_RESULTS"),
        *[F.avg(F.when(F.col("_TEST_NO") == i, F.col("VALUE"))).alias(test) for i, test in enumerate(tests)],
    ).orderBy(*keys)  # sorted across its files: subject_features reads it a batch at a time, subject by subject


def _findings_long(findings: Mapping[str, DataFrame]) -> DataFrame:
    parts = [to_standard_units(findings_long(df, domain)) for domain, df in sorted(findings.items())]
    if not parts:
        raise ValueError("no findings domain to process")
    long = parts[0]
    for part in parts[1:]:
        long = long.unionByName(part)
    return long


def process_visits(findings: Mapping[str, DataFrame], dm: DataFrame, tests: list[str] | None = None) -> DataFrame:
    """The whole job: findings domains (by SDTM code) and DM in, wide visit table out. ``tests``: the
    test columns if already known (e.g. from ``test_units``), else found by a pass over the findings."""
    long = _findings_long(findings)
    # No .cache(): Spark matches cached data by plan, and re-reading the same lake path gives the
    # same plan, so a long-lived session would serve the previous run's data.
    if tests is None:
        tests = [r["TEST"] for r in long.select("TEST").distinct().collect()]
    return visits_wide(with_study_day(long, dm), sorted(tests))


def test_units(findings: Mapping[str, DataFrame]) -> dict[str, str]:
    """The standard unit of every test column (every test of the visit table), in one pass."""
    rows = _findings_long(findings).groupBy("TEST").agg(F.mode("UNIT").alias("UNIT")).collect()
    return {r["TEST"]: r["UNIT"] or "" for r in rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--findings", action="append", required=True, metavar="DOMAIN=PATH",
                        help="a validated findings domain (repeatable), e.g. VS=/lake/validated/vs.parquet")
    parser.add_argument("--dm", required=True, help="validated DM parquet")
    parser.add_argument("--output", required=True, help="output parquet folder")
    args = parser.parse_args(argv)
    spark = SparkSession.builder.appName("ct-processed-visits").getOrCreate()
    findings = {}
    for item in args.findings:
        domain, path = item.split("=", 1)
        findings[domain.upper()] = spark.read.parquet(path)
    process_visits(findings, spark.read.parquet(args.dm)).write.mode("overwrite").parquet(args.output)
    spark.stop()


if __name__ == "__main__":
    main()
