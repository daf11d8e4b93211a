"""A numpy scorer for the default model (imputer + scaler + one-hot + logistic regression).

scikit-learn's ColumnTransformer costs milliseconds per call on a one-row DataFrame of ~200
columns, whatever the number of rows; the arithmetic itself is a dot product. ``compile_linear``
folds the fitted imputer medians, scaler and one-hot encoder into one weight per input value and
returns a scorer, or None for any other model (those are scored by the pipeline, micro-batched).
A compiled scorer is only used after it reproduced ``predict_proba`` on the model's own input
example and perturbations of it (missing values, unseen categories) to 1e-9.
"""

from __future__ import annotations

import numpy as np


class LinearScorer:
    def __init__(self, numeric_idx, fill, weights, intercept, categorical_idx, category_weights):
        self.numeric_idx, self.fill, self.weights, self.intercept = numeric_idx, fill, weights, intercept
        self.categorical_idx, self.category_weights = categorical_idx, category_weights

    def __call__(self, rows: list[list]) -> np.ndarray:
        x = np.array([[row[i] for i in self.numeric_idx] for row in rows], dtype=float)
        x = np.where(np.isnan(x), self.fill, x)
        z = x @ self.weights + self.intercept
        for i, table in zip(self.categorical_idx, self.category_weights):
            z += np.fromiter((table.get(row[i], 0.0) for row in rows), float, len(rows))
        return 1.0 / (1.0 + np.exp(-z))


def compile_linear(model, features: list[str]) -> LinearScorer | None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    try:
        prep, clf = model.named_steps["prep"], model.named_steps["clf"]
    except (AttributeError, KeyError):
        return None
    if not (isinstance(prep, ColumnTransformer) and isinstance(clf, LogisticRegression) and clf.coef_.shape[0] == 1):
        return None
    fitted = {name: (trans, cols) for name, trans, cols in prep.transformers_}
    if set(fitted) - {"num", "cat", "remainder"} or ("remainder" in fitted and fitted["remainder"][0] != "drop"):
        return None
    num_pipe, num_cols = fitted["num"]
    ohe, cat_cols = fitted.get("cat", (None, []))
    if not isinstance(num_pipe, Pipeline):
        return None
    imputer, scaler = num_pipe.named_steps["impute"], num_pipe.named_steps["scale"]
    if imputer.strategy == "constant":
        return None
    coef = clf.coef_[0]
    n = len(num_cols)
    fill = np.nan_to_num(np.asarray(imputer.statistics_, dtype=float), nan=0.0)  # empty features impute 0
    weights = coef[:n] / scaler.scale_
    intercept = float(clf.intercept_[0] - np.sum(coef[:n] * scaler.mean_ / scaler.scale_))
    category_weights, offset = [], n
    for categories in (ohe.categories_ if ohe is not None else []):
        category_weights.append({c: float(coef[offset + k]) for k, c in enumerate(categories)})
        offset += len(categories)
    index = {f: i for i, f in enumerate(features)}
    return LinearScorer([index[c] for c in num_cols], fill, weights, intercept, [index[c] for c in cat_cols],
                        category_weights)


def verified(model, features: list[str], example, numeric: set[str]) -> LinearScorer | None:
    """The compiled scorer if it matches predict_proba on ``example`` and perturbations of it."""
    import pandas as pd

    scorer = compile_linear(model, features)
    if scorer is None or example is None or len(example) == 0:
        return None
    frame = example.reindex(columns=features)
    probes = [frame]
    holes = frame.copy()
    for c in features:
        if c in numeric:
            holes[c] = np.nan
        else:
            holes[c] = "__unseen__"
    probes += [holes, frame.iloc[::-1].reset_index(drop=True)]
    for probe in probes:
        # As the server builds rows: numbers as floats (NaN when missing), text or None otherwise.
        rows = [[(np.nan if v is None else float(v)) if f in numeric else (v if isinstance(v, str) else None)
                 for f, v in zip(features, r)] for r in probe.itertuples(index=False)]
        expected = model.predict_proba(pd.DataFrame(rows, columns=features))[:, 1]
        if not np.allclose(scorer(rows), expected, rtol=0, atol=1e-9):
            return None
    return scorer
