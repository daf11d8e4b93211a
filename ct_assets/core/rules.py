"""The rules catalogue: every way a row of a study can fail validation, with a stable id.

The rules themselves are the pandera schemas of ``schemas.py``; this module names them. A rule is matched
by the column and check that failed (``--`` stands for the domain's prefix: ``--SEQ`` is ``VSSEQ`` in VS),
and its id is ``CT-<domain>-<number>``: the number is the rule's and never reused, so ``CT-VS-0004`` means
the same thing in every release. A quarantine reason carries the ids of the rules the row broke. Where
CDISC's conformance rules (CDISC CORE) cover the same ground, the rule gives the CORE id.

``python -m ct_assets.core.rules`` prints the catalogue as ``docs/rules.md`` holds it (a test keeps the two
equal; ``make rules-doc`` writes it).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

QUARANTINE, WARNING = "quarantine", "warning"
PARTIAL_DATES, ABSENT_COLUMNS = 15, 16  # the warnings' numbers: what they note is counted by the caller
ROW, FRAME = "row", "domain"  # what a failure takes with it: the row, or every row of the domain
SEQ_DOMAINS = ("VS", "LB", "AE", "DS", "EX")
FINDINGS = ("VS", "LB")
DATES = "SDTMIG v3.4 §4.4.1 Formats for Date/Time Variables"
RESULTS = "SDTMIG v3.4 §4.5.1 Original and Standardized Results of Findings and Tests Not Done"
IDENTIFIERS = "SDTM v2.0 Identifier Variables (Required)"


@dataclass(frozen=True)
class Rule:
    number: int  # stable: the id's last part, never reused for another rule
    checks: tuple[str, ...]  # "COLUMN:check" patterns (fnmatch; "--" the domain prefix, ":check" a whole-row check)
    statement: str
    basis: str  # the SDTM variable(s) and where the standard states it
    domains: tuple[str, ...] | None = None  # None: every domain whose schema can fail it
    core: str = ""  # the CDISC CORE rule covering the same ground
    severity: str = QUARANTINE
    scope: str = ROW

    def id(self, domain: str) -> str:
        return f"CT-{domain}-{self.number:04d}"

    def applies_to(self, domain: str) -> bool:
        return self.domains is None or domain in self.domains


CATALOGUE: tuple[Rule, ...] = (
    Rule(1, ("STUDYID:str_length", "STUDYID:not_nullable"), "STUDYID is present.", f"STUDYID; {IDENTIFIERS}"),
    Rule(2, ("DOMAIN:domain_code", "DOMAIN:not_nullable"), "DOMAIN is the dataset's domain code.",
         f"DOMAIN; {IDENTIFIERS}"),
    Rule(3, ("USUBJID:subject_id_present", "USUBJID:not_nullable"), "USUBJID is present.", f"USUBJID; {IDENTIFIERS}"),
    Rule(4, ("USUBJID:subject_in_dm",), "The subject is in DM, and its DM record passed the DM rules.",
         "USUBJID; SDTMIG v3.4 DM domain (one record per subject)", core="CORE-000201"),
    Rule(5, ("USUBJID:multiple_fields_uniqueness", "--SEQ:multiple_fields_uniqueness"),
         "USUBJID and --SEQ identify one record: a later record with the same key is quarantined, the first kept.",
         "--SEQ; SDTM v2.0 Identifier Variables (--SEQ unique within USUBJID)", domains=SEQ_DOMAINS, core="CORE-000544"),
    Rule(6, ("USUBJID:multiple_fields_uniqueness", "VISITNUM:multiple_fields_uniqueness"),
         "One SV record per subject and visit: a later record for the same visit is quarantined, the first kept.",
         "USUBJID, VISITNUM; SDTMIG v3.4 SV domain (one record per subject per actual visit)", domains=("SV",)),
    Rule(7, (":repeated_row",), "A record identical to an earlier one (a file or batch delivered twice) is kept once.",
         "all variables; SDTM datasets hold one record per key"),
    Rule(8, ("--SEQ:not_nullable", "--SEQ:greater_than_or_equal_to"), "--SEQ is present and not negative.",
         "--SEQ; SDTM v2.0 Identifier Variables", domains=SEQ_DOMAINS),
    Rule(9, ("VISITNUM:not_nullable", "VISITNUM:greater_than_or_equal_to"), "VISITNUM is present and not negative.",
         "VISITNUM; SDTM v2.0 Timing Variables"),
    Rule(10, ("*DTC:iso8601",), "Dates are ISO 8601 and real calendar dates, complete or partial (2013-12, 2013).", f"--DTC, --STDTC, --ENDTC; {DATES}"),
    Rule(11, ("*DTC:date_in_range",), "Dates fall between 1900-01-01 and the data cut-off.",
         "--DTC, --STDTC, --ENDTC; the study's data cut-off"),
    Rule(12, ("*:coerce_dtype", "*:not_numeric"),
         "Numeric variables hold numbers: text such as 'abc' (coerce_dtype) or 'NaN', 'inf', 'N/A' (not_numeric) "
         "is not a missing value.",
         "Num variables of the domain model; SDTMIG v3.4 §4.5.1"),
    Rule(13, ("*:column_in_dataframe",), "Every Required variable of the domain is delivered (missing from some of "
         "its files only, the rows of those files fail the variable's own rules).",
         "the domain model's Req variables", scope=FRAME),
    Rule(14, ("*:dtype",), "Character variables hold text (a column of numbers fails every row).",
         "Char variables of the domain model"),
    Rule(PARTIAL_DATES, ("*DTC:partial_date",), "A partial date (2013-12, 2013) is accepted and read as the interval it states.",
         "--DTC, --STDTC, --ENDTC; SDTMIG v3.4 §4.4.2 Date/Time Precision", severity=WARNING),
    Rule(ABSENT_COLUMNS, ("*:absent",), "An Expected or Permissible variable the delivery lacks is added as nulls (not assessable).",
         "the domain model's Exp and Perm variables", severity=WARNING, scope=FRAME),
    Rule(20, ("--TESTCD:testcd_format", "--TESTCD:not_nullable"),
         "--TESTCD is present: at most 8 characters, letters, digits or _, starting with a letter.",
         "--TESTCD; SDTMIG v3.4 variable-naming conventions (SAS V5 names)", domains=FINDINGS),
    Rule(21, ("--STAT:isin",), "--STAT is empty or NOT DONE.", f"--STAT; {RESULTS}", domains=FINDINGS),
    Rule(22, (":result_present",), "A result (--STRESN or --STRESC) is present, or --STAT is NOT DONE.",
         f"--STRESC, --STRESN, --STAT; {RESULTS}", domains=FINDINGS),
    Rule(23, (":plausible_range",), "--STRESN is within the physiological range of its test and standard unit.",
         "--STRESN, --STRESU; plausibility ranges of ct_assets.core.schemas", domains=FINDINGS),
    Rule(24, (":standard_unit",), "Each test has one standard unit (after the known conversions): the most common one.",
         f"--STRESU; {RESULTS}", domains=FINDINGS, core="CORE-000699"),
    Rule(30, ("AGE:in_range",), "AGE is between 0 and 120.", "AGE; SDTMIG v3.4 DM domain", domains=("DM",)),
    Rule(31, ("SEX:isin", "SEX:not_nullable"), "SEX is M, F, U or UNDIFFERENTIATED.",
         "SEX (Req); SDTMIG v3.4 DM domain, codelist SEX (C66731)", domains=("DM",)),
    Rule(32, (":conflicting_dm_rows",), "A subject's DM records agree: when they do not, every copy is quarantined.",
         "DM; SDTMIG v3.4 DM domain (one record per subject)", domains=("DM",)),
    Rule(40, ("AEDECOD:not_nullable",), "AEDECOD (the dictionary-derived term) is present.",
         "AEDECOD (Req); SDTMIG v3.4 AE domain", domains=("AE",)),
    Rule(41, ("AESER:isin",), "AESER is Y or N.", "AESER; SDTMIG v3.4 AE domain, codelist NY (C66742)", domains=("AE",)),
    Rule(42, ("AESEV:isin",), "AESEV is MILD, MODERATE or SEVERE.", "AESEV; SDTMIG v3.4 AE domain, codelist AESEV (C66769)",
         domains=("AE",)),
    Rule(43, ("DSDECOD:not_nullable",), "DSDECOD (the standardized disposition term) is present.",
         "DSDECOD (Req); SDTMIG v3.4 DS domain", domains=("DS",)),
    Rule(44, ("EXTRT:not_nullable",), "EXTRT (the treatment) is present.", "EXTRT (Req); SDTMIG v3.4 EX domain",
         domains=("EX",)),
    Rule(45, ("EXDOSE:greater_than_or_equal_to",), "EXDOSE is not negative.", "EXDOSE; SDTMIG v3.4 EX domain",
         domains=("EX",)),
)


# CDISC CORE rules near the catalogue's ground that no rule here covers yet: listed in docs/rules.md, not implied.
NOT_COVERED = {
    "CORE-000542": "--STRESC and --STRESN agree (the character result is the numeric one as text): not checked; "
                   "a result needs either, and the numeric one is used",
}


def generic(domain: str, column: str) -> str:
    """``VSSEQ`` -> ``--SEQ`` in VS: the column as the catalogue names it."""
    return "--" + column[len(domain):] if column.startswith(domain) and len(column) > len(domain) else column


def find(domain: str, column: str | None, check: str) -> Rule | None:
    """The rule a failed check belongs to: ``column`` None (or empty) for a check over whole rows."""
    keys = {f"{generic(domain, column or '')}:{check}", f"{column or ''}:{check}"}
    return next((r for r in CATALOGUE if r.applies_to(domain)
                 and any(fnmatch.fnmatchcase(k, p) for k in keys for p in r.checks)), None)


def label(domain: str, column: str | None, check: str, text: str) -> str:
    """``text`` (how the failure reads) prefixed with its rule's id: ``CT-VS-0010 VSDTC: not an ISO 8601 date``."""
    rule = find(domain, column, check)
    return f"{rule.id(domain)} {text}" if rule else text


