// Small pieces every page uses: sections, tables, buttons that call the API and show its answer.
import { useState } from "preact/hooks";
import { api } from "./api.js";
import { useLive } from "./live.jsx";

export function Section({ title, id, children, actions }) {
  return (
    <section aria-labelledby={id} data-testid={id}>
      <div class="section-head">
        <h2 id={id}>{title}</h2>
        {actions}
      </div>
      {children}
    </section>
  );
}

export function Empty({ children }) {
  return <p class="dim empty">{children}</p>;
}

export function Problem({ error }) {
  if (!error) return null;
  return (
    <p role="alert" class="error">
      {error.message}
    </p>
  );
}

// A button that calls the API, then refreshes what the page shows; the server's refusal is shown beside it.
export function Act({ label, method = "POST", path, body, confirm: question, class: kind, onDone, testid }) {
  const { refresh } = useLive();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async () => {
    if (question && !window.confirm(question)) return;
    setBusy(true);
    setError(null);
    try {
      const answer = await api(method, path, typeof body === "function" ? body() : body);
      onDone && onDone(answer);
      refresh();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  return (
    <span class="act">
      <button type="button" class={kind} disabled={busy} onClick={run} data-testid={testid}>
        {label}
      </button>
      {error && (
        <span role="alert" class="error">
          {error.message}
        </span>
      )}
    </span>
  );
}

export function Status({ value }) {
  const tone =
    {
      APPROVED: "good",
      succeeded: "good",
      OPERATION: "good",
      PENDING: "wait",
      queued: "wait",
      running: "wait",
      DEVELOPMENT: "wait",
      REJECTED: "bad",
      failed: "bad",
      cancelled: "dim",
    }[value] || "";
  return <span class={`status ${tone}`}>{value}</span>;
}

// "auc 0.9000, accuracy 0.8571": the numeric metrics of a report, a result or an event.
export const metricsText = (metrics) =>
  Object.entries(metrics || {})
    .filter(([, v]) => typeof v === "number")
    .map(([k, v]) => `${k} ${v.toFixed(4)}`)
    .join(", ");

export const fmt = (value, digits = 4) =>
  value === null || value === undefined || Number.isNaN(Number(value)) ? "–" : Number(value).toFixed(digits);

export function When({ at }) {
  if (!at) return <span class="dim">–</span>;
  const date = new Date(at);
  return <time datetime={date.toISOString()}>{date.toLocaleString()}</time>;
}
