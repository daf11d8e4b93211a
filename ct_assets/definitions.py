"""The main code location. Its assets, checks, jobs, schedules and sensors are autoloaded from the
``ct_assets/defs`` folder (Dagster's project layout, see ``[tool.dg]`` in pyproject.toml); this module adds
the resources of the deployment and the executor.

    dg check defs                  # loads this module, as `dagster dev` and `dg dev` do
    dg list defs                   # what the folder defines
"""

import warnings
from pathlib import Path

import dagster as dg

import ct_assets.defs
from ct_assets.defs.resources import build_resources


def _autoloaded() -> dg.Definitions:
    with warnings.catch_warnings():
        # load_defs is the primitive under load_from_defs_folder, which needs pyproject.toml beside the package:
        # an image that installs the package (deploy/Dockerfile) has it only in the build context.
        warnings.simplefilter("ignore", DeprecationWarning)
        return dg.components.load_defs(ct_assets.defs, project_root=Path(__file__).resolve().parent.parent)


defs = dg.Definitions.merge(
    _autoloaded(),
    dg.Definitions(
        resources=build_resources(),
        # One process per run: a step costs ~50 ms instead of ~1.6 s of process spawn, and the Spark
        # session is shared by the run.
        executor=dg.in_process_executor,
    ),
)
