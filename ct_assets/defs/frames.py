"""`Frame`: the type asset functions give their tables, without importing pandas to say so.

Dagster evaluates an asset function's annotations when the code location loads, so annotating with
`pd.DataFrame` would import pandas (and numpy, the bulk of the load) in every `dagster` command,
every Airflow task's run worker and every reload of the UI. `Frame` checks the same thing at run
time: the value is a pandas DataFrame. Modules import pandas inside the functions that compute.
"""

import sys

import dagster as dg


def _is_frame(_context, value) -> bool:
    pandas = sys.modules.get("pandas")  # a DataFrame cannot exist unless pandas was imported
    return pandas is not None and isinstance(value, pandas.DataFrame)


Frame = dg.DagsterType(name="DataFrame", type_check_fn=_is_frame, description="A pandas DataFrame.")
