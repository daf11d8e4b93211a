"""SDTM rules as pandera schemas: one per domain, built for the study at hand.

These schemas are the single statement of what a valid row is. The validation assets use them to
split each raw domain into accepted and quarantined rows, the asset checks use them again on the
validated output, and CI runs them on fixtures. They encode SDTM conventions only, never one
study's subjects, tests or visits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pandas as pd
import pandera.pandas as pa

from ct_assets.lib.sdtm import FINDINGS_DOMAINS
from spark.visits import UNIT_CONVERSIONS

TESTCD_RE = r"^[A-Z][A-Z0-9_]{0,7}$"  # SDTM --TESTCD: max 8 chars, starts with a letter
ISO8601_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?)?)?)?$")

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


def iso8601(series: pd.Series) -> pd.Series:
    """ISO 8601 date/time, partial dates allowed (SDTM), and a real calendar date when complete."""
    text = series.astype(str)
    shaped = text.str.match(ISO8601_RE)
    full = text.str.len() >= 10
    parsed = pd.to_datetime(text.where(full).str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    return shaped & (~full | parsed.notna())


def _dtc_column(nullable: bool = True, required: bool = True) -> pa.Column:
    return pa.Column(
        str,
        pa.Check(iso8601, name="iso8601", error="not an ISO 8601 date"),
        nullable=nullable,
        required=required,
    )


def _keys(domain: str, known_subjects: Iterable[str] | None) -> dict[str, pa.Column]:
    subject_checks = [pa.Check.str_length(min_value=1, name="subject_id_present")]
    if known_subjects is not None:
        subject_checks.append(
            pa.Check.isin(sorted(set(known_subjects)), name="subject_in_dm", error="subject not in DM")
        )
    return {
        "STUDYID": pa.Column(str, pa.Check.str_length(min_value=1)),
        "DOMAIN": pa.Column(str, pa.Check.eq(domain, name="domain_code")),
        "USUBJID": pa.Column(str, subject_checks),
    }


def _seq(domain: str) -> pa.Column:
    return pa.Column(float, pa.Check.ge(0), coerce=True, nullable=False, required=False, name=f"{domain}SEQ")


def _findings_range_check(domain: str) -> pa.Check:
    testcd, res, unit = f"{domain}TESTCD", f"{domain}STRESN", f"{domain}STRESU"

    def plausible(df: pd.DataFrame) -> pd.Series:
        value = pd.to_numeric(df[res], errors="coerce")
        units = df[unit] if unit in df.columns else pd.Series(None, index=df.index, dtype=object)
        bounds = pd.Series(list(zip(df[testcd], units)), index=df.index).map(PLAUSIBLE_RANGES)
        lo = bounds.map(lambda b: b[0] if isinstance(b, tuple) else float("-inf"))
        hi = bounds.map(lambda b: b[1] if isinstance(b, tuple) else float("inf"))
        finite = value.isna() | value.abs().lt(float("inf"))
        return value.isna() | (finite & value.between(lo, hi))

    return pa.Check(plausible, name="plausible_range", error=f"{res} outside plausible range for test and unit")


def _findings_result_check(domain: str) -> pa.Check:
    res_n, res_c, stat = f"{domain}STRESN", f"{domain}STRESC", f"{domain}STAT"

    def result_present(df: pd.DataFrame) -> pd.Series:
        present = df[res_n].notna()
        if res_c in df.columns:
            present |= df[res_c].notna()
        if stat in df.columns:
            present |= df[stat].eq(NOT_DONE)
        return present

    return pa.Check(result_present, name="result_present", error="no result and not marked NOT DONE")


def _findings_unit_check(domain: str) -> pa.Check:
    """Standardised results use one unit per test (after the known conversions processing applies):
    a row in any other unit cannot be compared with the rest."""
    testcd, res, unit = f"{domain}TESTCD", f"{domain}STRESN", f"{domain}STRESU"

    def one_unit(df: pd.DataFrame) -> pd.Series:
        if unit not in df.columns:
            return pd.Series(True, index=df.index)
        has = df[res].notna() & df[unit].notna()
        standard = df[unit].map(lambda u: UNIT_CONVERSIONS.get(u, (u,))[0])
        modal = standard[has].groupby(df.loc[has, testcd]).agg(lambda s: s.mode().iat[0])
        return ~has | standard.eq(df[testcd].map(modal))

    return pa.Check(one_unit, name="standard_unit", error=f"{unit} differs from the test's standard unit")


def findings_schema(domain: str, known_subjects: Iterable[str] | None = None) -> pa.DataFrameSchema:
    d = domain
    columns = _keys(d, known_subjects) | {
        f"{d}SEQ": _seq(d),
        f"{d}TESTCD": pa.Column(str, pa.Check.str_matches(TESTCD_RE, name="testcd_format")),
        f"{d}STRESN": pa.Column(float, coerce=True, nullable=True),
        f"{d}STRESU": pa.Column(str, nullable=True, required=False),
        f"{d}STAT": pa.Column(str, pa.Check.isin([NOT_DONE]), nullable=True, required=False),
        "VISITNUM": pa.Column(float, pa.Check.ge(0), coerce=True, nullable=False),
        f"{d}DTC": _dtc_column(),
        f"{d}DY": pa.Column(float, coerce=True, nullable=True, required=False),
    }
    return pa.DataFrameSchema(
        columns,
        checks=[_findings_result_check(d), _findings_range_check(d), _findings_unit_check(d)],
        unique=["USUBJID", f"{d}SEQ"],
        report_duplicates="exclude_first",
        name=f"{d}_findings",
    )


def dm_schema() -> pa.DataFrameSchema:
    columns = _keys("DM", None) | {
        "USUBJID": pa.Column(str, pa.Check.str_length(min_value=1), unique=True, report_duplicates="exclude_first"),
        "RFSTDTC": _dtc_column(),
        "RFENDTC": _dtc_column(required=False),
        "AGE": pa.Column(float, pa.Check.in_range(0, 120), coerce=True, nullable=True),
        "SEX": pa.Column(str, pa.Check.isin(["M", "F", "U", "UNDIFFERENTIATED"])),
        "ARMCD": pa.Column(str, nullable=True, required=False),
    }
    return pa.DataFrameSchema(columns, name="DM")


def events_schema(domain: str, known_subjects: Iterable[str] | None = None) -> pa.DataFrameSchema:
    """AE (adverse events), DS (disposition), EX (exposure): one row per event or interval."""
    d = domain
    columns = _keys(d, known_subjects) | {
        f"{d}SEQ": _seq(d),
        f"{d}STDTC": _dtc_column(),
        f"{d}STDY": pa.Column(float, coerce=True, nullable=True, required=False),
    }
    if d == "AE":
        columns |= {
            "AEDECOD": pa.Column(str, nullable=False),
            "AESER": pa.Column(str, pa.Check.isin(["Y", "N"]), nullable=True, required=False),
            "AESEV": pa.Column(str, pa.Check.isin(["MILD", "MODERATE", "SEVERE"]), nullable=True, required=False),
            "AEENDTC": _dtc_column(required=False),
        }
    elif d == "DS":
        columns |= {"DSDECOD": pa.Column(str, nullable=False)}
    elif d == "EX":
        columns |= {
            "EXTRT": pa.Column(str, nullable=False),
            "EXDOSE": pa.Column(float, pa.Check.ge(0), coerce=True, nullable=True, required=False),
            "EXENDTC": _dtc_column(required=False),
            "EXENDY": pa.Column(float, coerce=True, nullable=True, required=False),
        }
    return pa.DataFrameSchema(
        columns, unique=["USUBJID", f"{d}SEQ"], report_duplicates="exclude_first", name=d
    )


def sv_schema(known_subjects: Iterable[str] | None = None) -> pa.DataFrameSchema:
    columns = _keys("SV", known_subjects) | {
        "VISITNUM": pa.Column(float, pa.Check.ge(0), coerce=True),
        "SVSTDTC": _dtc_column(),
        "SVSTDY": pa.Column(float, coerce=True, nullable=True, required=False),
    }
    return pa.DataFrameSchema(columns, unique=["USUBJID", "VISITNUM"], report_duplicates="exclude_first", name="SV")


def domain_schema(domain: str, known_subjects: Iterable[str] | None = None) -> pa.DataFrameSchema:
    """The schema for ``domain``; ``known_subjects`` (DM's USUBJIDs) adds the cross-domain rule."""
    if domain == "DM":
        return dm_schema()
    if domain in FINDINGS_DOMAINS:
        return findings_schema(domain, known_subjects)
    if domain == "SV":
        return sv_schema(known_subjects)
    return events_schema(domain, known_subjects)


def required_columns(domain: str) -> list[str]:
    schema = domain_schema(domain)
    return [name for name, col in schema.columns.items() if col.required]


def all_columns(domain: str) -> list[str]:
    return list(domain_schema(domain).columns)


# Outputs downstream of validation: pseudonymised, one row per subject.
SUBJECT_KEY_RE = r"^S-[0-9a-f]{20}$"

FEATURES_SCHEMA = pa.DataFrameSchema(
    {
        "SUBJECT_KEY": pa.Column(str, pa.Check.str_matches(SUBJECT_KEY_RE), unique=True),
        "AGE": pa.Column(float, nullable=True),
        "SEX": pa.Column(str, nullable=True),
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
