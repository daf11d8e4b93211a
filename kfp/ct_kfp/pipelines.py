"""The four KFP v2 pipelines. Each starts from the SDTM study, so it runs anywhere on its own.

- ``training_pipeline``: validate, engineer features, train, evaluate, register (alias challenger).
- ``hpo_pipeline``: the search space fanned out with ``dsl.ParallelFor``, gathered with
  ``dsl.Collected``, the best trial retrained and compared with the default hyperparameters on the
  holdout, registered as challenger; MLflow holds the search as a parent run with one child per trial.
- ``deployment_pipeline``: canary of the challenger at a traffic share, checked, then promoted or
  rolled back (alias switches).
- ``ab_test_pipeline``: champion against challenger on the same holdout subjects, a paired
  permutation test and a decision.
"""

from ct_kfp import components as c
from ct_kfp.steps import DEFAULT_PARAMS, SEARCH_SPACE
from kfp import dsl, kubernetes

EXPERIMENT = "adverse-event-predictor"
MODEL_NAME = "adverse-event-predictor"
PSEUDONYM_SECRET = "ct-pseudonym-key"  # kubectl create secret generic ct-pseudonym-key --from-literal=key=...


def _task(component, **arguments) -> dsl.PipelineTask:
    """Every task of these pipelines reads external data or writes to MLflow: a cached result
    would be stale or skip the write, so caching is off (on a cluster KFP caches by default)."""
    return component(**arguments).set_caching_options(enable_caching=False)


