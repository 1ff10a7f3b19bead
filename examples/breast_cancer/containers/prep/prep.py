#!/usr/bin/env python3
"""Data preparator for the breast-cancer demo: prepare, sanity_check, statistics.

Runs inside a bare Debian python3 image, so only the standard library is used. Raw input is what
a hospital exports (features.csv with the 30 WDBC features, labels.csv with M/B diagnoses); the
prepared form is what every model and the metrics container agree on (cases.csv, labels.csv with
0/1 labels).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

_MEASURES = (
    "radius",
    "texture",
    "perimeter",
    "area",
    "smoothness",
    "compactness",
    "concavity",
    "concave points",
    "symmetry",
    "fractal dimension",
)
#: The canonical column order of prepared data (the order scikit-learn uses for this dataset).
FEATURES: tuple[str, ...] = (
    *(f"mean {m}" for m in _MEASURES),
    *(f"{m} error" for m in _MEASURES),
    *(f"worst {m}" for m in _MEASURES),
)
RAW_FEATURES_FILE = "features.csv"
RAW_LABELS_FILE = "labels.csv"
CASES_FILE = "cases.csv"
LABELS_FILE = "labels.csv"
STATISTICS_FILE = "statistics.json"
DIAGNOSIS = {"M": 1, "B": 0}
DEFAULT_MAX_INVALID_FRACTION = 0.2
MAX_REPORTED_ERRORS = 10


class DataError(Exception):
    """Input that does not meet the contract; reported on stderr, exit code 1."""


def load_parameters(path: str | None) -> dict[str, object]:
    # Missing parameters are not an error: every parameter has a default.
    if not path or not Path(path).is_file():
        return {}
    with open(path, encoding="utf-8") as handle:
        loaded = json.load(handle)
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: parameters must be a JSON object")
    return loaded


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise DataError(f"missing file: {path.name} (expected at {path})")
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path.name}: file is empty")
        return [column.strip() for column in header], [row for row in reader if row]


def parse_finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def prepare(data_path: Path, labels_path: Path, output_path: Path, output_labels_path: Path, params: dict) -> dict:
    header, rows = read_table(data_path / RAW_FEATURES_FILE)
    if not header or header[0] != "case_id":
        raise DataError(f"{RAW_FEATURES_FILE}: first column must be 'case_id', found {header[:1]}")
    missing = [name for name in FEATURES if name not in header]
    if missing:
        raise DataError(f"{RAW_FEATURES_FILE}: missing feature columns: {', '.join(missing)}")
    position = {name: header.index(name) for name in FEATURES}

    label_header, label_rows = read_table(labels_path / RAW_LABELS_FILE)
    if label_header[:2] != ["case_id", "diagnosis"]:
        raise DataError(f"{RAW_LABELS_FILE}: header must start with 'case_id,diagnosis', found {label_header}")
    diagnoses: dict[str, str] = {}
    for line, row in enumerate(label_rows, start=2):
        case_id = row[0].strip()
        if case_id in diagnoses:
            raise DataError(f"{RAW_LABELS_FILE}: duplicate case_id on line {line}")
        diagnoses[case_id] = row[1].strip().upper() if len(row) > 1 else ""

    counts = {"invalid_values": 0, "missing_label": 0, "invalid_label": 0}
    seen: set[str] = set()
    cases: list[list[str]] = []
    labels: list[list[str]] = []
    for line, row in enumerate(rows, start=2):
        case_id = row[0].strip()
        if not case_id or case_id in seen:
            raise DataError(f"{RAW_FEATURES_FILE}: empty or duplicate case_id on line {line}")
        seen.add(case_id)
        values = [parse_finite(row[position[n]]) if position[n] < len(row) else None for n in FEATURES]
        if any(value is None for value in values):
            counts["invalid_values"] += 1
        elif case_id not in diagnoses:
            counts["missing_label"] += 1
        elif diagnoses[case_id] not in DIAGNOSIS:
            counts["invalid_label"] += 1
        else:
            cases.append([case_id, *(repr(value) for value in values)])
            labels.append([case_id, str(DIAGNOSIS[diagnoses[case_id]])])

    # A site that loses most of its rows has an export problem worth fixing, not a dataset.
    limit = float(params.get("max_invalid_fraction", DEFAULT_MAX_INVALID_FRACTION))
    dropped = len(rows) - len(cases)
    if not cases:
        raise DataError("no usable cases after preparation")
    if dropped > limit * len(rows):
        raise DataError(f"{dropped} of {len(rows)} rows unusable, above max_invalid_fraction={limit}")

    output_path.mkdir(parents=True, exist_ok=True)
    output_labels_path.mkdir(parents=True, exist_ok=True)
    write_csv(output_path / CASES_FILE, ["case_id", *FEATURES], cases)
    write_csv(output_labels_path / LABELS_FILE, ["case_id", "label"], labels)
    return {
        "n_input_rows": len(rows),
        "n_prepared": len(cases),
        "n_dropped_invalid_values": counts["invalid_values"],
        "n_dropped_missing_label": counts["missing_label"],
        "n_dropped_invalid_label": counts["invalid_label"],
        "n_labels_without_features": len(set(diagnoses) - seen),
    }


def load_prepared(data_path: Path, labels_path: Path) -> tuple[list[str], dict[str, int], list[str]]:
    """Read prepared data; return (case ids, labels by case id, problems found)."""
    problems: list[str] = []
    header, rows = read_table(data_path / CASES_FILE)
    if header != ["case_id", *FEATURES]:
        problems.append(f"{CASES_FILE}: header must be case_id followed by the {len(FEATURES)} canonical features")
    case_ids: list[str] = []
    for line, row in enumerate(rows, start=2):
        if len(row) != len(FEATURES) + 1:
            problems.append(f"{CASES_FILE} line {line}: {len(row) - 1} feature values, expected {len(FEATURES)}")
            continue
        if not row[0]:
            problems.append(f"{CASES_FILE} line {line}: empty case_id")
        bad = [FEATURES[i] for i, text in enumerate(row[1:]) if parse_finite(text) is None]
        if bad:
            problems.append(f"{CASES_FILE} line {line}: not a finite number in {', '.join(bad[:3])}")
        case_ids.append(row[0])
    if len(set(case_ids)) != len(case_ids):
        problems.append(f"{CASES_FILE}: duplicate case ids")

    label_header, label_rows = read_table(labels_path / LABELS_FILE)
    if label_header != ["case_id", "label"]:
        problems.append(f"{LABELS_FILE}: header must be 'case_id,label', found {','.join(label_header)}")
    labels: dict[str, int] = {}
    for line, row in enumerate(label_rows, start=2):
        if len(row) != 2 or row[1] not in ("0", "1"):
            problems.append(f"{LABELS_FILE} line {line}: label must be 0 or 1")
            continue
        if row[0] in labels:
            problems.append(f"{LABELS_FILE}: duplicate case id on line {line}")
        labels[row[0]] = int(row[1])

    if not case_ids:
        problems.append(f"{CASES_FILE}: no cases")
    unlabelled, orphans = len(set(case_ids) - set(labels)), len(set(labels) - set(case_ids))
    if unlabelled or orphans:
        problems.append(f"case ids differ: {unlabelled} cases without a label, {orphans} labels without a case")
    return case_ids, labels, problems


def sanity_check(data_path: Path, labels_path: Path) -> dict:
    _, labels, problems = load_prepared(data_path, labels_path)
    if problems:
        shown = problems[:MAX_REPORTED_ERRORS]
        more = len(problems) - len(shown)
        raise DataError("sanity check failed:\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more else ""))
    return {"sanity_check": "passed", "n_cases": len(labels)}


def statistics(data_path: Path, labels_path: Path, output_path: Path) -> dict:
    _, labels, problems = load_prepared(data_path, labels_path)
    if problems:
        raise DataError("cannot compute statistics on invalid prepared data (run sanity_check):\n  " + problems[0])
    # Aggregates only: statistics leave the site, so nothing here may identify a case.
    n_malignant = sum(labels.values())
    stats = {"n_cases": len(labels), "n_malignant": n_malignant, "n_benign": len(labels) - n_malignant}
    output_path.mkdir(parents=True, exist_ok=True)
    with open(output_path / STATISTICS_FILE, "w", encoding="utf-8") as handle:
        json.dump(stats, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return stats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="task", required=True)
    for task in ("prepare", "sanity_check", "statistics"):
        sub = commands.add_parser(task)
        sub.add_argument("--data_path", type=Path, required=True)
        sub.add_argument("--labels_path", type=Path, required=True)
        sub.add_argument("--parameters_file")
        sub.add_argument("--additional_files", help="accepted for contract symmetry; unused")
        if task in ("prepare", "statistics"):
            sub.add_argument("--output_path", type=Path, required=True)
        if task == "prepare":
            sub.add_argument("--output_labels_path", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = load_parameters(args.parameters_file)
        if args.task == "prepare":
            report = prepare(args.data_path, args.labels_path, args.output_path, args.output_labels_path, params)
        elif args.task == "sanity_check":
            report = sanity_check(args.data_path, args.labels_path)
        else:
            report = statistics(args.data_path, args.labels_path, args.output_path)
    except (DataError, json.JSONDecodeError, OSError) as error:
        print(f"{args.task}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
