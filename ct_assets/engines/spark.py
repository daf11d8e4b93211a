"""A findings domain (VS, LB) validated on Spark, in bounded memory, with the rules of ``schemas.py``.

The rules a row can fail on its own (types, formats, dates, ranges, results present, the test's unit)
are the pandera schema of ``schemas.findings_schema``, applied to each Arrow batch of each partition
(``mapInArrow``) by the same ``split_valid`` as the pandas path. The rules that need the whole domain
are Spark aggregations and joins: uniqueness of USUBJID + --SEQ (the first row in delivery order is
kept, as pandera's ``exclude_first``), each test's standard unit (the most common one, computed once
and given to the partitions), and the subject known to DM (a join with DM's accepted subjects, which
also pseudonymises: the key never leaves the driver, only the id -> pseudonym map of accepted subjects
does). A row's rules are the union of both, with pandera's names, so that ``raw = validated +
quarantined`` and the reasons are the same as on pandas.

Imports of pyspark happen inside the functions: the code location loads without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ct_assets.core.report import anomaly_table, robust_outliers
from ct_assets.engines.pandas import REASON, RULES

_LOCAL, _FRAME = "_PARTITION_RULES", "_FRAME_REASON"
BROADCAST_ROWS = 2_000_000  # failing rows up to this many are joined back by broadcast


def standard_units(raw, domain: str) -> dict[str, str]:
    """Each test's standard unit over the whole domain: the most common after conversion (ties: the first
    in sort order, as pandas' ``mode``), among rows with a result and a unit."""
    from pyspark.sql import functions as F

    from ct_assets.core.schemas import modal_units
    from ct_assets.core.units import UNIT_CONVERSIONS

    testcd, res, unit = f"{domain}TESTCD", f"{domain}STRESN", f"{domain}STRESU"
    if not {testcd, res, unit} <= set(raw.columns):
        return {}
    value = F.col(res).try_cast("double")
    has = F.col(res).isNotNull() & F.col(unit).isNotNull() & ~(value.isNotNull() & F.isnan(value))
    targets = F.create_map(*[F.lit(x) for u, conv in UNIT_CONVERSIONS.items() for x in (u, conv[0])])
    std = F.coalesce(targets[F.col(unit)], F.col(unit)).alias("U")
    counts = raw.where(has & F.col(testcd).isNotNull()).groupBy(F.col(testcd).alias("T"), std).count().collect()
    return modal_units({(r["T"], r["U"]): r["count"] for r in counts})


def rule_columns(domain: str) -> set[str]:
    """The columns the row rules read: the schema's, and those its checks read beyond them."""
    from ct_assets.core.schemas import findings_schema

    schema = findings_schema(domain, None, "9999-12-31", {}, whole_domain=False)
    return set(schema.columns) | set((schema.metadata or {}).get("also_reads", []))


def _partition_rules(domain: str, cutoff: str, units: dict[str, str]):
    """The function mapInArrow runs on each partition: every batch (the rule columns and the row's
    provenance) through the schema's row rules; out come only the rows that fail, by provenance, with
    their rules (and the reason, when a rule failed the whole frame)."""

    def run(batches):
        import pyarrow as pa

        from ct_assets.core.schemas import findings_schema
        from ct_assets.core.sdtm import SOURCE_COLS
        from ct_assets.engines.pandas import arrow_strings, split_valid

        schema = findings_schema(domain, None, cutoff, units, whole_domain=False)
        for batch in batches:
            df = batch.to_pandas(types_mapper=arrow_strings)  # text stays in Arrow: the rules run vectorised
            q = split_valid(df, schema, coerce_accepted=False).quarantined
            if not len(q):
                continue
            whole = ~q[REASON].str.startswith("failed: ")
            yield pa.RecordBatch.from_arrays(
                [pa.array(q[SOURCE_COLS[0]], pa.string()), pa.array(q[SOURCE_COLS[1]], pa.int64()),
                 pa.array(q[RULES], pa.string()), pa.array(q[REASON].where(whole, None), pa.string(), from_pandas=True)],
                names=[*SOURCE_COLS, _LOCAL, _FRAME])

    return run