def build(retries: int = 3) -> dict:
    """The four pipelines. ``retries`` (legacy: 3, five minutes apart) applies to the tasks that talk
    to MLflow; local runs build them with 0 so that a failure shows at once."""

    def _prepare(study_dir: str, landmark_day: int, holdout_fraction: float) -> dsl.PipelineTask:
        validation = _task(c.data_validation, study_dir=study_dir)
        validation.set_display_name("validate_clinical_data")
        # Subject ids are pseudonymised here: the key comes from a Kubernetes Secret, never from the image.
        kubernetes.use_secret_as_env(validation, secret_name=PSEUDONYM_SECRET, secret_key_to_env={"key": "CT_PSEUDONYM_KEY"})
        features = _task(
            c.feature_engineering,
            validated=validation.outputs["validated"],
            landmark_day=landmark_day,
            holdout_fraction=holdout_fraction,
        )
        features.set_display_name("extract_features")
        # Spark in local mode in the pod: give it the cores and memory it needs on a cluster.
        features.set_cpu_request("2").set_memory_request("4G").set_memory_limit("8G")
        return features

    def _train_and_evaluate(training_set, params, tracking_uri: str, run_name: str, parent_run_id: str = ""):
        train = _task(
            c.train_model,
            training_set=training_set,
            params=params,
            mlflow_tracking_uri=tracking_uri,
            experiment=EXPERIMENT,
            run_name=run_name,
            parent_run_id=parent_run_id,
        )
        train.set_cpu_request("1").set_memory_request("2G")
        if retries:
            train.set_retry(num_retries=retries, backoff_duration="300s", backoff_factor=1.0)
        evaluation = _task(
            c.evaluate_model, model=train.outputs["model"], training_set=training_set, mlflow_tracking_uri=tracking_uri
        )
        return train, evaluation

    def _register(train, evaluation, training_set, tracking_uri, model_name, min_auroc, tolerance) -> dsl.PipelineTask:
        return _task(
            c.register_model,
            model=train.outputs["model"],
            training_set=training_set,
            holdout_auroc=evaluation.outputs["Output"],
            mlflow_tracking_uri=tracking_uri,
            model_name=model_name,
            min_auroc=min_auroc,
            tolerance=tolerance,
        )

    @dsl.pipeline(name="ct-training", description="Validate the study, build features, train, evaluate and register.")
    def training_pipeline(
        study_dir: str = "",
        mlflow_tracking_uri: str = "",
        model_name: str = MODEL_NAME,
        params: dict = DEFAULT_PARAMS,
        landmark_day: int = 30,
        holdout_fraction: float = 0.25,
        min_auroc: float = 0.6,
        tolerance: float = 0.0,
    ) -> bool:
        features = _prepare(study_dir, landmark_day, holdout_fraction)
        training_set = features.outputs["training_set"]
        train, evaluation = _train_and_evaluate(training_set, params, mlflow_tracking_uri, "kfp-training")
        register = _register(train, evaluation, training_set, mlflow_tracking_uri, model_name, min_auroc, tolerance)
        return register.outputs["Output"]

    @dsl.pipeline(name="ct-hpo", description="Grid search with ParallelFor/Collected; the best trial against the defaults.")
    def hpo_pipeline(
        study_dir: str = "",
        mlflow_tracking_uri: str = "",
        model_name: str = MODEL_NAME,
        search_space: list = SEARCH_SPACE,
        default_params: dict = DEFAULT_PARAMS,
        landmark_day: int = 30,
        holdout_fraction: float = 0.25,
        min_auroc: float = 0.6,
        tolerance: float = 0.0,
    ) -> dict:
        features = _prepare(study_dir, landmark_day, holdout_fraction)
        training_set = features.outputs["training_set"]
        start = _task(c.hpo_start, mlflow_tracking_uri=mlflow_tracking_uri, experiment=EXPERIMENT, search_space=search_space)
        parent = start.outputs["Output"]
        with dsl.ParallelFor(search_space, parallelism=2) as point:
            trial = _task(
                c.hpo_trial,
                training_set=training_set,
                params=point,
                mlflow_tracking_uri=mlflow_tracking_uri,
                search=start.outputs["search"],
            )
        select = _task(
            c.hpo_select,
            trials=dsl.Collected(trial.outputs["Output"]),
            search_space=search_space,
            mlflow_tracking_uri=mlflow_tracking_uri,
            parent_run_id=parent,
        )
        best, best_eval = _train_and_evaluate(training_set, select.outputs["Output"], mlflow_tracking_uri, "hpo-best", parent)
        _, default_eval = _train_and_evaluate(training_set, default_params, mlflow_tracking_uri, "hpo-default", parent)
        compare = _task(
            c.hpo_compare,
            best_auroc=best_eval.outputs["Output"],
            default_auroc=default_eval.outputs["Output"],
            mlflow_tracking_uri=mlflow_tracking_uri,
            parent_run_id=parent,
        )
        _register(best, best_eval, training_set, mlflow_tracking_uri, model_name, min_auroc, tolerance)
        return compare.outputs["Output"]

    @dsl.pipeline(
        name="ct-deployment", description="Canary: the challenger at a traffic share, checked, promoted or rolled back."
    )
    def deployment_pipeline(
        study_dir: str = "",
        mlflow_tracking_uri: str = "",
        model_name: str = MODEL_NAME,
        traffic_share: float = 0.1,
        endpoint: str = "adverse-event-predictor",
        tolerance: float = 0.0,
        landmark_day: int = 30,
        holdout_fraction: float = 0.25,
    ) -> str:
        features = _prepare(study_dir, landmark_day, holdout_fraction)
        deploy = _task(
            c.deploy_model,
            model_name=model_name,
            mlflow_tracking_uri=mlflow_tracking_uri,
            traffic_share=traffic_share,
            endpoint=endpoint,
        )
        check = _task(
            c.canary_check,
            deployment=deploy.outputs["deployment"],
            training_set=features.outputs["training_set"],
            mlflow_tracking_uri=mlflow_tracking_uri,
            tolerance=tolerance,
        )
        with dsl.If(check.outputs["Output"] == "promote"):
            _task(c.promote_model, deployment=deploy.outputs["deployment"], mlflow_tracking_uri=mlflow_tracking_uri)
        with dsl.Else():
            _task(c.rollback_model, deployment=deploy.outputs["deployment"], mlflow_tracking_uri=mlflow_tracking_uri)
        return check.outputs["Output"]

    @dsl.pipeline(name="ct-ab-test", description="Champion against challenger on the same subjects: test and decision.")
    def ab_test_pipeline(
        study_dir: str = "",
        mlflow_tracking_uri: str = "",
        model_name: str = MODEL_NAME,
        alpha: float = 0.05,
        n_resamples: int = 2000,
        landmark_day: int = 30,
        holdout_fraction: float = 0.25,
    ) -> str:
        features = _prepare(study_dir, landmark_day, holdout_fraction)
        test = _task(
            c.ab_test,
            training_set=features.outputs["training_set"],
            mlflow_tracking_uri=mlflow_tracking_uri,
            model_name=model_name,
            alpha=alpha,
            n_resamples=n_resamples,
        )
        return test.outputs["Output"]

    return {"training": training_pipeline, "hpo": hpo_pipeline, "deployment": deployment_pipeline, "ab_test": ab_test_pipeline}


PIPELINES = build()
training_pipeline, hpo_pipeline = PIPELINES["training"], PIPELINES["hpo"]
deployment_pipeline, ab_test_pipeline = PIPELINES["deployment"], PIPELINES["ab_test"]
