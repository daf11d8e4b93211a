"""SDTM rules as pandera schemas: one per domain, built for the study at hand.

These schemas are the single statement of what a valid row is. The validation assets use them to
split each raw domain into accepted and quarantined rows, the asset checks use them again on the
validated output, and CI runs them on fixtures. They encode SDTM conventions only, never one
study's subjects, tests or visits.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import pandera.pandas as pa

from ct_assets.core.sdtm import FINDINGS_DOMAINS
from ct_assets.core.values import EARLIEST_DATE, ISO8601_RE, TEXT, as_arrow_text, iso8601, within_dates  # noqa: F401  (part of the rules)
from ct_assets.settings import data_cutoff

TESTCD_RE = r"^[A-Z][A-Z0-9_]{0,7}$"  # SDTM --TESTCD: max 8 chars, starts with a letter
# Texts a numeric result column may hold that are not numbers: the row is quarantined as not_numeric.
NON_NUMBERS = {"nan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity", "na", "n/a", "null", "none"}

# Physiologically plausible bounds per (test code, standard unit). Values outside are recording
# errors, not clinical findings. Tests or units not listed are only required to be finite.
PLAUSIBLE_RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("SYSBP", "mmHg"): (40, 300),
    ("DIABP", "mmHg"): (10, 200),
    ("PULSE", "beats/min"): (20, 250),
    ("HR", "beats/min"): (20, 250),
    ("RESP", "breaths/min"): (3, 80),
    ("TEMP", "C"): (30, 45),
    ("TEMP", "F"): (86, 113),
    ("WEIGHT", "kg"): (1, 400),
    ("WEIGHT", "LB"): (2, 880),
    ("HEIGHT", "cm"): (30, 250),
    ("HEIGHT", "in"): (12, 100),
    ("BMI", "kg/m2"): (8, 90),
    ("ALB", "g/L"): (5, 80),
    ("ALP", "U/L"): (1, 5000),
    ("ALT", "U/L"): (0, 10000),
    ("AST", "U/L"): (0, 10000),
    ("BILI", "umol/L"): (0, 1000),
    ("CA", "mmol/L"): (0.5, 5),
    ("CHOL", "mmol/L"): (0.5, 30),
    ("CK", "U/L"): (0, 100000),
    ("CL", "mmol/L"): (50, 160),
    ("CREAT", "umol/L"): (5, 3000),
    ("GGT", "U/L"): (0, 5000),
    ("GLUC", "mmol/L"): (0.5, 60),
    ("K", "mmol/L"): (1, 12),
    ("PHOS", "mmol/L"): (0.1, 6),
    ("PROT", "g/L"): (10, 150),
    ("SODIUM", "mmol/L"): (90, 200),
    ("URATE", "umol/L"): (10, 2000),
    ("UREAN", "mmol/L"): (0.1, 150),
    ("HGB", "mmol/L"): (1, 15),
    ("HGB", "g/L"): (20, 250),
    ("HGB", "g/dL"): (2, 25),
    ("PLAT", "10^9/L"): (1, 2500),
    ("WBC", "10^9/L"): (0.05, 500),
    ("RBC", "10^12/L"): (0.5, 10),
}

NOT_DONE = "NOT DONE"
SUBJECT_NOT_IN_DM = "subject not in DM, or its DM record was quarantined"
# The rules that need every row of a domain at once. On Spark they run as aggregations and joins over the
# whole domain (engines/spark.py), the rest of the schema per partition; the names are pandera's.
UNIQUENESS = "multiple_fields_uniqueness"
# A row identical to an earlier one (a file or batch delivered twice) is a repeat, not a second version of its key:
# it is quarantined under this rule alone, as DM's repeats are. The check's name, and the rule as reasons carry it.
REPEATED_ROW = "repeated_row"
REPEATED_ROW_RULE = "identical to an earlier row (kept once)"


def _dtc_column(cutoff: str, nullable: bool = True, required: bool = True) -> pa.Column:
    return pa.Column(
        TEXT,
        [pa.Check(iso8601, name="iso8601", error="not an ISO 8601 date"),
         pa.Check(lambda s: within_dates(s, cutoff), name="date_in_range",
                  error=f"out of range: before {EARLIEST_DATE} or after the data cut-off {cutoff}")],
        nullable=nullable,
        required=required,
    )


def _subject_in_dm(known_subjects: Iterable[str]) -> pa.Check:
    """The row's subject passed DM validation. Each distinct id of the batch (a batch holds a few hundred subjects) is
    looked up once in a set built once: Arrow's ``is_in`` hashes its whole value set on every call (0.24 s per
    100,000-row batch against a million subjects), pandas' ``isin`` on Arrow-backed text converts it again."""
    import pyarrow

    known = frozenset(known_subjects)

    def subject_in_dm(series: pd.Series) -> pd.Series:
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(as_arrow_text(series))
        member = pyarrow.array([subject in known for subject in encoded.dictionary.to_pylist()], pyarrow.bool_())
        found = pc.fill_null(pc.take(member, encoded.indices), False)  # a missing id is no subject of DM
        return pd.Series(found.to_numpy(zero_copy_only=False), index=series.index)

    return pa.Check(subject_in_dm, name="subject_in_dm", error=SUBJECT_NOT_IN_DM)


