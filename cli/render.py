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
        failed = row.get("failed") or {}
        if row.get("sites_failed") and not failed:  # an aggregate view counts them, naming no site
            name += f" (failed at {row['sites_failed']} site{'s' if row['sites_failed'] > 1 else ''})"
        values = [_num(summary["value"]), _num(summary["min"]), _num(summary["max"])]
        if by_rank:
            values.insert(0, "-" if row.get("mean_rank") is None else f"{row['mean_rank']:.2f}")
        cells = [failed_cell(failed[d]) if d in failed else _num(row["per_dataset"].get(d)) for d in datasets]
        lines.append([str(row["rank"] or "-"), name, *values, *cells])
    better = "higher" if board["higher_is_better"] else "lower"
    how = f"mean rank across sites by {primary}" if by_rank else f"{aggregate} {primary} across sites"
    out = [f"{title}  (ranked by {how}, {better} is better)", *_aligned(lines, left=2)]
    if any(not r["complete"] for r in board["rows"]):
        out.append("* missing results from some datasets; shown as '-' and not filled in")
    for row in board["rows"]:  # whose fault and why, for those who can fix it (never the log tail)
        for site, failure in (row.get("failed") or {}).items():
            out.append(f"{failed_cell(failure)}: {row['model']} at {site}: {failure['reason']}")
    if any(r.get("stale") for r in board["rows"]):
        out.append("(stale): scored by a metrics container the benchmark no longer uses, until the site scores again")
    shown_to = board.get("offset", 0) + len(board["rows"])
    if shown_to < board.get("total_rows", shown_to):
        out.append(
            f"rows {board.get('offset', 0) + 1}-{shown_to} of {board['total_rows']}: --offset {shown_to} for more"
        )
    return "\n".join(out)


def failed_cell(failure: dict) -> str:
    """A failed model x site cell, saying whose fault (model, metrics, data, benchmark, infrastructure)."""
    return f"failed ({failure['fault']})"


def provenance_table(shown: dict) -> str:
    """Where each of a model's results on a benchmark came from: per site, the dataset, the exact
    containers and data, the key that signed it, and who approved the dataset's association."""
    model_approval = shown.get("model_association")
    approved = (
        f"approved by {model_approval['approved_by']} at {model_approval['approved_at']}"
        if model_approval
        else "none approved (a benchmark's reference model needs none)"
    )
    out = [f"Provenance: {shown['model']} on {shown['benchmark']}  (the model's association: {approved})"]
    if not shown["cells"]:
        return "\n".join([*out, "no results from any site you may see"])
    lines = [
        ["site", "dataset", "model digest", "metrics digest", "dataset hash", "signed by", "reported", "approved by"]
    ]
    for cell in shown["cells"]:
        digests = cell["container_digests"]
        key = (cell["key_id"] or "unsigned") + (
            f" (revoked {cell['key_revoked_at']})" if cell["key_revoked_at"] else ""
        )
        approval = cell["dataset_association"]
        lines.append(
            [
                cell["site"],
                cell["dataset"] + (" (stale)" if cell.get("stale") else "") + (" (partial)" if cell["partial"] else ""),
                _short(digests.get("model")),
                _short(digests.get("metrics")),
                _short(cell["dataset_hash"]),
                key,
                cell["reported_at"],
                f"{approval['approved_by']} at {approval['approved_at']}" if approval else "-",
            ]
        )
    return "\n".join([*out, *_aligned(lines, left=len(lines[0]))])


def _aligned(lines: list[list[str]], left: int) -> list[str]:
    """Rows as columns: the first ``left`` left-aligned, the rest right-aligned (numbers), a rule
    under the header."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for i, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(w) if j < left else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _short(digest: str | None) -> str:
    """``sha256:0123456789ab…``: enough to tell digests apart on a screen (--format json has all)."""
    if not digest:
        return "-"
    algorithm, _, value = digest.rpartition(":")
    return f"{algorithm}:{value[:12]}" if algorithm else value[:12]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
