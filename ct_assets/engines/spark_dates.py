"""The SDTM date reading of ct_assets.core.dates as Spark columns: the same pattern and arithmetic, so
Spark and pandas bound a partial date alike."""

from ct_assets.core.dates import DATE_PATTERN


def spark_date_bounds(dtc):
    """``date_bounds`` as Spark columns: (earliest, latest) dates of the SDTM date column ``dtc``."""
    from pyspark.sql import functions as F

    year, month, day = (F.regexp_extract(dtc, DATE_PATTERN, i) for i in (1, 2, 3))
    padded_month = F.when(month == "", F.lit("01")).otherwise(month)
    start = F.try_to_date(F.concat_ws("-", year, padded_month, F.when(day == "", F.lit("01")).otherwise(day)), "yyyy-MM-dd")
    start = F.when(year != "", start)
    latest = (F.when(day != "", start)
              .when(month != "", F.last_day(start))
              .otherwise(F.try_to_date(F.concat_ws("-", year, F.lit("12"), F.lit("31")), "yyyy-MM-dd")))
    return start, F.when(start.isNotNull(), latest)


def spark_study_days(earliest, latest, ref_earliest, ref_latest):
    """``day_bounds``' arithmetic as Spark columns, from date bounds already computed (spark_date_bounds): (earliest,
    latest) study day (double; null when unknown). Kept apart so a job can compute the bounds once per row."""
    from pyspark.sql import functions as F

    def day(delta):
        return F.when(delta >= 0, delta + 1).otherwise(delta).cast("double")

    return day(F.datediff(earliest, ref_latest)), day(F.datediff(latest, ref_earliest))


def spark_day_bounds(dtc, reference_dtc):
    """``day_bounds`` as Spark columns: (earliest, latest) study day (double; null when unknown)."""
    return spark_study_days(*spark_date_bounds(dtc), *spark_date_bounds(reference_dtc))