def _keys(domain: str, known_subjects: Iterable[str] | None) -> dict[str, pa.Column]:
    subject_checks = [pa.Check.str_length(min_value=1, name="subject_id_present")]
    if known_subjects is not None:
        subject_checks.append(_subject_in_dm(known_subjects))
    return {
        "STUDYID": pa.Column(TEXT, pa.Check.str_length(min_value=1)),
        "DOMAIN": pa.Column(TEXT, pa.Check.eq(domain, name="domain_code")),
        "USUBJID": pa.Column(TEXT, subject_checks),
    }


def _seq(domain: str) -> pa.Column:
    return pa.Column(float, pa.Check.ge(0), coerce=True, nullable=False, required=False, name=f"{domain}SEQ")


def _findings_range_check(domain: str) -> pa.Check:
    testcd, res, unit = f"{domain}TESTCD", f"{domain}STRESN", f"{domain}STRESU"

    def plausible(df: pd.DataFrame) -> pd.Series:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if res not in df.columns or testcd not in df.columns:  # a missing --TESTCD fails its own rule, not this one
            return pd.Series(True, index=df.index)
        value = pd.to_numeric(df[res], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        units = as_arrow_text(df[unit]) if unit in df.columns else pa.nulls(len(df), pa.string())
        key = pc.binary_join_element_wise(as_arrow_text(df[testcd]), units, "\x1f")  # null unit: no bounds, as before
        known = list(PLAUSIBLE_RANGES)  # read at each call: a study's policy may widen a range
        at = pc.index_in(key, pa.array([f"{t}\x1f{u}" for t, u in known])).to_numpy(zero_copy_only=False)
        listed = ~np.isnan(at)
        lo, hi = np.full(len(df), -np.inf), np.full(len(df), np.inf)
        bounds = np.array([PLAUSIBLE_RANGES[k] for k in known], dtype=float).reshape(-1, 2)
        lo[listed], hi[listed] = bounds[at[listed].astype(int), 0], bounds[at[listed].astype(int), 1]
        with np.errstate(invalid="ignore"):
            ok = np.isnan(value) | (np.isfinite(value) & (value >= lo) & (value <= hi))
        return pd.Series(ok, index=df.index)

    return pa.Check(plausible, name="plausible_range", error=f"{res} outside plausible range for test and unit",
                    ignore_na=False)  # nulls pass inside the check; no frame-wide isna


def _findings_result_check(domain: str) -> pa.Check:
    res_n, res_c, stat = f"{domain}STRESN", f"{domain}STRESC", f"{domain}STAT"

    def result_present(df: pd.DataFrame) -> pd.Series:
        present = df[res_n].notna() if res_n in df.columns else pd.Series(False, index=df.index)
        if res_c in df.columns:
            present |= df[res_c].notna()
        if stat in df.columns:
            present |= df[stat].eq(NOT_DONE)
        return present

    return pa.Check(result_present, name="result_present", error="no result and not marked NOT DONE", ignore_na=False)


def standard_unit(unit: str) -> str:
    """The unit a result is compared in (after the known conversions processing applies)."""
    from ct_assets.core.units import UNIT_CONVERSIONS

    return UNIT_CONVERSIONS.get(unit, (unit,))[0]


def modal_units(counts) -> dict[str, str]:
    """Each test's standard unit from ``{(test, unit): rows}`` over the whole domain: the most common; ties go
    to the first in sort order, as pandas' ``mode`` (the Spark and the streamed validation both count)."""
    best: dict[str, tuple[int, str]] = {}
    for (test, unit), n in counts.items():
        if test not in best or (-n, unit) < (-best[test][0], best[test][1]):
            best[test] = (n, unit)
    return {test: unit for test, (_, unit) in best.items()}


def unit_rule(domain: str) -> str:
    return f"{domain}STRESU differs from the test's standard unit"


def _findings_unit_check(domain: str, standard_units: dict[str, str] | None = None) -> pa.Check:
    """Standardised results use one unit per test (after the known conversions processing applies):
    a row in any other unit cannot be compared with the rest. A test's unit is the most common one among
    its rows; ``standard_units`` gives it when the frame is only part of the domain (a Spark partition)."""
    testcd, res, unit = f"{domain}TESTCD", f"{domain}STRESN", f"{domain}STRESU"

    def one_unit(df: pd.DataFrame) -> pd.Series:
        import pyarrow as pa
        import pyarrow.compute as pc

        from ct_assets.core.units import UNIT_CONVERSIONS

        if unit not in df.columns or res not in df.columns or testcd not in df.columns:
            return pd.Series(True, index=df.index)
        # a row without a test code fails its own rule; it has no test whose unit it could differ from
        has = df[res].notna().to_numpy() & df[unit].notna().to_numpy() & df[testcd].notna().to_numpy()
        units, tests = as_arrow_text(df[unit]), as_arrow_text(df[testcd])
        converted = pc.index_in(units, pa.array(list(UNIT_CONVERSIONS), pa.string()))
        targets = pa.array([conv[0] for conv in UNIT_CONVERSIONS.values()], pa.string())
        standard = pc.coalesce(pc.take(targets, converted), units)
        if standard_units is None:  # the whole domain is here: each test's most common unit
            frame = pd.DataFrame({"t": tests.to_pandas(), "u": standard.to_pandas()})[has]
            modal = frame.groupby("t")["u"].agg(lambda s: s.mode().iat[0]).to_dict()
        else:
            modal = standard_units
        expected = pc.take(pa.array(list(modal.values()), pa.string()), pc.index_in(tests, pa.array(list(modal), pa.string())))
        same = pc.fill_null(pc.equal(standard, expected), False).to_numpy(zero_copy_only=False)
        return pd.Series(~has | same, index=df.index)

    return pa.Check(one_unit, name="standard_unit", error=unit_rule(domain), ignore_na=False)


def findings_schema(domain: str, known_subjects: Iterable[str] | None = None, cutoff: str | None = None,
                    standard_units: dict[str, str] | None = None, whole_domain: bool = True) -> pa.DataFrameSchema:
    """``whole_domain=False``: the rules one partition of the domain can judge alone (no uniqueness; the
    tests' standard units given), for Spark, which applies the rest across partitions."""
    d, cutoff = domain, cutoff or data_cutoff()
    columns = _keys(d, known_subjects) | {
        f"{d}SEQ": _seq(d),
        f"{d}TESTCD": pa.Column(TEXT, pa.Check.str_matches(TESTCD_RE, name="testcd_format")),
        f"{d}STRESN": pa.Column(float, coerce=True, nullable=True, required=False),
        f"{d}STRESU": pa.Column(TEXT, nullable=True, required=False),
        f"{d}STAT": pa.Column(TEXT, pa.Check.isin([NOT_DONE]), nullable=True, required=False),
        "VISITNUM": pa.Column(float, pa.Check.ge(0), coerce=True, nullable=False, required=False),
        f"{d}DTC": _dtc_column(cutoff, required=False),
        f"{d}DY": pa.Column(float, coerce=True, nullable=True, required=False),
    }
    return pa.DataFrameSchema(
        columns,
        checks=[_findings_result_check(d), _findings_range_check(d), _findings_unit_check(d, standard_units)]
        + ([_repeat_check()] if whole_domain else []),  # across partitions, the engines find repeats themselves
        unique=["USUBJID", f"{d}SEQ"] if whole_domain else None,
        report_duplicates="exclude_first",
        name=f"{d}_findings",
        metadata={"also_reads": [f"{d}STRESC"]},  # columns the checks read beyond the schema's own
    )


def _content_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if not c.startswith("_")]  # not the provenance of the row


