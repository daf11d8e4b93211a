"""A study folder judged by the rules of the validated assets, without Dagster: what ``ct validate`` reports.

Each domain is read as the raw assets read it (``sdtm.write_domain_dataset``: every format and encoding,
row provenance) into a scratch folder, then split by the code the validation assets run: ``validate_domain``
for DM and the event domains, ``validate_stream`` (worker processes, bounded memory) for the findings
domains. Nothing is kept: the report holds counts, rule ids and the source file and row of a few
quarantined rows per rule, never a subject id or a value.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ct_assets.core import rules as catalogue
from ct_assets.core.sdtm import DOMAINS, FINDINGS_DOMAINS, SOURCE_COLS, StudyFileError
from ct_assets.engines.pandas import REASON, RULES

EXAMPLES = 3  # quarantined rows shown per rule
UNLISTED = "unlisted"  # the id reported for a failure the catalogue does not name


@dataclass
class RuleOutcome:
    id: str
    statement: str
    severity: str
    rows: int  # rows that broke it (for a warning: values or columns it notes)
    core: str = ""
    failures: dict[str, int] = field(default_factory=dict)  # how it failed (column and check) -> rows
    examples: list[dict] = field(default_factory=list)  # {"file", "row" (1-based, header not counted), "failed"}


@dataclass
class DomainReport:
    domain: str
    files: list[str] = field(default_factory=list)
    encodings: dict[str, str] = field(default_factory=dict)  # how each file was read: parquet, or a text encoding
    rows: int = 0
    accepted: int = 0
    quarantined: int = 0
    rules: list[RuleOutcome] = field(default_factory=list)  # every applicable rule, broken or not
    absent_columns: list[str] = field(default_factory=list)
    partial_dates: int = 0
    engine: str = ""
    present: bool = True
    error: str = ""  # the domain could not be read, or not judged row by row (a rule failed it whole)

    def failures(self) -> dict[str, int]:
        """Rows per failure text, as the quarantine asset's ``rules`` metadata counts them."""
        return dict(sum((Counter(r.failures) for r in self.rules if r.severity == catalogue.QUARANTINE), Counter()))


@dataclass
class StudyReport:
    study: str
    cutoff: str
    domains: list[DomainReport]

    @property
    def quarantined(self) -> int:
        return sum(d.quarantined for d in self.domains)

    @property
    def errors(self) -> list[str]:
        return [f"{d.domain}: {d.error}" for d in self.domains if d.error]

    def as_dict(self) -> dict:
        return {"study": self.study, "cutoff": self.cutoff, "quarantined": self.quarantined, "errors": self.errors,
                "domains": [asdict(d) for d in self.domains]}


@dataclass
class Scan:
    failures: Counter = field(default_factory=Counter)  # rows per failure text
    rows: Counter = field(default_factory=Counter)  # rows per rule id (a row once per rule)
    examples: dict[str, list[dict]] = field(default_factory=dict)  # the first rows per rule id
    whole: str = ""  # the reason a rule failed every row, if one did


def _rule_of(text: str) -> str:
    return catalogue.rule_id(text) or UNLISTED


def _outcomes(domain: str, scan: Scan, partial: int, absent: list[str]) -> list[RuleOutcome]:
    """Every rule of the catalogue that applies to ``domain``, broken or not; warnings count what they note."""
    from ct_assets.core.schemas import required_columns

    optional_absent = [c for c in absent if c not in required_columns(domain)]  # a Required one fails CT-xx-0013
    out = []
    for rule in catalogue.applicable(domain):
        rid = rule.id(domain)
        failures = {t: n for t, n in scan.failures.items() if catalogue.rule_id(t) == rid}
        rows = scan.rows[rid]
        if rule.number == catalogue.PARTIAL_DATES:
            rows = partial
        elif rule.number == catalogue.ABSENT_COLUMNS:
            rows, failures = len(optional_absent), {f"{c}: absent": 1 for c in optional_absent}
        out.append(RuleOutcome(rid, rule.statement, rule.severity, rows, rule.core, failures, scan.examples.get(rid, [])))
    if scan.rows[UNLISTED]:  # a failure the catalogue does not name: a bug, shown rather than hidden
        out.append(RuleOutcome(UNLISTED, "a failure the rules catalogue does not name", catalogue.QUARANTINE,
                               scan.rows[UNLISTED], "", {t: n for t, n in scan.failures.items() if not catalogue.rule_id(t)},
                               scan.examples.get(UNLISTED, [])))
    return out


def _scan_quarantine(path: Path, limit: int) -> Scan:
    """The quarantine's rows counted by failure and by rule, batch by batch and by distinct set of failures (few,
    however many rows), with the first ``limit`` rows per rule in delivery order."""
    import pyarrow.parquet as pq

    from ct_assets.core import lake

    scan, found = Scan(), {}
    for p, part in enumerate(lake.parquet_files(path)):
        for b, batch in enumerate(pq.ParquetFile(part).iter_batches(batch_size=100_000,
                                                                   columns=[*SOURCE_COLS, RULES, REASON])):
            df = batch.to_pandas()
            whole = df[REASON][~df[REASON].str.startswith("failed: ")]
            scan.whole = scan.whole or (whole.iat[0] if len(whole) else "")
            for joined, group in df.groupby(RULES, sort=False):
                texts = joined.split("; ")
                scan.failures.update({t: len(group) for t in texts})
                for rid in {_rule_of(t) for t in texts}:
                    scan.rows[rid] += len(group)
                    failed = [t for t in texts if _rule_of(t) == rid]
                    found.setdefault(rid, []).extend(
                        ((p, b, i), {"file": str(f), "row": int(r) + 1, "failed": failed})
                        for i, f, r in zip(group.index[:limit], group[SOURCE_COLS[0]][:limit], group[SOURCE_COLS[1]][:limit]))
    scan.examples = {rid: [e for _, e in sorted(rows, key=lambda x: x[0])[:limit]] for rid, rows in found.items()}
    return scan


