"""What each KFP component does, as plain functions of paths and values.

The components in ``components.py`` are thin typed wrappers around these functions, and these
functions call the same code as the Dagster assets (``ct_assets``): validation with the pandera
schemas, the Spark visits job, the subject features, the outcome label, training, evaluation and
the registry gate. Nothing here is a second copy of that logic.

Artifacts are folders of Parquet files (one per domain) or single Parquet files; MLflow is reached
at ``tracking_uri`` (empty: ``$MLFLOW_TRACKING_URI`` or the SQLite store under ``$CT_HOME``).
"""

from ct_kfp.steps.common import read_json, tracking_uri, write_json, write_text
from ct_kfp.steps.data import engineer_features, process_visits, validate_study
from ct_kfp.steps.deployment import canary_check, deploy, holdout_ab_test, promote_canary, rollback_canary, routed_to_challenger
from ct_kfp.steps.hpo import SEARCH_SPACE, hpo_compare, hpo_select, hpo_start, hpo_trial, in_search_order, select_one_se
from ct_kfp.steps.models import DEFAULT_PARAMS, cv_score, evaluate, evaluation_markdown, params_of, register, roc_points, train

__all__ = ["DEFAULT_PARAMS", "SEARCH_SPACE", "canary_check", "cv_score", "deploy", "engineer_features", "evaluate",
           "evaluation_markdown", "holdout_ab_test", "hpo_compare", "hpo_select", "hpo_start", "hpo_trial",
           "in_search_order", "params_of", "process_visits", "promote_canary", "read_json", "register", "roc_points",
           "rollback_canary", "routed_to_challenger", "select_one_se", "tracking_uri", "train", "validate_study",
           "write_json", "write_text"]
