"""Roll the champion back to the previous one: a single alias switch in the MLflow registry, with a
reason, recorded in the audit log with who did it.

    python -m ct_assets.defs.rollback --reason "drift alert on site 12"   # or the Dagster job rollback_champion
"""

import argparse
import sys

import dagster as dg
from pydantic import Field

from ct_assets.core import registry
from ct_assets.core.audit import dagster_actor
from ct_assets.defs.resources import MlflowSettings


class RollbackConfig(dg.Config):
    reason: str = Field(description="Why the champion is rolled back (required: it goes to the audit log).")


@dg.op(description="Swap aliases champion and previous_champion of the model.")
def swap_champion(context: dg.OpExecutionContext, config: RollbackConfig, mlflow_settings: MlflowSettings) -> None:
    old, new = registry.rollback(mlflow_settings.client(), mlflow_settings.model_name, config.reason, dagster_actor(context))
    context.log.warning(f"{mlflow_settings.model_name}: champion rolled back from v{old} to v{new}: {config.reason}")
    context.add_output_metadata({"from_version": old, "to_version": new, "reason": config.reason})


@dg.job(description="Roll back the champion model to the previous champion (manual).", tags={"ct/kind": "rollback"})
def rollback_champion():
    swap_champion()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ct_assets.defs.rollback", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    args = parser.parse_args(argv)
    settings = MlflowSettings()
    old, new = registry.rollback(settings.client(), settings.model_name, args.reason)
    print(f"{settings.model_name}: champion v{old} -> v{new} (previous_champion is now v{old})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