def _judge(domain: str, raw_dir: Path, out: Path, known, cutoff: str, workers: int | None):
    """((raw, accepted, quarantined, absent columns), quarantine folder, validated folder, engine, DM's accepted
    subjects) for one landed domain; the subjects are those given, or DM's own when ``domain`` is DM."""
    import pandas as pd

    from ct_assets.core import lake
    from ct_assets.engines.pandas import accepted_subjects, validate_domain
    from ct_assets.engines.stream import validate_stream

    validated, quarantine = out / "validated" / domain, out / "quarantine" / domain
    if domain in FINDINGS_DOMAINS:  # as the validation asset with a local master
        split = validate_stream(domain, raw_dir, set(known or ()), cutoff, validated, quarantine, processes=workers)
        counts = (split.raw, split.validated, split.quarantined, split.absent_columns)
        return counts, quarantine, validated, f"streamed by {split.processes} local process(es)", known
    raw = pd.read_parquet(raw_dir)  # as the asset's input manager reads the raw dataset
    result = validate_domain(domain, raw, known, cutoff)
    lake.write_parquet(result.validated, validated / "part-00000.parquet")
    lake.write_parquet(result.quarantined, quarantine / "part-00000.parquet")
    if domain == "DM":
        known = accepted_subjects(raw, result.validated)
    counts = (len(raw), len(result.validated), len(result.quarantined), result.absent_columns)
    return counts, quarantine, validated, "pandas", known


@contextlib.contextmanager
def _throwaway_home(tmp: Path):
    """$CT_HOME in the scratch folder and a pseudonym key made for this run only (the worker processes inherit
    both): validation pseudonymises the rows it accepts, and ``ct validate`` keeps none of them, so it neither
    needs nor touches a platform's home or its key."""
    import os
    import secrets

    saved = {k: os.environ.get(k) for k in ("CT_HOME", "CT_PSEUDONYM_KEY")}
    os.environ["CT_HOME"], os.environ["CT_PSEUDONYM_KEY"] = str(tmp / "home"), secrets.token_hex(32)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def validate_folder(study_dir: Path, domains: list[str] | None = None, cutoff: str | None = None,
                    encoding: str | None = None, workers: int | None = None, examples: int = EXAMPLES,
                    scratch: Path | None = None, progress=None) -> StudyReport:
    """Judge every domain of ``study_dir`` (or ``domains``; DM is always read, since the other domains'
    subjects must have passed it) by the validated assets' rules; dates after ``cutoff`` (default: the data
    cut-off setting, else today) fail. ``scratch``: where the domains land meanwhile (default: a temporary
    folder, removed after)."""
    from ct_assets import settings
    from ct_assets.core import report as lake_report
    from ct_assets.core import sdtm

    cutoff = settings.checked_cutoff(cutoff, "the cut-off") if cutoff else settings.data_cutoff()
    wanted = [d for d in DOMAINS if domains is None or d in domains]
    reports: list[DomainReport] = []
    with tempfile.TemporaryDirectory(prefix="ct-validate-", dir=scratch) as tmp, _throwaway_home(Path(tmp)):
        out, known, dm_failed = Path(tmp), None, ""
        for domain in ["DM"] + [d for d in wanted if d != "DM"]:
            report = DomainReport(domain, files=[p.name for p in sdtm.domain_files(study_dir, domain)])
            if progress:
                progress(f"{domain}: {len(report.files)} file(s)")
            raw_dir = out / "raw" / domain
            try:
                landed = sdtm.write_domain_dataset(study_dir, domain, raw_dir, encoding)
            except StudyFileError as err:
                landed, report.error = None, str(err)
            if landed is not None:
                report.rows, report.encodings = landed[0], {r.name: r.encoding for r in landed[1]}
            if landed is None:
                report.present = bool(report.files)
                if domain == "DM":
                    dm_failed = report.error or f"the study at {study_dir} has no DM domain: subjects cannot be known"
                    report.error = dm_failed
                reports.append(report)
                continue
            if dm_failed:
                report.error = f"not judged: {dm_failed}"
                reports.append(report)
                continue
            counts, quarantine, validated, report.engine, known = _judge(domain, raw_dir, out, known, cutoff, workers)
            report.rows, report.accepted, report.quarantined, report.absent_columns = counts
            scan = _scan_quarantine(quarantine, examples)
            report.partial_dates = lake_report.partial_dates(validated)
            report.rules = _outcomes(domain, scan, report.partial_dates, report.absent_columns)
            report.error = f"not judged row by row: {scan.whole}" if scan.whole else ""
            reports.append(report)
    chosen = [r for r in reports if r.domain in wanted]
    return StudyReport(str(study_dir), cutoff, chosen)
