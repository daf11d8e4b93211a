"""The MLflow model registry: aliases, loading and scoring, rollback. Stages are not used
(deprecated in MLflow); a model's role is its alias."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ct_assets import settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

CHALLENGER, CHAMPION, PREVIOUS_CHAMPION = "challenger", "champion", "previous_champion"


def alias_version(client, name: str, alias: str) -> Any | None:
    import mlflow

    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def score(model_uri: str, frame: pd.DataFrame) -> np.ndarray:
    """Risk scores of a logged model, with the columns that model was trained on."""
    import mlflow

    model = mlflow.sklearn.load_model(model_uri)
    return model.predict_proba(frame.reindex(columns=list(model.feature_names_in_)))[:, 1]


def set_alias(client, name: str, alias: str, version: int | str, actor: str | None, reason: str) -> None:
    """Point ``alias`` at ``version``, and record the move (from which version, by whom, why) in the audit log."""
    from ct_assets.core import audit

    before = alias_version(client, name, alias)
    client.set_registered_model_alias(name, alias, version)
    audit.record("alias_set", f"{name}@{alias}", actor, reason, before=int(before.version) if before else None,
                 after=int(version))


MEANING = "approved for deployment"


class ApprovalRequired(PermissionError):
    """A promotion in the production profile without a recorded approval of that exact version."""


def approve(client, name: str, version: int | str, approver: str, reason: str, comment: str = "") -> dict[str, Any]:
    """Record a signed approval (approver, time, meaning) bound to the version and its provenance digest. The
    approver is the authenticated operator (the caller's to establish); free text goes in ``comment``."""
    from ct_assets.core import audit

    if not reason.strip():
        raise ValueError("an approval needs a reason")
    provenance = client.get_model_version(name, str(version)).tags.get("ct.provenance", "")
    return audit.record("approval", f"{name}/{version}", approver, reason,
                        after={"meaning": MEANING, "provenance": provenance}, comment=comment)


def require_approval(client, name: str, version: int | str, actor: str | None) -> dict[str, Any]:
    """The approval of this version with its current provenance. In the production profile one must
    have been given (``ct approve``); the embedded profile approves automatically, recorded as such."""
    from ct_assets import settings
    from ct_assets.core import audit

    provenance = client.get_model_version(name, str(version)).tags.get("ct.provenance", "")
    for entry in reversed(audit.find("approval", f"{name}/{version}")):
        if (entry.get("after") or {}).get("provenance") == provenance:
            return entry
    if settings.profile() == "production":
        raise ApprovalRequired(f"{name} version {version} has no approval for its provenance {provenance[:12] or '(none)'}: "
                               f"ct approve {name} {version} --reason '...'")
    return audit.record("approval", f"{name}/{version}", "auto (embedded profile)", "embedded profile: no approver",
                        after={"meaning": MEANING, "provenance": provenance})


def promote(client, name: str, version: int | str, actor: str | None = None, reason: str = "champion gate passed") -> Any | None:
    """Make ``version`` champion (it must be approved: ``require_approval``); the replaced champion keeps
    alias previous_champion. Every alias move is in the audit log with its actor."""
    require_approval(client, name, version, actor)
    previous = alias_version(client, name, CHAMPION)
    if previous is not None and str(previous.version) != str(version):
        set_alias(client, name, PREVIOUS_CHAMPION, previous.version, actor, f"replaced by version {version}")
    set_alias(client, name, CHAMPION, version, actor, reason)
    return previous


def rollback(client, name: str, reason: str, actor: str | None = None) -> tuple[int, int]:
    """Swap champion and previous_champion: one alias switch back to the last good model. A rollback
    must say why."""
    if not reason or not reason.strip():
        raise ValueError("a rollback needs a reason")
    current = alias_version(client, name, CHAMPION)
    previous = alias_version(client, name, PREVIOUS_CHAMPION)
    if current is None or previous is None:
        raise RuntimeError(f"{name}: no previous champion recorded, nothing to roll back to")
    set_alias(client, name, CHAMPION, previous.version, actor, f"rollback: {reason}")
    set_alias(client, name, PREVIOUS_CHAMPION, current.version, actor, f"rollback: {reason}")
    return int(current.version), int(previous.version)


def routes_to_challenger(subject_key: str, share: float) -> bool:
    """Sticky routing: a subject's arm depends only on its pseudonym, so the model server and the
    canary check of the deployment pipeline send the same subjects to the challenger; a bigger
    share keeps the subjects a smaller one had."""
    import hashlib

    return int(hashlib.sha256(f"canary:{subject_key}".encode()).hexdigest()[:8], 16) % 10_000 < share * 10_000


def inference_service(endpoint: str, storage_uri: str, canary_percent: int | None) -> dict[str, Any]:
    """A KServe v1beta1 InferenceService for an MLflow model (the MLServer runtime). KServe rolls a
    canary by pointing the predictor at the new model with ``canaryTrafficPercent``; the previous
    revision keeps the rest of the traffic."""
    predictor: dict[str, Any] = {"model": {"modelFormat": {"name": "mlflow"}, "protocolVersion": "v2",
                                           "storageUri": storage_uri}}
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": endpoint, "annotations": {"serving.kserve.io/enable-prometheus-scraping": "true"}},
            "spec": {"predictor": predictor}}


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Create the experiment with its artifacts under $CT_HOME (MLflow would pick ./mlruns)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = settings.mlflow_artifact_root() if tracking_uri.startswith("sqlite") else None
    location = f"{root}/{name}" if root else None
    return client.create_experiment(name, artifact_location=location)


def point_mlflow(uri: str) -> None:
    """Point both the tracking and the registry URI of the mlflow module at ``uri``. Setting only
    the tracking URI leaves an earlier registry URI in force in a long-lived process (a code server,
    a test session): versions would be registered in one store and looked up in another."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
