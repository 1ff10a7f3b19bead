#!/usr/bin/env python3
"""Minimal model: predicts 1 when a case's value passes the threshold in parameters.json."""

import csv
import json
import sys
from pathlib import Path

data, parameters, output = map(Path, sys.argv[1:])
threshold = json.loads(parameters.read_text()).get("threshold", 0.5)
with (data / "cases.csv").open(newline="") as cases, (output / "predictions.csv").open("w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(("case", "prediction"))
    for row in csv.DictReader(cases):
        writer.writerow((row["case"], int(float(row["value"]) > threshold)))
