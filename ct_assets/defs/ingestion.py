"""Raw SDTM domains, read from the study source as they are (plus row provenance).

Each domain lands as a Parquet dataset in the raw zone of the lake, its files side by side (one per core),
each batch by batch (memory does not grow with the study), and published atomically: assets downstream get its
location, never the rows.
"""


import dagster as dg

from ct_assets.core import lake as lake_files
from ct_assets.core.sdtm import DOMAINS, SOURCE_COLS, StudyFileError
from ct_assets.defs import keys
from ct_assets.defs.resources import Lake, StudySource

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
        kinds={"pyarrow", "parquet"},
        description=f"SDTM {domain} ({DOMAIN_TITLES.get(domain, domain)}) as delivered by the study, untouched.",
    )
    def _raw(context: dg.AssetExecutionContext, study: StudySource, lake: Lake) -> dg.Output:
        link = lake.path_for(keys.raw(domain).path[-1])
        version = lake_files.new_version_dir(link)
        try:
            landed = study.write_dataset(domain, version)
        except StudyFileError as err:
            lake_files.discard(version)
            raise dg.Failure(description=str(err), allow_retries=False) from None
        present = landed is not None
        if landed is None:
            if domain == "DM":
                lake_files.discard(version)
                raise dg.Failure(description=f"DM: the study at {study.path()} has no DM domain (dm.parquet, dm.csv "
                                             "or dm.xpt): subjects cannot be known", allow_retries=False)
            import pandas as pd

            from ct_assets.core.schemas import all_columns

            context.log.warning(f"study has no {domain} domain: downstream assets run on what it has")
            empty = pd.DataFrame({c: pd.Series(dtype=object) for c in all_columns(domain) + SOURCE_COLS})
            lake_files.write_parquet(empty, version / "part-00000.parquet")
            rows, reads = 0, []
        else:
            rows, reads = landed
        lake_files.publish_dir(version, link)
        ignored = study.ignored_files()
        if present:
            from ct_assets.core import audit
            from ct_assets.core.audit import dagster_actor
            from ct_assets.core.provenance import source_digests

            digests = source_digests(study.source_files_of(domain))
            after = {"files": digests, "rows": rows}
            if domain == "DM":  # the delivery's record, once: what arrived that no domain reads
                after["ignored_files"] = ignored
            audit.record("data_delivery", domain, dagster_actor(context), f"{rows} rows ingested", after=after)
        return dg.Output(
            None,
            metadata={
                "dagster/row_count": rows,
                "present_in_study": present,
                "source_files": ", ".join(study.files(domain)) or "none",
                "encodings": ", ".join(f"{r.name}: {r.encoding}" for r in reads) or "none",
                "ignored_files": ", ".join(ignored) or "none",
                "study_dir": dg.MetadataValue.path(str(study.path())),
                "columns": len(lake_files.parquet_columns(link)),
                "fingerprint": study.fingerprint(domain),
                "path": dg.MetadataValue.path(str(link)),
            },
        )

    return _raw


raw_assets = [raw_domain_asset(d) for d in DOMAINS]
