"""The Katib ``Experiment`` equivalent to ``hpo_pipeline``'s search, for clusters that run Katib.

The search space is a list of points (a model family with its own hyperparameters), not a
cartesian product, so the manifest searches one discrete parameter, the point's index, with Katib's
grid algorithm; each trial runs ``python -m ct_kfp trial`` in the component image, which prints
``cv_auroc=<value>`` for Katib's stdout metrics collector. The objective is the same
cross-validated AUROC on the train split that the KFP trials compute. Katib reports the trial with
the highest objective; ``hpo_pipeline`` instead applies the one-standard-error rule to the same
trials (``ct_kfp.steps.hpo.select_one_se``), which a user of Katib can apply to its trial list.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from ct_kfp.components import IMAGE
from ct_kfp.steps.hpo import SEARCH_SPACE

OBJECTIVE = "cv_auroc"


def experiment(training_set_uri: str, name: str = "ct-hpo", namespace: str = "kubeflow",
               search_space: list[dict[str, Any]] | None = None, parallel_trials: int = 2,
               image: str = IMAGE) -> dict[str, Any]:
    space = search_space or SEARCH_SPACE
    command = ("python -m ct_kfp trial --training-set " + shlex.quote(training_set_uri)
               + " --search-space " + shlex.quote(json.dumps(space, separators=(",", ":")))
               + " --point ${trialParameters.point}")
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": OBJECTIVE},
            "algorithm": {"algorithmName": "grid"},
            "parallelTrialCount": parallel_trials,
            "maxTrialCount": len(space),
            "maxFailedTrialCount": 1,
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
            "parameters": [{"name": "point", "parameterType": "discrete",
                            "feasibleSpace": {"list": [str(i) for i in range(len(space))]}}],
            "trialTemplate": {
                "primaryContainerName": "training-container",
                "trialParameters": [{"name": "point", "reference": "point",
                                     "description": "index into the search space (see the command)"}],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {"template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "training-container", "image": image,
                                        "command": ["sh", "-c", command],
                                        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}],
                    }}},
                },
            },
        },
    }