def rule_id(text: str) -> str | None:
    """The id a labelled failure starts with, if any."""
    head = text.split(" ", 1)[0]
    return head if head.startswith("CT-") and head.count("-") == 2 else None


def by_id(rule: str) -> Rule:
    number = int(rule.rsplit("-", 1)[1])
    return next(r for r in CATALOGUE if r.number == number)


def possible_findings(domain: str) -> list[tuple[str | None, str]]:
    """Every (column, check) by which a row or the whole domain can fail validation in ``domain``, or be warned
    about, read from its schema: the checks, nulls where not allowed, numbers that are not, the key's uniqueness,
    a missing column; partial dates and absent optional columns (warnings)."""
    from ct_assets.core.schemas import domain_schema

    schema = domain_schema(domain, known_subjects=None if domain == "DM" else set(), cutoff="9999-12-31")
    found: list[tuple[str | None, str]] = [(None, c.name) for c in schema.checks]
    for name, col in schema.columns.items():
        numeric = str(col.dtype).startswith(("float", "int"))
        found += [(name, "coerce_dtype"), (name, "not_numeric")] if col.coerce and numeric else [(name, "dtype")]
        found += [] if col.nullable else [(name, "not_nullable")]
        found += [(name, c.name) for c in col.checks]
        found += [(name, "column_in_dataframe")] if col.required else [(name, "absent")]
        found += [(name, "partial_date")] if name.endswith("DTC") else []
    found += [(c, "multiple_fields_uniqueness") for c in (schema.unique or [])]
    return found


