"""Plain-text tables for the terminal."""

from __future__ import annotations


def leaderboard_table(board: dict) -> str:
    """The shared board (or why it is held), then the caller's own results when the board has them apart."""
    parts = []
    if "rows" in board:
        parts.append(_table(board, f"Leaderboard: {board['benchmark']}"))
    elif "held" in board:
        parts.append(f"Leaderboard: {board['benchmark']}: {board['held']}")
    if board.get("yours"):
        parts.append(_table(board["yours"], f"Your results in {board['benchmark']}"))
    return "\n\n".join(parts) or f"Leaderboard: {board['benchmark']}: nothing is shared with you yet"


def _table(board: dict, title: str) -> str:
    primary = board["primary_metric"]
    datasets = board["datasets"]
    aggregate = board.get("aggregate", "mean")
    header = ["#", "model", f"{primary} ({aggregate})", "min", "max", *datasets]
    lines = [header]
    for row in board["rows"]:
        summary = row["metrics"][primary]
        name = row["model"] + (" (baseline)" if row["baseline"] else "") + ("" if row["complete"] else " *")
        name += " (withheld: too few sites)" if row.get("withheld") else ""
        lines.append(
            [
                str(row["rank"] or "-"),
                name,
                _num(summary["value"]),
                _num(summary["min"]),
                _num(summary["max"]),
                *(_num(row["per_dataset"].get(d)) for d in datasets),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    better = "higher" if board["higher_is_better"] else "lower"
    out = [f"{title}  (ranked by {aggregate} {primary} across sites, {better} is better)"]
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