def _one_version_per_subject(df: pd.DataFrame) -> pd.Series:
    """False for every copy of a subject whose DM rows disagree: no copy can be trusted over another."""
    content = _content_columns(df)
    versions = df.drop_duplicates(subset=content).groupby("USUBJID").size()
    return ~df["USUBJID"].map(versions).gt(1)


def _not_a_repeat(df: pd.DataFrame) -> pd.Series:
    """False for a row identical to an earlier one (a file delivered twice): the first is kept."""
    return ~df.duplicated(subset=_content_columns(df), keep="first")


def _repeat_check() -> pa.Check:
    return pa.Check(_not_a_repeat, name=REPEATED_ROW, error=REPEATED_ROW_RULE)


def dm_schema(cutoff: str | None = None) -> pa.DataFrameSchema:
    cutoff = cutoff or data_cutoff()
    columns = _keys("DM", None) | {
        "RFSTDTC": _dtc_column(cutoff, required=False),
        "RFENDTC": _dtc_column(cutoff, required=False),
        "AGE": pa.Column(float, pa.Check.in_range(0, 120), coerce=True, nullable=True, required=False),
        "SEX": pa.Column(TEXT, pa.Check.isin(["M", "F", "U", "UNDIFFERENTIATED"])),
        "ARMCD": pa.Column(TEXT, nullable=True, required=False),
    }
    return pa.DataFrameSchema(columns, name="DM", checks=[
        pa.Check(_one_version_per_subject, name="conflicting_dm_rows",
                 error="the subject has DM rows that disagree: every copy is quarantined"),
        _repeat_check(),
    ])


