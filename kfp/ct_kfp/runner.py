"""Run a pipeline here with ``kfp.local``, or submit it to a KFP cluster with ``kfp.Client`` and wait."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ct_assets import settings


@dataclass(frozen=True)
class KfpRun:
    run_id: str
    url: str
    state: str
    output: Any = None  # the pipeline's return value (local runs only)
    run_dir: str | None = None  # local runs: the folder holding every task's artifacts


def pipeline_root() -> Path:
    return settings.ct_home() / "kfp"


def _pipeline(name: str, retries: int = 3):
    from ct_kfp.pipelines import build

    pipelines = build(retries)
    try:
        return pipelines[name]
    except KeyError:
        raise ValueError(f"unknown pipeline {name!r}; one of {sorted(pipelines)}") from None


def run_local(name: str, arguments: dict[str, Any] | None = None, root: Path | None = None) -> KfpRun:
    """Every task as a subprocess of this Python (``SubprocessRunner(use_venv=False)``): the
    components' imports resolve to this venv, as they resolve to the image on a cluster. A failed
    task raises with the task's name; its logs are in the run folder."""
    from kfp import local

    pipeline = _pipeline(name, retries=0)  # here a failure is a bug to see at once, not a flaky service
    root = Path(root or pipeline_root())
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    before = set(root.iterdir())
    task = pipeline(**(arguments or {}))
    new = sorted(set(root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    run_dir = new[-1] if new else root
    outputs = task.outputs
    output = outputs.get("Output") if isinstance(outputs, dict) else None
    return KfpRun(run_id=run_dir.name, url=run_dir.as_uri(), state="SUCCEEDED", output=output, run_dir=str(run_dir))


def submit(name: str, arguments: dict[str, Any] | None = None, host: str | None = None, namespace: str | None = None,
           experiment: str = "clinical-trials", wait: bool = True, timeout_s: int = 7200) -> KfpRun:
    """Compile and submit to the KFP API at ``host`` (default ``$KFP_HOST``); wait for the end unless told not to.
    Authentication follows ``kfp.Client``: in-cluster service account, or ``KF_PIPELINES_SA_TOKEN_PATH``."""
    import kfp

    host = host or settings.kfp_host()
    if not host:
        raise ValueError("no KFP host: pass --host or set KFP_HOST (or run locally with `python -m ct_kfp run`)")
    client = kfp.Client(host=host, namespace=namespace)
    run_name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    created = client.create_run_from_pipeline_func(_pipeline(name), arguments=arguments or {},
                                                   experiment_name=experiment, run_name=run_name)
    url = f"{host.rstrip('/')}/#/runs/details/{created.run_id}"
    if not wait:
        return KfpRun(created.run_id, url, "PENDING")
    detail = client.wait_for_run_completion(created.run_id, timeout=timeout_s)
    return KfpRun(created.run_id, url, str(detail.state))