def row_failures(raw, domain: str, cutoff: str, units: dict[str, str]):
    """(_SOURCE_FILE, _SOURCE_ROW, rules, frame reason) of the rows that fail a row rule: Python sees only
    the columns the rules read, and sends back only the failures."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    from ct_assets.core.sdtm import SOURCE_COLS

    read = rule_columns(domain)
    columns = [c for c in raw.columns if c in read] + SOURCE_COLS
    out = StructType([StructField(SOURCE_COLS[0], StringType()), StructField(SOURCE_COLS[1], LongType()),
                      StructField(_LOCAL, StringType()), StructField(_FRAME, StringType())])
    return raw.select(*[raw[c].cast("string").alias(c) if c == SOURCE_COLS[0] else
                        raw[c].cast("long").alias(c) if c == SOURCE_COLS[1] else raw[c] for c in columns]
                      ).mapInArrow(_partition_rules(domain, cutoff, units), out)


def repeated_keys(raw, domain: str):
    """USUBJID + --SEQ delivered more than once, with the first row (in delivery order) of each; None when
    the domain lacks the columns."""
    from pyspark.sql import functions as F

    seq = f"{domain}SEQ"
    if not {"USUBJID", seq} <= set(raw.columns):
        return None
    key = [F.col("USUBJID").alias("_K1"), F.col(seq).try_cast("double").alias("_K2")]
    return (raw.groupBy(*key).agg(F.count(F.lit(1)).alias("_N"), F.min(F.struct("_SOURCE_FILE", "_SOURCE_ROW")).alias("_FIRST"))
            .where("_N > 1").drop("_N"))


def split_findings(raw, subjects, domain: str, cutoff: str, units: dict[str, str], failures=None, repeated=None,
                   broadcast_failures: bool = True):
    """Raw rows -> raw rows with SUBJECT_KEY, _QUARANTINE_RULES and _QUARANTINE_REASON (null when the row
    passes). ``subjects``: DM's accepted subjects as (_USUBJID, SUBJECT_KEY); ``failures`` and ``repeated``
    (row_failures, repeated_keys) when the caller has them at hand."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from ct_assets.core.rules import label
    from ct_assets.core.schemas import REPEATED_ROW, REPEATED_ROW_RULE, SUBJECT_NOT_IN_DM, UNIQUENESS
    from ct_assets.core.sdtm import SOURCE_COLS

    d, cols = domain, raw.columns
    failures = row_failures(raw, d, cutoff, units) if failures is None else failures
    checked = raw.join(F.broadcast(failures) if broadcast_failures else failures, SOURCE_COLS, "left")

    found = []
    if "USUBJID" in cols:
        checked = checked.join(F.broadcast(subjects), F.col("USUBJID").cast("string") == F.col("_USUBJID"), "left")
        found.append(F.when(F.col("USUBJID").isNotNull() & F.col("SUBJECT_KEY").isNull(),
                            F.lit(label(d, "USUBJID", "subject_in_dm", f"USUBJID: {SUBJECT_NOT_IN_DM}"))))
    else:
        checked = checked.withColumn("SUBJECT_KEY", F.lit(None).cast("string"))
    repeated = repeated_keys(raw, d) if repeated is None else repeated
    if repeated is not None:
        seq = f"{d}SEQ"
        on = (F.col("USUBJID").eqNullSafe(F.col("_K1")) & F.col(seq).try_cast("double").eqNullSafe(F.col("_K2")))
        checked = checked.join(F.broadcast(repeated), on, "left")
        later = F.col("_FIRST").isNotNull() & (F.struct("_SOURCE_FILE", "_SOURCE_ROW") != F.col("_FIRST"))
        # Of the rows that repeat a key (few), those identical to an earlier row: a repeat, not a second version.
        content = [c for c in cols if not c.startswith("_")]
        order = Window.partitionBy(*content).orderBy("_SOURCE_FILE", "_SOURCE_ROW")
        copies = (checked.where(F.col("_FIRST").isNotNull()).select(*content, *SOURCE_COLS)
                  .withColumn("_COPY", F.row_number().over(order) > 1).where("_COPY").select(*SOURCE_COLS, "_COPY"))
        checked = checked.join(F.broadcast(copies), SOURCE_COLS, "left")
        copy = F.coalesce(F.col("_COPY"), F.lit(False))
        found += [F.when(later & copy, F.lit(label(d, None, REPEATED_ROW, REPEATED_ROW_RULE)))] + [
            F.when(later & ~copy, F.lit(label(d, c, UNIQUENESS, f"{c}: {UNIQUENESS}"))) for c in ("USUBJID", seq)]

    local = F.when(F.col(_LOCAL).isNull(), F.array().cast("array<string>")).otherwise(F.split(F.col(_LOCAL), "; "))
    every = F.array_sort(F.array_distinct(F.concat(local, F.array_compact(F.array(*found)) if found else
                                                   F.array().cast("array<string>"))))
    rules = (F.when(F.col(_FRAME).isNotNull(), F.col(_LOCAL))
             .when(F.size(every) > 0, F.concat_ws("; ", every)))
    reason = F.when(F.col(_FRAME).isNotNull(), F.col(_FRAME)).when(F.size(every) > 0, F.concat(F.lit("failed: "), rules))
    return checked.select(*cols, "SUBJECT_KEY", rules.alias(RULES), reason.alias(REASON))


