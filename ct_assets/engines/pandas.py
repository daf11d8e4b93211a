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


def schema_domain(schema: pa.DataFrameSchema) -> str:
    return schema.name.split("_")[0]  # "VS_findings", "DM", "AE"


def _check_names(schema: pa.DataFrameSchema) -> dict[tuple[str | None, str], str]:
    """(column, how pandera reports the check) -> the check's name; None for a check over whole rows."""
    names = {(None, c.error or c.name): c.name for c in schema.checks}
    for column, col in schema.columns.items():
        names |= {(column, c.error or c.name): c.name for c in col.checks}
    return names


def _describer(schema: pa.DataFrameSchema):
    """A failure case -> 'CT-VS-0010 COLUMN: rule' for a column check, 'CT-VS-0022 rule' for a check over whole
    rows: how the failure reads, after the id of its rule in the catalogue (core/rules.py)."""
    from ct_assets.core.rules import label

    domain, names = schema_domain(schema), _check_names(schema)

    def describe(row: pd.Series) -> str:
        check = str(row["check"])
        whole_rows = row["schema_context"] == "DataFrameSchema" and check != "multiple_fields_uniqueness"
        column = row["column"] if isinstance(row["column"], str) and not whole_rows else None
        name = names.get((column, check), check.split("(")[0])
        check = "not text" if name == "dtype" and column else check  # pandera's "dtype('str')" says less
        return label(domain, column, name, f"{column}: {check}" if column else check)

    return describe


def _frame_level_failures(cases: pd.DataFrame, describe) -> list[str]:
    frame = cases[cases["index"].isna()]
    return sorted({f"{describe(r)} ({r['failure_case']})" for _, r in frame.iterrows()})


# Text that pandas would silently read as a missing or infinite number: in a delivery it is a
# value someone typed, not an empty cell, so it is quarantined rather than taken as missing.


def _numeric_text(df: pd.DataFrame, schema: pa.DataFrameSchema) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Numeric columns delivered as text, read as numbers before the rules run (a check comparing text with a
    number would fail the whole domain); returns the frame to check and the (index, rule) pairs of the values
    that are not numbers: 'COLUMN: not_numeric' for text pandas would silently read as missing or infinite
    ("NaN", "inf"), 'COLUMN: coerce_dtype' for any other ("abc")."""
    from ct_assets.core.rules import label
    from ct_assets.core.schemas import NON_NUMBERS

    domain, found, numbers = schema_domain(schema), [], {}
    for name, col in schema.columns.items():
        values = df[name] if name in df.columns else None
        if values is None or not (values.dtype == object or isinstance(values.dtype, pd.StringDtype)) \
                or not (col.coerce and str(col.dtype).startswith(("float", "int"))):
            continue
        is_text = values.notna() if isinstance(values.dtype, pd.StringDtype) else values.map(lambda v: isinstance(v, str))
        text = values.where(is_text).astype("string").str.strip()
        numbers[name] = read = pd.to_numeric(values.where(~is_text, text.replace("", pd.NA)), errors="coerce")
        word = text.str.lower().isin(NON_NUMBERS).fillna(False).astype(bool)
        other = (values.notna() & read.isna() & ~word & text.ne("").fillna(True)).astype(bool)
        for bad, check in ((word, "not_numeric"), (other, "coerce_dtype")):
            found.append(pd.DataFrame({"index": df.index[bad.to_numpy()],
                                       "rule": label(domain, name, check, f"{name}: {check}")}))
    checked = df.assign(**numbers) if numbers else df
    return checked, (pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=["index", "rule"]))


def _row_rules(rules: pd.Series) -> str:
    """A row's failed rules, joined; an exact repeat of an earlier row is reported as the repeat it is, not also
    as a second version of its key."""
    from ct_assets.core.schemas import REPEATED_ROW_RULE, UNIQUENESS

    found = set(rules)
    if any(r.endswith(REPEATED_ROW_RULE) for r in found):
        found = {r for r in found if not r.endswith(UNIQUENESS)}
    # a value that is not a number is also missing: the not-null rule of its column adds nothing
    unread = {r.split(": ")[0].split(" ")[-1] for r in found if r.endswith((": not_numeric", ": coerce_dtype"))}
    found = {r for r in found if not (r.endswith(": not_nullable") and r.split(": ")[0].split(" ")[-1] in unread)}
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
    checked, non_numbers = _numeric_text(df, schema)
    describe = _describer(schema)
    try:
        accepted = schema.validate(checked, lazy=True)
        if non_numbers.empty:
            return Split(accepted if coerce_accepted else df, empty_q)
        cases = pd.DataFrame(columns=["index", "check", "column", "schema_context", "failure_case"])
    except SchemaErrors as err:
        cases = err.failure_cases

    frame_failures = _frame_level_failures(cases, describe)
    if frame_failures:
        reason = "; ".join(frame_failures)
        quarantined = df.assign(**{REASON: reason, RULES: "; ".join(sorted({f.split(" (")[0] for f in frame_failures}))})
        return Split(df.iloc[0:0], quarantined)

    row_cases = cases[cases["index"].notna()].copy()
    row_cases["index"] = row_cases["index"].astype(int)
    row_cases["rule"] = row_cases.apply(describe, axis=1) if len(row_cases) else pd.Series(dtype=str)
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
