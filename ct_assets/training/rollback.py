"""Roll the champion back to the previous one: a single alias switch in the MLflow registry.

    python -m ct_assets.training.rollback          # or run the Dagster job rollback_champion
"""

import sys

import dagster as dg

from ct_assets.lib import registry
from ct_assets.resources import MlflowSettings


@dg.op(description="Swap aliases champion and previous_champion of the model.")
def swap_champion(context: dg.OpExecutionContext, mlflow_settings: MlflowSettings) -> None:
    old, new = registry.rollback(mlflow_settings.client(), mlflow_settings.model_name)
    context.log.warning(f"{mlflow_settings.model_name}: champion rolled back from v{old} to v{new}")
    context.add_output_metadata({"from_version": old, "to_version": new})


@dg.job(description="Roll back the champion model to the previous champion (manual).", tags={"ct/kind": "rollback"})
def rollback_champion():
    swap_champion()


def main() -> int:
    settings = MlflowSettings()
    old, new = registry.rollback(settings.client(), settings.model_name)
    print(f"{settings.model_name}: champion v{old} -> v{new} (previous_champion is now v{old})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
