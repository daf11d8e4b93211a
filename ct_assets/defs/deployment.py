"""Deployments as assets: what is served at which traffic share, and how each arm performs.

``model_deployment`` records the served versions (the registry's champion and challenger) and the
challenger's traffic share; locally it makes a running model server (``make serve``) re-read the
aliases and checks it serves them, on a cluster it writes the KServe ``InferenceService``.
``ab_test_report`` joins the server's prediction log with the labels known so far and compares the
arms. Canary promotion and rollback stay alias switches (``ct_assets.core.registry``).
"""

import json
import urllib.error
import urllib.request

import dagster as dg
import yaml
from pydantic import Field

from ct_assets import settings
from ct_assets.core import audit
from ct_assets.core.audit import dagster_actor
from ct_assets.core.privacy import SUBJECT_KEY
from ct_assets.core.registry import CHALLENGER, CHAMPION, alias_version, inference_service
from ct_assets.defs import keys
from ct_assets.defs.frames import Frame
from ct_assets.defs.metadata import table_md
from ct_assets.defs.resources import MlflowSettings


class DeploymentConfig(dg.Config):
    target: str = Field(default="local", description="'local' (the model server) or 'kserve' (write the manifest).")
    endpoint: str | None = Field(default=None, description="The local model server (default "
                                 "http://127.0.0.1:$CT_SERVING_PORT, 8000 unless set: the one `ct start` runs).")
    challenger_share: float = Field(default=0.1, description="Share of subjects the server routes to the challenger.")
    service_name: str = Field(default="adverse-event-predictor", description="KServe InferenceService name.")
    start_server: bool = Field(default=False, description="Start the local server when none answers at the endpoint "
                                                           "(it keeps running after the run; stop it by its pid).")


    def url(self) -> str:
        return (self.endpoint or f"http://127.0.0.1:{settings.service_port('serving')}").rstrip("/")


def _call(url: str, method: str = "GET", timeout: float = 10) -> dict | None:
    """A call to the model server with its bearer token (``serving_token``: $CT_SERVING_TOKEN or the
    file under $CT_HOME/secrets the server itself reads)."""
    from ct_assets.core.tokens import serving_token

    try:
        req = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method,
                                     headers={"Authorization": f"Bearer {serving_token()}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def _start_server(config: DeploymentConfig, mlflow_settings: MlflowSettings, timeout: float = 120) -> int:
    """`python -m ct_assets.serving` on the endpoint's host and port, detached; waits until ready."""
    import os
    import subprocess
    import sys
    import time
    from urllib.parse import urlparse

    url = urlparse(config.url())
    log = settings.ct_home() / "serving" / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MLFLOW_TRACKING_URI=mlflow_settings.uri())
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ct_assets.serving", "--host", url.hostname or "127.0.0.1",
                                 "--port", str(url.port or 8000), "--challenger-share", str(config.challenger_share)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while (_call(config.url() + "/ready") or {}).get("ready") is not True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise dg.Failure(f"the model server did not become ready; see {log}")
        time.sleep(0.5)
    return proc.pid


@dg.asset(
    key=keys.MODEL_DEPLOYMENT,
    group_name="deployment",
    kinds={"mlflow", "kubernetes"},
    pool="model_serving",
    deps=[keys.CHAMPION_MODEL],
    description="The deployment record: champion and challenger versions, traffic share, endpoint; a running local "
    "server is told to reload, a KServe InferenceService is written for a cluster.",
)
def model_deployment(context: dg.AssetExecutionContext, config: DeploymentConfig,
                     mlflow_settings: MlflowSettings) -> dg.Output[dict]:
    client, name = mlflow_settings.client(), mlflow_settings.model_name
    champion, challenger = alias_version(client, name, CHAMPION), alias_version(client, name, CHALLENGER)
    if champion is None:
        raise dg.Failure(f"{name} has no champion to deploy: no version passed the champion gate yet")
    record = {"model_name": name, "target": config.target, "champion_version": int(champion.version),
              "challenger_version": int(challenger.version) if challenger else None,
              "challenger_share": config.challenger_share if challenger else 0.0}
    metadata: dict = {}
    if config.target == "kserve":
        share = round(config.challenger_share * 100) if challenger and challenger.version != champion.version else None
        source = challenger.source if share is not None else champion.source
        manifest = inference_service(config.service_name, source, share)
        path = settings.ct_home() / "deploy" / f"{config.service_name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        record |= {"manifest": str(path)}
        metadata["manifest"] = dg.MetadataValue.path(str(path))
    elif config.target == "local":
        served = _call(config.url() + "/reload", "POST")
        if served is None and config.start_server:
            record["server_pid"] = _start_server(config, mlflow_settings)
            served = _call(config.url() + "/models")
            context.log.info(f"model server started at {config.url()} (pid {record['server_pid']})")
        record |= {"endpoint": config.url(), "server": "running" if served else "not running",
                   "served": served}
        if served is None:
            context.log.warning(f"no model server at {config.url()}: `make serve` starts one")
        elif served.get(CHAMPION) != int(champion.version):
            raise dg.Failure(f"the server at {config.url()} serves champion {served.get(CHAMPION)}, "
                             f"the registry says {champion.version}")
        metadata["endpoint"] = dg.MetadataValue.url(config.url())
    else:
        raise dg.Failure(f"unknown deployment target {config.target!r}: 'local' or 'kserve'")
    metadata |= {k: v for k, v in record.items() if isinstance(v, int | float | str) and k != "manifest"}
    audit.record("deployment", f"{config.target}:{config.service_name if config.target == 'kserve' else config.url()}",
                 dagster_actor(context), "the registry's champion and challenger deployed",
                 after={k: v for k, v in record.items() if isinstance(v, int | float | str | None)})
    return dg.Output(record, metadata=metadata)


