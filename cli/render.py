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
    by_rank = board.get("ranking") == "mean_rank"
    header = ["#", "model", f"{primary} ({aggregate})", "min", "max", *datasets]
    if by_rank:
        header.insert(2, "mean rank")
    lines = [header]
    for row in board["rows"]:
        summary = row["metrics"][primary]
        name = row["model"] + (" (baseline)" if row["baseline"] else "") + ("" if row["complete"] else " *")
        name += " (partial)" if row.get("partial") else ""
        name += " (stale)" if row.get("stale") else ""
        name += " (withheld: too few sites)" if row.get("withheld") else ""
        values = [_num(summary["value"]), _num(summary["min"]), _num(summary["max"])]
        if by_rank:
            values.insert(0, "-" if row.get("mean_rank") is None else f"{row['mean_rank']:.2f}")
        lines.append([str(row["rank"] or "-"), name, *values, *(_num(row["per_dataset"].get(d)) for d in datasets)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    better = "higher" if board["higher_is_better"] else "lower"
    how = f"mean rank across sites by {primary}" if by_rank else f"{aggregate} {primary} across sites"
    out = [f"{title}  (ranked by {how}, {better} is better)"]
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
    if any(r.get("stale") for r in board["rows"]):
        out.append("(stale): scored by a metrics container the benchmark no longer uses, until the site scores again")
    shown_to = board.get("offset", 0) + len(board["rows"])
    if shown_to < board.get("total_rows", shown_to):
        out.append(
            f"rows {board.get('offset', 0) + 1}-{shown_to} of {board['total_rows']}: --offset {shown_to} for more"
        )
    return "\n".join(out)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
