"""Split a raw domain into accepted and quarantined rows, keeping every row and why it failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:  # pandera loads on use: the code location must not pay for it
    import pandera.pandas as pa

REASON = "_QUARANTINE_REASON"
RULES = "_QUARANTINE_RULES"


@dataclass(frozen=True)
class Split:
    accepted: pd.DataFrame
    quarantined: pd.DataFrame

    @property
    def score(self) -> float:
        """Share of rows accepted (1.0 for an empty domain: nothing was lost)."""
        total = len(self.accepted) + len(self.quarantined)
        return len(self.accepted) / total if total else 1.0

    def rule_counts(self) -> dict[str, int]:
        if self.quarantined.empty:
            return {}
        return self.quarantined[RULES].str.split("; ").explode().value_counts().to_dict()


def _describe(row: pd.Series) -> str:
    """'COLUMN: rule' for a column check; just the rule for a check over whole rows."""
    check = str(row["check"])
    if row["schema_context"] == "DataFrameSchema" and check != "multiple_fields_uniqueness":
        return check
    return f"{row['column']}: {check}" if isinstance(row["column"], str) else check


def _frame_level_failures(cases: pd.DataFrame) -> list[str]:
    frame = cases[cases["index"].isna()]
    return sorted({f"{_describe(r)} ({r['failure_case']})" for _, r in frame.iterrows()})


# Text that pandas would silently read as a missing or infinite number: in a delivery it is a
# value someone typed, not an empty cell, so it is quarantined rather than taken as missing.


def _text_non_numbers(df: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """(index, rule) pairs, 'COLUMN: not_numeric', for numeric columns holding text like "NaN" or "inf"."""
    from ct_assets.core.schemas import NON_NUMBERS

    found = []
    for name, col in schema.columns.items():
        if name in df.columns and (df[name].dtype == object or isinstance(df[name].dtype, pd.StringDtype)) \
                and col.coerce and str(col.dtype).startswith(("float", "int")):
            values = df[name]
            text = values if values.dtype != object else values.where(values.map(lambda v: isinstance(v, str)))
            bad = df.index[text.str.strip().str.lower().isin(NON_NUMBERS)]
            found.append(pd.DataFrame({"index": bad, "rule": f"{name}: not_numeric"}))
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=["index", "rule"])


def _row_rules(rules: pd.Series) -> str:
    """A row's failed rules, joined; an exact repeat of an earlier row is reported as the repeat it is, not also
    as a second version of its key."""
    from ct_assets.core.schemas import REPEATED_ROW_RULE, UNIQUENESS

    found = set(rules)
    if REPEATED_ROW_RULE in found:
        found = {r for r in found if not r.endswith(UNIQUENESS)}
    return "; ".join(sorted(found))


def split_valid(df: pd.DataFrame, schema: pa.DataFrameSchema, coerce_accepted: bool = True) -> Split:
    """Validate ``df`` lazily; rows named in the failure cases are quarantined with their rules.

    Failures that name no row (a required column missing, say) quarantine the whole domain with
    that reason, rather than dropping it or failing the run without a trace. ``coerce_accepted=False``
    returns the accepted rows as given (Spark applies the schema's types itself).
    """
    from pandera.errors import SchemaErrors

    df = df.reset_index(drop=True)
    empty_q = df.iloc[0:0].assign(**{REASON: pd.Series(dtype=str), RULES: pd.Series(dtype=str)})
    non_numbers = _text_non_numbers(df, schema)
    try:
        accepted = schema.validate(df, lazy=True)
        if non_numbers.empty:
            return Split(accepted if coerce_accepted else df, empty_q)
        cases = pd.DataFrame(columns=["index", "check", "column", "schema_context", "failure_case"])
    except SchemaErrors as err:
        cases = err.failure_cases

    frame_failures = _frame_level_failures(cases)
    if frame_failures:
        reason = "; ".join(frame_failures)
        quarantined = df.assign(**{REASON: reason, RULES: "; ".join(sorted({f.split(" (")[0] for f in frame_failures}))})
        return Split(df.iloc[0:0], quarantined)

    row_cases = cases[cases["index"].notna()].copy()
    row_cases["index"] = row_cases["index"].astype(int)
    row_cases["rule"] = row_cases.apply(_describe, axis=1) if len(row_cases) else pd.Series(dtype=str)
    row_rules = pd.concat([row_cases[["index", "rule"]], non_numbers])
    rules = row_rules.groupby("index")["rule"].agg(_row_rules)
    bad = df.index.isin(rules.index)
    quarantined = df[bad].assign(**{RULES: rules, REASON: rules.map(lambda r: f"failed: {r}")})
    accepted = df[~bad]
    if not coerce_accepted:
        return Split(accepted, quarantined)
    # The accepted rows must now pass on their own; this also applies the schema's coercions.
    return Split(schema.validate(accepted, lazy=True), quarantined)


@dataclass(frozen=True)
class DomainResult:
    validated: pd.DataFrame  # accepted rows, pseudonymised (SUBJECT_KEY instead of USUBJID)
    quarantined: pd.DataFrame  # failed rows with their rules, raw ids kept for the site to fix them
    score: float
    rules: dict[str, int]
    absent_columns: list[str]  # optional SDTM columns the delivery lacks, added as nulls


def accepted_subjects(raw_dm: pd.DataFrame, validated_dm: pd.DataFrame) -> set[str]:
    """Raw ids of the subjects whose DM row passed validation: a subject quarantined in DM is unknown."""
    from ct_assets.core.privacy import SUBJECT_KEY, pseudonymise

    ids = raw_dm["USUBJID"].dropna().astype(str).drop_duplicates()
    return set(ids[pseudonymise(ids).isin(set(validated_dm[SUBJECT_KEY]))])


def validate_domain(domain: str, raw: pd.DataFrame, known_subjects=None, cutoff: str | None = None) -> DomainResult:
    """One SDTM domain through its schema; ``known_subjects`` are the raw ids of DM's accepted subjects
    (None for DM itself); dates after ``cutoff`` (default: the data cut-off setting) are quarantined."""
    from ct_assets.core.privacy import SPLIT_BUCKET, replace_subject_ids, split_bucket
    from ct_assets.core.schemas import conform, domain_schema

    split = split_valid(raw, domain_schema(domain, known_subjects, cutoff))
    accepted, absent = conform(split.accepted, domain)
    if domain == "DM":
        accepted = accepted.assign(**{SPLIT_BUCKET: split_bucket(accepted["USUBJID"])})
    return DomainResult(replace_subject_ids(accepted), split.quarantined, split.score, split.rule_counts(), absent)


def reconciles(raw: pd.DataFrame, result: DomainResult) -> bool:
    """Nothing lost, nothing twice: every raw row is either validated or quarantined."""
    return len(result.validated) + len(result.quarantined) == len(raw)


def validate_study(raw: dict[str, pd.DataFrame | None], cutoff: str | None = None) -> dict[str, DomainResult]:
    """Every domain a study has, DM first (a row's subject must have passed DM validation); a domain
    that does not reconcile is a bug, not a data problem, and raises."""
    results: dict[str, DomainResult] = {}
    known = None
    for domain in ["DM"] + [d for d in raw if d != "DM"]:
        frame = raw.get(domain)
        if frame is None:
            continue
        results[domain] = result = validate_domain(domain, frame, known, cutoff)
        if not reconciles(frame, result):
            raise AssertionError(f"{domain}: rows do not reconcile")
        if domain == "DM":
            known = accepted_subjects(frame, result.validated)
    return results


def arrow_strings(kind):
    """``types_mapper`` for ``to_pandas``: text as pandas' Arrow-backed strings."""
    import pandas as pd
    import pyarrow as pa

    return pd.StringDtype("pyarrow") if kind in (pa.string(), pa.large_string()) else None
