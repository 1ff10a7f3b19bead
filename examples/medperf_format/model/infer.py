"""Reference model: the probability of pneumonia rises with the value, around a centre that
comes with the additional files (weights.txt). MLCube-era entry point too: `infer
--data_path=... --parameters_file=... --output_path=...` (the second model uses it)."""

import json
import math
import os
import sys
from pathlib import Path

VOLUMES = Path("/mlcommons/volumes")


def parameters(path: Path) -> dict:
    text = path.read_text() if path.exists() else ""
    try:
        return json.loads(text) or {}
    except ValueError:
        pairs = (line.split("#", 1)[0].split(":", 1) for line in text.splitlines())
        return {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2) if k.strip()}


def infer(data: Path, params_file: Path, out: Path, centre: float) -> None:
    params = parameters(params_file)
    scale = float(os.environ.get("THRESHOLD_SCALE", params.get("scale", 10)))
    rows = ["case,probability"]
    for case in sorted(data.glob("*.txt")):
        value = float(case.read_text())
        rows.append(f"{case.stem},{1 / (1 + math.exp(-(value - centre) / scale)):.6f}")
    (out / str(params.get("output_name", "predictions.csv"))).write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "infer":  # MLCube's calling convention
        args = dict(a.removeprefix("--").split("=", 1) for a in sys.argv[2:])
        params = parameters(Path(args["parameters_file"]))
        infer(
            Path(args["data_path"]), Path(args["parameters_file"]), Path(args["output_path"]), float(params["centre"])
        )
    else:
        weights = VOLUMES / "additional_files" / "weights.txt"
        infer(
            VOLUMES / "data",
            VOLUMES / "parameters" / "parameters_file.yaml",
            VOLUMES / "predictions",
            float(weights.read_text()),
        )
