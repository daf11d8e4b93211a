"""Raw SDTM domains, read from the study source as they are (plus row provenance)."""


import dagster as dg
import pandas as pd

from ct_assets import keys
from ct_assets.lib.sdtm import DOMAINS, SOURCE_COLS, StudyFileError
from ct_assets.resources import StudySource

DOMAIN_TITLES = {
    "DM": "demographics",
    "VS": "vital signs",
    "LB": "laboratory results",
    "AE": "adverse events",
    "DS": "disposition",
    "EX": "exposure",
    "SV": "subject visits",
}


def raw_domain_asset(domain: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=keys.raw(domain),
        group_name="ingestion",
        kinds={"pandas", "parquet"},
        description=f"SDTM {domain} ({DOMAIN_TITLES.get(domain, domain)}) as delivered by the study, untouched.",
    )
    def _raw(context: dg.AssetExecutionContext, study: StudySource) -> dg.Output[pd.DataFrame]:
        try:
            df, reads = study.read_files(domain)
        except StudyFileError as err:
            raise dg.Failure(description=str(err), allow_retries=False) from None
        present = df is not None
        if df is None:
            if domain == "DM":
                raise dg.Failure(description=f"DM: the study at {study.path()} has no DM domain (dm.parquet, dm.csv "
                                             "or dm.xpt): subjects cannot be known", allow_retries=False)
            from ct_assets.quality.schemas import all_columns

            context.log.warning(f"study has no {domain} domain: downstream assets run on what it has")
            df = pd.DataFrame({c: pd.Series(dtype=object) for c in all_columns(domain) + SOURCE_COLS})
        if present:
            from ct_assets.lib import audit
            from ct_assets.lib.audit import dagster_actor
            from ct_assets.lib.provenance import source_digests

            digests = source_digests(study.source_files_of(domain))
            audit.record("data_delivery", domain, dagster_actor(context), f"{len(df)} rows ingested",
                         after={"files": digests, "rows": len(df)})
        return dg.Output(
            df,
            metadata={
                "dagster/row_count": len(df),
                "present_in_study": present,
                "source_files": ", ".join(study.files(domain)) or "none",
                "encodings": ", ".join(f"{r.name}: {r.encoding}" for r in reads) or "none",
                "study_dir": dg.MetadataValue.path(str(study.path())),
                "columns": len(df.columns),
                "fingerprint": study.fingerprint(domain),
            },
        )

    return _raw


raw_assets = [raw_domain_asset(d) for d in DOMAINS]
