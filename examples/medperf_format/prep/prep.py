"""Data preparator: raw cases (one number per <case>.txt) and labels.csv (case,label) become
data/<case>.txt and labels/labels.csv; statistics.yaml counts cases and labels.

Standard library only. Parameters arrive as YAML (JSON is YAML too): a flat `key: value` reader
suffices here."""

import csv
import json
import sys
from pathlib import Path

VOLUMES = Path("/mlcommons/volumes")


def parameters(path: Path) -> dict:
    text = path.read_text() if path.exists() else ""
    try:
        return json.loads(text) or {}
    except ValueError:
        pairs = (line.split("#", 1)[0].split(":", 1) for line in text.splitlines())
        return {k.strip(): float(v) for k, v in (p for p in pairs if len(p) == 2) if k.strip()}


def prepare() -> None:
    params = parameters(VOLUMES / "parameters" / "parameters_file.yaml")
    low, high = float(params.get("min_value", 0)), float(params.get("max_value", 100))
    labels = {}
    with open(VOLUMES / "raw_labels" / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            labels[row["case"]] = row["label"]
    kept, dropped = [], []
    for case in sorted(VOLUMES.joinpath("raw_data").glob("*.txt")):
        try:
            value = float(case.read_text().strip())
        except ValueError:
            value = float("nan")
        if case.stem in labels and low <= value <= high:
            (VOLUMES / "data" / case.name).write_text(f"{value}\n")
            kept.append(case.stem)
        else:
            dropped.append(case.stem)
    with open(VOLUMES / "labels" / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "label"])
        writer.writerows([case, labels[case]] for case in kept)
    (VOLUMES / "metadata" / "dropped.txt").write_text("".join(f"{c}\n" for c in dropped))
    (VOLUMES / "report" / "report.yaml").write_text(f"kept: {len(kept)}\ndropped: {len(dropped)}\n")


def sanity_check() -> None:
    cases = {p.stem for p in (VOLUMES / "data").glob("*.txt")}
    with open(VOLUMES / "labels" / "labels.csv", newline="") as handle:
        labelled = {row["case"] for row in csv.DictReader(handle)}
    if not cases or cases != labelled:
        sys.exit(f"sanity check failed: {len(cases)} cases, {len(labelled)} labels")
    if not (VOLUMES / "metadata" / "dropped.txt").exists():
        sys.exit("sanity check failed: prepare left no metadata")


def statistics() -> None:
    with open(VOLUMES / "labels" / "labels.csv", newline="") as handle:
        labels = [row["label"] for row in csv.DictReader(handle)]
    counts = {name: labels.count(value) for name, value in (("pneumonia", "1"), ("normal", "0"))}
    lines = [f"num_cases: {len(labels)}", "labels_count:", *(f"  {k}: {v}" for k, v in counts.items())]
    (VOLUMES / "statistics" / "statistics.yaml").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    {"prepare": prepare, "sanity_check": sanity_check, "statistics": statistics}[sys.argv[1]]()
