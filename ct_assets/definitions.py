"""The main code location. Its assets, checks, jobs, schedules and sensors are autoloaded from the
``ct_assets/defs`` folder (Dagster's project layout, see ``[tool.dg]`` in pyproject.toml); this module adds
the resources of the deployment and the executor.

    dg check defs                  # loads this module, as `dagster dev` and `dg dev` do
    dg list defs                   # what the folder defines

The folder is loaded with ``load_definitions_from_package_module``: the same autoloading as
``load_from_defs_folder`` for a folder of Python modules (no component YAML here), without the components
machinery's 0.2 s on every load of the code location (benchmarks/load_time.py), and without needing
pyproject.toml beside an installed package.
"""

import warnings

import dagster as dg

import ct_assets.defs
from ct_assets.defs.profiles import profile_resources


def _autoloaded() -> dg.Definitions:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # said here, not on every `dagster` command
        return dg.load_definitions_from_package_module(ct_assets.defs)


defs = dg.Definitions.merge(
    _autoloaded(),
    dg.Definitions(
        resources=profile_resources(),
        # One process per run: a step costs ~50 ms instead of ~1.6 s of process spawn, and the Spark
        # session is shared by the run.
        executor=dg.in_process_executor,
    ),
)
