#!/usr/bin/env python3
"""Score prepared breast-cancer cases with a model shipped as JSON weights.

One runtime serves every model kind: the weights tarball (mounted as additional_files) holds
model.json naming its kind, so a new model is a new tarball, not a new image. Only the standard
library is available inside the image.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

CASES_FILE = "cases.csv"
MODEL_FILE = "model.json"
PREDICTIONS_FILE = "predictions.csv"

Scorer = Callable[[Sequence[float]], float]


class ModelError(Exception):
    """Weights or data that cannot be scored; reported on stderr, exit code 1."""


def sigmoid(z: float) -> float:
    # Split by sign so exp never overflows for confident predictions.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _numbers(values: object, what: str, length: int) -> list[float]:
    if not isinstance(values, list) or len(values) != length:
        raise ModelError(f"{MODEL_FILE}: '{what}' must be a list of {length} numbers")
    return [float(v) for v in values]


def _rows(values: object, what: str, length: int) -> list[list[float]]:
    # Two rows, one per class: index 0 = benign, index 1 = malignant (fixed by the export).
    if not isinstance(values, list) or len(values) != 2:
        raise ModelError(f"{MODEL_FILE}: '{what}' must hold two rows (benign, malignant)")
    return [_numbers(row, what, length) for row in values]


def logistic_regression(model: dict, n: int) -> Scorer:
    mean, scale, coef = (_numbers(model.get(key), key, n) for key in ("mean", "scale", "coef"))
    if any(s <= 0 for s in scale):
        raise ModelError(f"{MODEL_FILE}: 'scale' must be positive")
    intercept = float(model["intercept"])

    def score(x: Sequence[float]) -> float:
        return sigmoid(intercept + sum(c * (v - m) / s for c, v, m, s in zip(coef, x, mean, scale, strict=True)))

    return score


def gaussian_nb(model: dict, n: int) -> Scorer:
    priors = _numbers(model.get("priors"), "priors", 2)
    means = _rows(model.get("means"), "means", n)
    variances = _rows(model.get("variances"), "variances", n)
    if any(p <= 0 for p in priors) or any(v <= 0 for row in variances for v in row):
        raise ModelError(f"{MODEL_FILE}: priors and variances must be positive")
    constants = [
        math.log(p) - 0.5 * sum(math.log(2 * math.pi * v) for v in var)
        for p, var in zip(priors, variances, strict=True)
    ]

    def score(x: Sequence[float]) -> float:
        joint = [
            c - 0.5 * sum((v - m) ** 2 / s for v, m, s in zip(x, mu, var, strict=True))
            for c, mu, var in zip(constants, means, variances, strict=True)
        ]
        # Posterior via the log-odds: the raw joint likelihoods underflow for far-off cases.
        return sigmoid(joint[1] - joint[0])

    return score


def decision_tree(model: dict, n: int) -> Scorer:
    nodes = model.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise ModelError(f"{MODEL_FILE}: 'nodes' must be a non-empty list")
    for index, node in enumerate(nodes):
        split = 0 <= node.get("feature", -1) < n and all(k in node for k in ("threshold", "left", "right"))
        children_ok = split and all(0 <= node[k] < len(nodes) for k in ("left", "right"))
        if "p_malignant" not in node and not children_ok:
            raise ModelError(f"{MODEL_FILE}: node {index} is neither a leaf nor a valid split")

    def score(x: Sequence[float]) -> float:
        node = nodes[0]
        # Bounded walk: a malformed tree with a cycle must fail, not hang the run.
        for _ in range(len(nodes)):
            if "p_malignant" in node:
                return float(node["p_malignant"])
            branch = "left" if x[node["feature"]] <= node["threshold"] else "right"
            node = nodes[node[branch]]
        raise ModelError(f"{MODEL_FILE}: tree walk did not reach a leaf (cycle?)")

    return score


KINDS: dict[str, Callable[[dict, int], Scorer]] = {
    "logistic_regression": logistic_regression,
    "gaussian_nb": gaussian_nb,
    "decision_tree": decision_tree,
}


def load_model(path: Path) -> tuple[list[str], Scorer]:
    if not path.is_file():
        raise ModelError(f"weights not found: {path}")
    with open(path, encoding="utf-8") as handle:
        model = json.load(handle)
    kind = model.get("kind")
    if kind not in KINDS:
        raise ModelError(f"{MODEL_FILE}: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    features = model.get("features")
    if not isinstance(features, list) or not features:
        raise ModelError(f"{MODEL_FILE}: 'features' must list the input columns")
    try:
        return features, KINDS[kind](model, len(features))
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ModelError(f"{MODEL_FILE}: malformed {kind} parameters ({error})") from error


def predict(data_path: Path, additional_files: Path, output_path: Path) -> dict:
    features, scorer = load_model(additional_files / MODEL_FILE)
    cases_file = data_path / CASES_FILE
    if not cases_file.is_file():
        raise ModelError(f"prepared data not found: {cases_file}")
    with open(cases_file, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        missing = [name for name in features if name not in header]
        if missing:
            raise ModelError(f"{CASES_FILE}: lacks model features: {', '.join(missing)}")
        columns = [header.index(name) for name in features]
        predictions: list[list[str]] = []
        for line, row in enumerate(reader, start=2):
            try:
                x = [float(row[i]) for i in columns]
            except (IndexError, ValueError) as error:
                raise ModelError(f"{CASES_FILE} line {line}: unreadable values ({error})") from error
            predictions.append([row[0], repr(scorer(x))])
    output_path.mkdir(parents=True, exist_ok=True)
    with open(output_path / PREDICTIONS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["case_id", "score"])
        writer.writerows(predictions)
    return {"n_predictions": len(predictions)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_path", type=Path, required=True)
    parser.add_argument("--additional_files", type=Path, required=True)
    parser.add_argument("--output_path", type=Path, required=True)
    parser.add_argument("--parameters_file", help="accepted for the contract; scoring needs no parameters")
    args = parser.parse_args(argv)
    try:
        report = predict(args.data_path, args.additional_files, args.output_path)
    except (ModelError, json.JSONDecodeError, OSError) as error:
        print(f"infer: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
