"""Plain-text tables for the terminal."""

from __future__ import annotations


def leaderboard_table(board: dict) -> str:
    primary = board["primary_metric"]
    datasets = board["datasets"]
    header = ["#", "model", f"{primary} (mean)", "min", "max", *datasets]
    lines = [header]
    for row in board["rows"]:
        summary = row["metrics"][primary]
        name = row["model"] + (" (baseline)" if row["baseline"] else "") + ("" if row["complete"] else " *")
        lines.append(
            [
                str(row["rank"]),
                name,
                _num(summary["mean"]),
                _num(summary["min"]),
                _num(summary["max"]),
                *(_num(row["per_dataset"][d]) for d in datasets),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        f"Leaderboard: {board['benchmark']}  (ranked by mean {primary}, "
        f"{'higher' if board['higher_is_better'] else 'lower'} is better)"
    ]
    for i, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(w) if j < 2 else cell.rjust(w) for j, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    if any(not r["complete"] for r in board["rows"]):
        out.append("* missing results from some datasets; shown as '-' and not filled in")
    return "\n".join(out)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