def events_schema(domain: str, known_subjects: Iterable[str] | None = None, cutoff: str | None = None) -> pa.DataFrameSchema:
    """AE (adverse events), DS (disposition), EX (exposure): one row per event or interval."""
    d, cutoff = domain, cutoff or data_cutoff()
    columns = _keys(d, known_subjects) | {
        f"{d}SEQ": _seq(d),
        f"{d}STDTC": _dtc_column(cutoff, required=False),
        f"{d}STDY": pa.Column(float, coerce=True, nullable=True, required=False),
    }
    if d == "AE":
        columns |= {
            "AEDECOD": pa.Column(TEXT, nullable=False),
            "AESER": pa.Column(TEXT, pa.Check.isin(["Y", "N"]), nullable=True, required=False),
            "AESEV": pa.Column(TEXT, pa.Check.isin(["MILD", "MODERATE", "SEVERE"]), nullable=True, required=False),
            "AEENDTC": _dtc_column(cutoff, required=False),
        }
    elif d == "DS":
        columns |= {"DSDECOD": pa.Column(TEXT, nullable=False)}
    elif d == "EX":
        columns |= {
            "EXTRT": pa.Column(TEXT, nullable=False),
            "EXDOSE": pa.Column(float, pa.Check.ge(0), coerce=True, nullable=True, required=False),
            "EXENDTC": _dtc_column(cutoff, required=False),
            "EXENDY": pa.Column(float, coerce=True, nullable=True, required=False),
        }
    return pa.DataFrameSchema(
        columns, checks=[_repeat_check()], unique=["USUBJID", f"{d}SEQ"], report_duplicates="exclude_first", name=d
    )


