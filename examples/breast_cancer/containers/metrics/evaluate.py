#!/usr/bin/env python3
"""Score a model's predictions against prepared labels for the breast-cancer demo.

results.json holds aggregates only, because it leaves the site; per_case.csv goes to the
local outputs mount, which never does. Only the standard library is available in the image.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

PREDICTIONS_FILE = "predictions.csv"
LABELS_FILE = "labels.csv"
RESULTS_FILE = "results.json"
PER_CASE_FILE = "per_case.csv"
DEFAULT_THRESHOLD = 0.5


class EvaluationError(Exception):
    """Inputs that cannot be evaluated; reported on stderr, exit code 1."""


def read_column(path: Path, header: list[str], parse: Callable[[str], float]) -> dict[str, float]:
    if not path.is_file():
        raise EvaluationError(f"missing file: {path}")
    values: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        found = next(reader, [])
        if found != header:
            raise EvaluationError(f"{path.name}: header must be {','.join(header)}, found {','.join(found)}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise EvaluationError(f"{path.name} line {line}: expected 2 columns")
            if row[0] in values:
                raise EvaluationError(f"{path.name} line {line}: duplicate case id")
            try:
                values[row[0]] = parse(row[1])
            except ValueError as error:
                raise EvaluationError(f"{path.name} line {line}: {error}") from error
    return values


def rank_auc(labels: list[int], scores: list[float]) -> float | None:
    """Mann-Whitney AUC; tied scores share their mean rank, so ties count one half."""
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None  # undefined without both classes; reported as null rather than guessed
    order = sorted(range(len(scores)), key=scores.__getitem__)
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        mean_rank = (start + end) / 2 + 1
        for k in range(start, end + 1):
            ranks[order[k]] = mean_rank
        start = end + 1
    positive_rank_sum = sum(rank for rank, label in zip(ranks, labels, strict=True) if label == 1)
    return (positive_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def evaluate(predictions_dir: Path, labels_dir: Path, output_path: Path, local_path: Path, params: dict) -> dict:
    threshold = float(params.get("threshold", DEFAULT_THRESHOLD))
    if not 0.0 <= threshold <= 1.0:
        raise EvaluationError(f"threshold must be within [0, 1], got {threshold}")
    scores = read_column(predictions_dir / PREDICTIONS_FILE, ["case_id", "score"], float)
    labels = read_column(labels_dir / LABELS_FILE, ["case_id", "label"], int)
    if any(not math.isfinite(s) or not 0.0 <= s <= 1.0 for s in scores.values()):
        raise EvaluationError(f"{PREDICTIONS_FILE}: scores must be probabilities in [0, 1]")
    if any(label not in (0, 1) for label in labels.values()):
        raise EvaluationError(f"{LABELS_FILE}: labels must be 0 or 1")
    # Counts only, no ids: stderr may be shown beyond the site.
    unlabelled, unpredicted = len(scores.keys() - labels.keys()), len(labels.keys() - scores.keys())
    if unlabelled or unpredicted:
        raise EvaluationError(
            f"predictions and labels cover different cases: {unlabelled} predictions without a label, "
            f"{unpredicted} labels without a prediction"
        )
    if not labels:
        raise EvaluationError("no cases to evaluate")

    case_ids = sorted(labels)
    y = [int(labels[c]) for c in case_ids]
    s = [scores[c] for c in case_ids]
    predicted = [1 if score >= threshold else 0 for score in s]
    tp = sum(1 for t, p in zip(y, predicted, strict=True) if t == 1 and p == 1)
    tn = sum(1 for t, p in zip(y, predicted, strict=True) if t == 0 and p == 0)
    results = {
        "auc": rank_auc(y, s),
        "accuracy": (tp + tn) / len(y),
        "sensitivity": ratio(tp, sum(y)),
        "specificity": ratio(tn, len(y) - sum(y)),
        "n_cases": len(y),
    }
    output_path.mkdir(parents=True, exist_ok=True)
    with open(output_path / RESULTS_FILE, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
        handle.write("\n")
    local_path.mkdir(parents=True, exist_ok=True)
    with open(local_path / PER_CASE_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["case_id", "label", "score", "predicted", "correct"])
        for case_id, label, score, guess in zip(case_ids, y, s, predicted, strict=True):
            writer.writerow([case_id, label, repr(score), guess, int(label == guess)])
    return results


def load_parameters(path: str | None) -> dict:
    # Missing parameters fall back to defaults rather than failing the run.
    if not path or not Path(path).is_file():
        return {}
    with open(path, encoding="utf-8") as handle:
        loaded = json.load(handle)
    if not isinstance(loaded, dict):
        raise EvaluationError(f"{path}: parameters must be a JSON object")
    return loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--output_path", type=Path, required=True)
    parser.add_argument("--local_outputs_path", type=Path, required=True)
    parser.add_argument("--parameters_file")
    parser.add_argument("--additional_files", help="accepted for the contract; unused")
    args = parser.parse_args(argv)
    try:
        params = load_parameters(args.parameters_file)
        results = evaluate(args.predictions, args.labels, args.output_path, args.local_outputs_path, params)
    except (EvaluationError, json.JSONDecodeError, OSError, ValueError) as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return 1
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
