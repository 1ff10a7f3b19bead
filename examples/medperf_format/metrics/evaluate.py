"""Metrics: Accuracy at the threshold from parameters.yaml, and AUC (the chance that a random
pneumonia case scores above a random normal one), written to results.yaml."""

import csv
import json
from pathlib import Path

VOLUMES = Path("/mlcommons/volumes")


def threshold() -> float:
    text = (VOLUMES / "parameters" / "parameters_file.yaml").read_text()
    try:
        return float(json.loads(text).get("threshold", 0.5))
    except ValueError:
        return float(text.split("threshold:", 1)[1].split()[0]) if "threshold:" in text else 0.5


def main() -> None:
    with open(VOLUMES / "labels" / "labels.csv", newline="") as handle:
        truth = {row["case"]: row["label"] == "1" for row in csv.DictReader(handle)}
    with open(VOLUMES / "predictions" / "predictions.csv", newline="") as handle:
        scores = {row["case"]: float(row["probability"]) for row in csv.DictReader(handle)}
    cut = threshold()
    accuracy = sum((scores[c] >= cut) == truth[c] for c in truth) / len(truth)
    positives = [scores[c] for c in truth if truth[c]]
    negatives = [scores[c] for c in truth if not truth[c]]
    pairs = [(p > n) + 0.5 * (p == n) for p in positives for n in negatives]
    auc = sum(pairs) / len(pairs) if pairs else 0.5
    (VOLUMES / "results" / "results.yaml").write_text(f"Accuracy: {accuracy:.6f}\nAUC: {auc:.6f}\n")


if __name__ == "__main__":
    main()