def validated_rows(split, domain: str, raw_columns: list[str]):
    """Accepted rows as the validated zone holds them: SUBJECT_KEY for USUBJID (SUBJID dropped), the
    schema's numeric columns typed, and the optional columns a delivery lacks as nulls (as ``conform``)."""
    from pyspark.sql import functions as F

    from ct_assets.core.schemas import domain_schema

    schema = domain_schema(domain)
    typed = {name: "double" for name, col in schema.columns.items()
             if col.coerce and str(col.dtype).startswith(("float", "int"))}
    keep = [c for c in raw_columns if c not in ("USUBJID", "SUBJID")]
    absent = [c for c in schema.columns if c not in raw_columns and c != "USUBJID"]
    select = [F.col("SUBJECT_KEY")] + [F.col(c).try_cast(typed[c]).alias(c) if c in typed else F.col(c) for c in keep]
    select += [F.lit(None).cast("double" if c in typed or str(schema.columns[c].dtype).startswith("float") else "string")
               .alias(c) for c in absent]
    return split.where(F.col(RULES).isNull()).select(*select), absent


@dataclass(frozen=True)
class SparkSplit:
    raw: int
    validated: int
    quarantined: int
    subjects: int
    rules: dict[str, int]
    absent_columns: list[str]
    processes: int = 0  # local worker processes that validated it (the streamed path); 0 on Spark

    @property
    def score(self) -> float:
        total = self.validated + self.quarantined
        return self.validated / total if total else 1.0