def sv_schema(known_subjects: Iterable[str] | None = None, cutoff: str | None = None) -> pa.DataFrameSchema:
    columns = _keys("SV", known_subjects) | {
        "VISITNUM": pa.Column(float, pa.Check.ge(0), coerce=True),
        "SVSTDTC": _dtc_column(cutoff or data_cutoff(), required=False),
        "SVSTDY": pa.Column(float, coerce=True, nullable=True, required=False),
    }
    return pa.DataFrameSchema(columns, checks=[_repeat_check()], unique=["USUBJID", "VISITNUM"],
                              report_duplicates="exclude_first", name="SV")


def domain_schema(domain: str, known_subjects: Iterable[str] | None = None, cutoff: str | None = None) -> pa.DataFrameSchema:
    """The schema for ``domain``; ``known_subjects`` (the raw ids of DM's accepted subjects) adds the
    cross-domain rule; dates after ``cutoff`` (default: the data cut-off setting, else today) fail."""
    if domain == "DM":
        return dm_schema(cutoff)
    if domain in FINDINGS_DOMAINS:
        return findings_schema(domain, known_subjects, cutoff)
    if domain == "SV":
        return sv_schema(known_subjects, cutoff)
    return events_schema(domain, known_subjects, cutoff)


def conform(df: pd.DataFrame, domain: str) -> tuple[pd.DataFrame, list[str]]:
    """Add the schema's optional columns the delivery lacks, as nulls, so that every consumer sees one
    shape; returns the frame and the columns added (for "not assessable" notes downstream).

    Only SDTMIG Required variables are required of a delivery; Expected and Permissible ones are
    used when present."""
    schema = domain_schema(domain)
    absent = [c for c, col in schema.columns.items() if c not in df.columns and c != "USUBJID"]
    dtypes = {c: "float64" if str(schema.columns[c].dtype).startswith("float") else "string" for c in absent}
    return df.assign(**{c: pd.Series(None, index=df.index, dtype=t) for c, t in dtypes.items()}), absent


def required_columns(domain: str) -> list[str]:
    schema = domain_schema(domain)
    return [name for name, col in schema.columns.items() if col.required]


def all_columns(domain: str) -> list[str]:
    return list(domain_schema(domain).columns)


# Outputs downstream of validation: pseudonymised, one row per subject.
SUBJECT_KEY_RE = r"^S-[0-9a-f]{20}$"

FEATURES_SCHEMA = pa.DataFrameSchema(
    {
        "SUBJECT_KEY": pa.Column(TEXT, pa.Check.str_matches(SUBJECT_KEY_RE), unique=True),
        "AGE": pa.Column(float, nullable=True),
        "SEX": pa.Column(TEXT, nullable=True),
        r"^.+__(baseline|last|change|slope)$": pa.Column(
            float, nullable=True, regex=True, required=False
        ),
    },
    checks=[
        pa.Check(
            lambda df: "USUBJID" not in df.columns and "SUBJID" not in df.columns,
            name="no_raw_subject_ids",
            error="raw subject identifiers must not reach the feature store",
        )
    ],
    name="subject_features",
)