class AbTestConfig(dg.Config):
    alpha: float = Field(default=0.05, description="Significance level of the test.")
    min_per_arm: int = Field(default=20, description="Labelled subjects each arm needs before a decision.")
    n_resamples: int = 2000


def served_arms_test(predictions: Frame, labels: Frame, versions: dict[str, int | None], alpha: float,
                     min_per_arm: int, n_resamples: int, seed: int = 0) -> dict:
    """Per arm of the current deployment (``versions``: alias -> version): labelled subjects, AUROC,
    Brier, mean risk; a permutation test of the AUROC difference between the arms (subjects
    reassigned between arms: each arm scored other subjects); a decision. (Champion and challenger on
    the same holdout subjects are compared by the KFP ab_test_pipeline, paired.)"""
    import numpy as np
    import pandas as pd

    from ct_assets.core import training as training_logic
    from ct_assets.core.stats import independent_auroc_test

    if not predictions.empty and "what_if" in predictions:  # features sent by a caller: not a served prediction
        predictions = predictions[predictions["what_if"] != True]  # noqa: E712 (NaN for served ones)
    if not predictions.empty:
        current = pd.Series(False, index=predictions.index)
        for alias, version in versions.items():
            current |= (predictions["alias"] == alias) & (predictions["version"] == version)
        predictions = predictions[current]
    if predictions.empty:
        return {"arms": pd.DataFrame(), "decision": "insufficient data",
                "reason": "no prediction logged for the deployed versions yet"}
    latest = predictions.sort_values("ts").drop_duplicates(["subject_key", "version"], keep="last")
    joined = latest.merge(labels, left_on="subject_key", right_on=SUBJECT_KEY, how="inner")
    rows = []
    for (alias, version), g in joined.groupby(["alias", "version"]):
        m = training_logic.binary_metrics(g[training_logic.LABEL], g["risk"].to_numpy())
        rows.append({"alias": alias, "version": int(version), "subjects": len(g), "auroc": m["auroc"],
                     "brier": m["brier"], "mean_risk": float(g["risk"].mean()), "event_rate": float(g[training_logic.LABEL].mean())})
    arms = pd.DataFrame(rows)
    by_alias = {r["alias"]: r for r in rows}
    if set(by_alias) != {CHAMPION, CHALLENGER}:
        return {"arms": arms, "decision": "insufficient data", "reason": "labelled predictions from one arm only"}
    small = [a for a, r in by_alias.items() if r["subjects"] < min_per_arm or not np.isfinite(r["auroc"])]
    if small:
        return {"arms": arms, "decision": "insufficient data",
                "reason": f"fewer than {min_per_arm} labelled subjects with both outcomes in: {', '.join(small)}"}
    arm = {a: joined[joined["alias"] == a] for a in (CHALLENGER, CHAMPION)}
    observed, p_value = independent_auroc_test(arm[CHALLENGER][training_logic.LABEL].to_numpy(), arm[CHALLENGER]["risk"].to_numpy(),
                                               arm[CHAMPION][training_logic.LABEL].to_numpy(), arm[CHAMPION]["risk"].to_numpy(),
                                               n_resamples, seed)
    if p_value < alpha:
        decision = "promote challenger" if observed > 0 else "keep champion"
    else:
        decision = "keep champion (no significant difference)"
    return {"arms": arms, "decision": decision, "auroc_difference": observed, "p_value": p_value,
            "reason": f"permutation test of AUROC(challenger) - AUROC(champion), {n_resamples} resamples"}


@dg.asset(
    key=keys.AB_TEST_REPORT,
    group_name="deployment",
    kinds={"pandas"},
    ins={"deployment": dg.AssetIn(keys.MODEL_DEPLOYMENT), "training_set": dg.AssetIn(keys.TRAINING_SET)},
    description="Champion against challenger on the predictions the server logged and the labels known since: "
    "metrics per arm, a permutation test, a decision.",
)
def ab_test_report(context: dg.AssetExecutionContext, config: AbTestConfig, deployment: dict,
                   training_set: Frame) -> dg.Output[dict]:
    import pandas as pd

    from ct_assets.core import training as training_logic

    path = settings.predictions_log()
    predictions = pd.read_json(path, lines=True) if path.exists() and path.stat().st_size else pd.DataFrame()
    versions = {CHAMPION: deployment["champion_version"], CHALLENGER: deployment["challenger_version"]}
    report = served_arms_test(predictions, training_set[[SUBJECT_KEY, training_logic.LABEL]], versions, config.alpha, config.min_per_arm,
                        config.n_resamples)
    context.log.info(f"A/B decision: {report['decision']} ({report['reason']})")
    arms = report.pop("arms")
    metadata = {"decision": report["decision"], "reason": report["reason"], "predictions_logged": len(predictions),
                "arms": table_md(arms) if len(arms) else dg.MetadataValue.md("none"),
                "champion_version": deployment["champion_version"]}
    metadata |= {k: round(report[k], 4) for k in ("auroc_difference", "p_value") if k in report}
    return dg.Output(report | {"arms": arms.to_dict(orient="records")}, metadata=metadata)
