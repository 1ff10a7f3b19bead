#!/usr/bin/env python3
"""Minimal data preparator: raw `measurements.csv` + `labels.csv` -> prepared `cases.csv` + `labels.csv`.

Three tasks, chosen by the first argument:
  prepare       keep the cases with a numeric value and a 0/1 label, write them in one prepared form
  sanity_check  exit non-zero if the prepared data breaks the contract the model and metrics rely on
  statistics    write statistics.json: the numbers that leave the site with the dataset's registration
"""

import csv
import json
import sys
from pathlib import Path


def read_rows(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        return {row["case"]: row[next(k for k in row if k != "case")] for row in csv.DictReader(handle)}


def write_rows(path: Path, header: tuple[str, str], rows: dict[str, str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(sorted(rows.items()))


def prepare(data: Path, labels: Path, output: Path, output_labels: Path) -> None:
    values, truth = read_rows(data / "measurements.csv"), read_rows(labels / "labels.csv")
    kept = {}
    for case, value in values.items():
        try:
            float(value)
        except ValueError:
            print(f"dropping case {case}: value {value!r} is not a number")  # goes to the site's log only
            continue
        if truth.get(case) in ("0", "1"):
            kept[case] = value
    write_rows(output / "cases.csv", ("case", "value"), kept)
    write_rows(output_labels / "labels.csv", ("case", "label"), {c: truth[c] for c in kept})


def sanity_check(data: Path, labels: Path) -> None:
    cases, truth = read_rows(data / "cases.csv"), read_rows(labels / "labels.csv")
    if not cases or set(cases) != set(truth):
        sys.exit("prepared data and labels must name the same, non-empty set of cases")


def statistics(data: Path, labels: Path, output: Path) -> None:
    truth = read_rows(labels / "labels.csv")
    # `cases` is special: it weighs this site in a weighted mean and is what `min_cases` compares.
    report = {"cases": len(truth), "positives": sum(label == "1" for label in truth.values())}
    (output / "statistics.json").write_text(json.dumps(report))


if __name__ == "__main__":
    task, *paths = sys.argv[1:]
    {"prepare": prepare, "sanity_check": sanity_check, "statistics": statistics}[task](*map(Path, paths))