def applicable(domain: str) -> list[Rule]:
    """The catalogue's rules a row of ``domain`` can break, in number order."""
    numbers = {find(domain, c, k).number for c, k in possible_findings(domain) if find(domain, c, k)}
    return [r for r in CATALOGUE if r.number in numbers]


def markdown() -> str:
    """The catalogue as docs/rules.md holds it."""
    from ct_assets.core.sdtm import DOMAINS

    lines = [
        "# Validation rules",
        "",
        "<!-- Generated by `python -m ct_assets.core.rules` (`make rules-doc`) from ct_assets/core/rules.py; "
        "a test fails when this file is stale. -->",
        "",
        "Every rule the validated assets and `ct validate` apply, with its stable id: `CT-<domain>-<number>`. "
        "A quarantined row's `_QUARANTINE_RULES` and `_QUARANTINE_REASON` start each failure with the id "
        "(`CT-VS-0010 VSDTC: not an ISO 8601 date`). `--` stands for the domain's prefix (`--SEQ` is `VSSEQ` in VS). "
        "*Scope* says what a failure quarantines: the row, or (for a domain that cannot be judged row by row) "
        "every row of the domain. *CORE* is the CDISC CORE rule that covers the same ground, where one does.",
        "",
        "| rule | domains | statement | basis | severity | scope | CORE |",
        "|---|---|---|---|---|---|---|",
    ]
    for rule in CATALOGUE:
        domains = [d for d in DOMAINS if rule in applicable(d)]
        lines.append(f"| CT-xx-{rule.number:04d} | {', '.join(domains)} | {rule.statement} | {rule.basis} | "
                     f"{rule.severity} | {rule.scope} | {rule.core} |")
    lines += ["", "## Not covered", ""]
    lines += [f"- {core}: {what}." for core, what in NOT_COVERED.items()]
    lines += ["", "## By domain", ""]
    for d in DOMAINS:
        lines.append(f"- **{d}**: " + ", ".join(f"`{r.id(d)}`" for r in applicable(d)))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
