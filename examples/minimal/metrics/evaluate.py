#!/usr/bin/env python3
"""Minimal metrics container: accuracy and sensitivity of predictions.csv against labels.csv.

results.json's top-level numbers are the metrics; only those the benchmark declares leave the site.
The per-case file written to local_outputs stays at the site.
"""

import csv
import json
import sys
from pathlib import Path


def column(path: Path, name: str) -> dict[str, str]:
    with path.open(newline="") as handle:
        return {row["case"]: row[name] for row in csv.DictReader(handle)}


predictions_dir, labels_dir, output, local_outputs = map(Path, sys.argv[1:])
predicted = column(predictions_dir / "predictions.csv", "prediction")
truth = column(labels_dir / "labels.csv", "label")
correct = {case: predicted.get(case) == label for case, label in truth.items()}
positives = [case for case, label in truth.items() if label == "1"]
results = {
    "accuracy": sum(correct.values()) / len(truth),
    "sensitivity": sum(correct[c] for c in positives) / len(positives) if positives else 0.0,
}
(output / "results.json").write_text(json.dumps(results))
(local_outputs / "per_case.json").write_text(json.dumps(correct))  # never leaves the site