def validate_findings(spark, domain: str, raw_path: Path, subjects: pd.DataFrame, cutoff: str,
                      validated_dir: Path, quarantine_dir: Path) -> SparkSplit:
    """Read the raw domain's dataset, split it, write the validated and quarantined rows as Parquet
    datasets (the caller publishes them); the counts come from what was written."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from ct_assets.core import lake

    raw = spark.read.parquet(str(raw_path))
    mapping = spark.createDataFrame(subjects.rename(columns={"USUBJID": "_USUBJID"})[["_USUBJID", "SUBJECT_KEY"]],
                                    "_USUBJID string, SUBJECT_KEY string")
    units = standard_units(raw, domain)
    # The Python pass (row rules) runs once; its output, the failing rows, is small and kept on local disk
    # for the two writes, as are the repeated keys. Both are broadcast when small (a whole domain failing a
    # frame rule is not).
    failures = row_failures(raw, domain, cutoff, units).persist(StorageLevel.DISK_ONLY)
    repeated = repeated_keys(raw, domain)
    repeated = repeated.persist(StorageLevel.DISK_ONLY) if repeated is not None else None
    try:
        small = failures.count() <= BROADCAST_ROWS
        split = split_findings(raw, mapping, domain, cutoff, units, failures, repeated, broadcast_failures=small)
        validated, absent = validated_rows(split, domain, raw.columns)
        validated.write.mode("overwrite").parquet(str(validated_dir))
        quarantined = split.where(F.col(RULES).isNotNull()).drop("SUBJECT_KEY")
        quarantined.orderBy("_SOURCE_FILE", "_SOURCE_ROW").write.mode("overwrite").parquet(str(quarantine_dir))
    finally:
        failures.unpersist()
        if repeated is not None:
            repeated.unpersist()
    # Counts from what was written: the quarantine is small, the validated rows are read one column.
    rules = (spark.read.parquet(str(quarantine_dir)).select(F.explode(F.split(RULES, "; ")).alias("rule"))
             .groupBy("rule").count().orderBy(F.desc("count"), "rule").collect())
    subjects_n = spark.read.parquet(str(validated_dir)).select(F.countDistinct("SUBJECT_KEY")).first()[0]
    return SparkSplit(raw=lake.parquet_rows(raw_path), validated=lake.parquet_rows(validated_dir),
                      quarantined=lake.parquet_rows(quarantine_dir), subjects=int(subjects_n or 0),
                      rules={r["rule"]: int(r["count"]) for r in rules}, absent_columns=absent)


def released_rows(spark, domain: str, raw_path: Path, quarantine_path: Path, subjects: pd.DataFrame, cutoff: str) -> int:
    """How many quarantined rows the rules pass today, judged in their whole domain as delivered (a
    re-check: nothing is written)."""
    from pyspark.sql import functions as F

    from ct_assets.core.sdtm import SOURCE_COLS

    raw = spark.read.parquet(str(raw_path))
    mapping = spark.createDataFrame(subjects.rename(columns={"USUBJID": "_USUBJID"})[["_USUBJID", "SUBJECT_KEY"]],
                                    "_USUBJID string, SUBJECT_KEY string")
    passing = split_findings(raw, mapping, domain, cutoff, standard_units(raw, domain), broadcast_failures=False)
    passing = passing.where(F.col(RULES).isNull())
    quarantined = spark.read.parquet(str(quarantine_path)).select(*SOURCE_COLS)
    return passing.select(*SOURCE_COLS).join(quarantined, SOURCE_COLS, "inner").count()


def anomalies_spark(findings, domain: str | None = None, z_limit: float = 6.0) -> pd.DataFrame:
    """``anomalies`` as a Spark job: ``findings`` a validated findings dataset of ``domain``, or a mapping
    of domains to datasets, all done in one pass. Each test's results meet in one Python worker, whose
    exact median and median absolute deviation are those of ``anomalies`` (numpy's); only the per-test
    table comes back."""
    from functools import reduce

    from pyspark.sql import functions as F

    parts = []
    for d, df in (findings.items() if isinstance(findings, dict) else [(domain, findings)]):
        res, test = f"{d}STRESN", f"{d}TESTCD"
        if res in df.columns and test in df.columns:
            parts.append(df.where(F.col(test).isNotNull() & F.col(res).isNotNull())
                         .select(F.concat(F.lit(f"{d}_"), F.col(test)).alias("T"), F.col(res).cast("double").alias("X")))
    if not parts:
        return pd.DataFrame(columns=["test", "results", "anomalies", "share"])

    def count(group: pd.DataFrame) -> pd.DataFrame:
        x = group["X"].to_numpy()
        return pd.DataFrame({"test": [group["T"].iat[0]], "results": [len(x)], "anomalies": [robust_outliers(x, z_limit)]})

    x = reduce(lambda a, b: a.unionByName(b), parts)
    rows = x.groupBy("T").applyInPandas(count, "test string, results long, anomalies long").collect()
    return anomaly_table([r.asDict() for r in rows])
