// A leaderboard three ways: the table (failed cells say whose fault, the reason on hover), a bar
// chart of each model's combined value with every site's value as a point (the spread across
// sites), and a model x site heatmap. Each shows only what the server's sharing policy sent.
import { useEffect, useRef } from "preact/hooks";
import {
  Chart,
  BarController,
  BarElement,
  LineController,
  LineElement,
  PointElement,
  CategoryScale,
  LinearScale,
  Legend,
  Tooltip,
} from "chart.js";
import { fmt } from "./ui.jsx";

Chart.register(BarController, BarElement, LineController, LineElement, PointElement, CategoryScale, LinearScale, Legend, Tooltip);

const PALETTE = ["#1b7f79", "#c0392b", "#7d3c98", "#b9770e", "#2e86c1", "#196f3d", "#a04000", "#5d6d7e"];

export function shownBoard(board) {
  return board && (board.rows ? board : board.yours || null);
}

function FailedCell({ failure }) {
  return (
    <td class="failed" title={failure.reason} data-testid="failed-cell">
      failed ({failure.fault}): <span class="reason">{failure.reason}</span>
    </td>
  );
}

export function BoardTable({ board, testid = "board" }) {
  const primary = board.primary_metric;
  return (
    <div class="scroll">
      <table data-testid={testid}>
        <caption class="dim">
          ranked by {board.aggregate} {primary}, {board.higher_is_better ? "higher" : "lower"} is better
        </caption>
        <thead>
          <tr>
            <th scope="col">#</th>
            <th scope="col">model</th>
            <th scope="col">
              {board.aggregate} {primary}
            </th>
            {board.datasets.map((d) => (
              <th scope="col">{d}</th>
            ))}
            <th scope="col">complete</th>
          </tr>
        </thead>
        <tbody>
          {board.rows.map((row) => (
            <tr data-testid="board-row">
              <td>{row.rank ?? "–"}</td>
              <th scope="row" title={row.model_id ? `model ${row.model_id}` : ""}>
                {row.model}
                {row.baseline ? " (baseline)" : ""}
                {row.withheld ? <span class="dim"> — {row.withheld}</span> : null}
              </th>
              <td class="num">{fmt(row.metrics[primary] && row.metrics[primary].value)}</td>
              {board.datasets.map((d) =>
                row.failed && row.failed[d] ? (
                  <FailedCell failure={row.failed[d]} />
                ) : (
                  <td class="num">{fmt(row.per_dataset[d])}</td>
                ),
              )}
              <td>
                {row.complete ? "yes" : "no"}
                {row.sites_failed ? <span class="bad"> ({row.sites_failed} failed)</span> : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function BoardChart({ board }) {
  const canvas = useRef(null);
  const primary = board.primary_metric;
  const rows = board.rows.filter((r) => r.metrics[primary] && r.metrics[primary].value !== null);
  useEffect(() => {
    if (!canvas.current || !rows.length) return undefined;
    const sites = board.datasets.map((d, i) => {
      const colour = PALETTE[(i + 1) % PALETTE.length];
      return {
        type: "line",
        label: d,
        data: rows.map((r) => (r.per_dataset[d] === undefined ? null : r.per_dataset[d])),
        showLine: false,
        pointRadius: 5,
        pointStyle: "circle",
        backgroundColor: colour,
        borderColor: colour,
      };
    });
    const chart = new Chart(canvas.current, {
      type: "bar",
      data: {
        labels: rows.map((r) => r.model),
        datasets: [
          {
            type: "bar",
            label: `${board.aggregate} ${primary}`,
            data: rows.map((r) => r.metrics[primary].value),
            backgroundColor: "rgba(27,127,121,0.55)",
          },
          ...sites,
        ],
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: { y: { beginAtZero: false, grace: "5%" } },
        plugins: { legend: { labels: { usePointStyle: true } } },
      },
    });
    return () => chart.destroy();
  }, [board]);
  if (!rows.length) return null;
  const summary = rows.map((r) => `${r.model} ${fmt(r.metrics[primary].value)}`).join(", ");
  return (
    <figure class="chart" data-testid="chart">
      <div class="chart-box">
        <canvas ref={canvas} role="img" aria-label={`${primary} by model, each site's value as a point: ${summary}`} />
      </div>
      <figcaption class="dim">Bars: the combined value; points: each site's value (the spread across sites).</figcaption>
    </figure>
  );
}

export function Heatmap({ board }) {
  const primary = board.primary_metric;
  const values = board.rows.flatMap((r) => board.datasets.map((d) => r.per_dataset[d])).filter((v) => v !== null && v !== undefined);
  if (!board.datasets.length || !values.length) return null;
  const low = Math.min(...values);
  const high = Math.max(...values);
  const shade = (v) => {
    const t = high > low ? (v - low) / (high - low) : 1;
    const good = board.higher_is_better ? t : 1 - t;
    return `hsl(${Math.round(good * 130)}, 55%, ${88 - good * 18}%)`;
  };
  return (
    <div class="scroll">
      <table class="heatmap" data-testid="heatmap">
        <caption class="dim">
          {primary} per model and site (greener is better; failed runs hatched)
        </caption>
        <thead>
          <tr>
            <th scope="col">model</th>
            {board.datasets.map((d) => (
              <th scope="col">{d}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {board.rows.map((row) => (
            <tr>
              <th scope="row">{row.model}</th>
              {board.datasets.map((d) => {
                const failure = row.failed && row.failed[d];
                const v = row.per_dataset[d];
                if (failure) return <td class="cell failed-cell" title={failure.reason}>failed</td>;
                if (v === null || v === undefined) return <td class="cell dim">–</td>;
                return (
                  <td class="cell num" style={{ background: shade(v) }}>
                    {fmt(v, 3)}
                  </td>
                );
              })}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
