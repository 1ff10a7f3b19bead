// One benchmark: its leaderboard (table, chart, heatmap, CSV) as the viewer may see it; for its
// committee also the requests waiting on them with the compatibility report behind each, the
// auto-approval modes, and the sharing-policy editor with what each audience would see.
import { useState } from "preact/hooks";
import { api, download } from "./api.js";
import { useApi, useLive, Name } from "./live.jsx";
import { Section, Empty, Problem, Act, Status, metricsText } from "./ui.jsx";
import { BoardTable, BoardChart, Heatmap, shownBoard } from "./board.jsx";
import { PolicyEditor } from "./policy.jsx";

export function BenchmarkPage({ id }) {
  const { me } = useLive();
  const { data: bench, error } = useApi(`/benchmarks/${id}`);
  if (error) return <Problem error={error} />;
  if (!bench) return <p class="dim">Loading…</p>;
  const committee = me.is_admin || bench.owner === me.user;
  return (
    <>
      <h1>
        {bench.name} <span class="dim">benchmark {bench.id}</span>
      </h1>
      <p>
        <Status value={bench.approval_status} /> <Status value={bench.state} /> committee: {bench.owner}
        {bench.description ? ` — ${bench.description}` : ""}
      </p>
      {committee && <Requests id={id} />}
      <Leaderboard id={id} name={bench.name} />
      {committee && <AutoApproval id={id} />}
      {committee && <PolicyEditor id={id} />}
    </>
  );
}

function Leaderboard({ id, name }) {
  const { data, error } = useApi(`/benchmarks/${id}/leaderboard?limit=100`);
  const [failure, setFailure] = useState(null);
  const board = shownBoard(data);
  const csv = () => download(`/benchmarks/${id}/leaderboard?format=csv`, `${name}-leaderboard.csv`).catch(setFailure);
  return (
    <Section
      title="Leaderboard"
      id="leaderboard"
      actions={
        board && (
          <button type="button" onClick={csv}>
            Download CSV
          </button>
        )
      }
    >
      <Problem error={error || failure} />
      {data && data.scope === "own" && <p class="dim">The shared board is not open to you; these are your own results.</p>}
      {data && data.held && <p class="dim">{data.held}</p>}
      {data && !board && !data.held && <Empty>No results yet.</Empty>}
      {board && !board.rows.length && <Empty>No results yet.</Empty>}
      {board && board.rows.length > 0 && (
        <>
          <BoardTable board={board} />
          <div class="two">
            <BoardChart board={board} />
            <Heatmap board={board} />
          </div>
        </>
      )}
    </Section>
  );
}

function Report({ report }) {
  if (!report) return <span class="bad">no compatibility report yet</span>;
  return (
    <div class="report" data-testid="report">
      <b class={report.passed ? "good" : "bad"}>{report.passed ? "test passed" : "test FAILED"}</b>
      {report.failure ? ` (${report.failure}'s fault)` : ""}
      {metricsText(report.metrics) && <span> — {metricsText(report.metrics)}</span>}
      {report.detail && <div class="detail">{report.detail}</div>}
      <div class="dim">
        signed by {report.site ? `site ${report.site}` : "nobody"}
        {report.key_id ? ` (key ${report.key_id})` : ""}
        {report.signed_at ? ` at ${new Date(report.signed_at).toLocaleString()}` : ""}
      </div>
    </div>
  );
}

function Requests({ id }) {
  const { data, error } = useApi(`/benchmarks/${id}/associations?status=PENDING`);
  const [reasons, setReasons] = useState({});
  const items = data || [];
  return (
    <Section title="Requests waiting for the committee" id="requests">
      <Problem error={error} />
      {data && !items.length && <Empty>No request waits.</Empty>}
      <ul class="plain">
        {items.map((a) => {
          const path = `/benchmarks/${id}/associations/${a.kind}/${a.component_id}/decision`;
          const key = `${a.kind}-${a.component_id}`;
          return (
            <li class="request" data-testid="request">
              <div>
                {a.kind === "model" ? "Model" : "Dataset"} <b><Name kind={a.kind} id={a.component_id} /></b> asks to join,
                asked by {a.initiated_by}
              </div>
              <Report report={a.compatibility} />
              <label for={`reason-${key}`} class="dim">
                Reason (shown to the requester)
              </label>
              <input
                id={`reason-${key}`}
                value={reasons[key] || ""}
                onInput={(e) => setReasons({ ...reasons, [key]: e.target.value })}
              />
              <div class="buttons">
                <Act label="Approve" class="good" path={path} body={() => ({ approve: true, reason: reasons[key] || "" })} />
                <Act
                  label="Reject"
                  class="bad"
                  path={path}
                  body={() => ({ approve: false, reason: reasons[key] || "rejected by the committee" })}
                />
              </div>
            </li>
          );
        })}
      </ul>
    </Section>
  );
}

function AutoApproval({ id }) {
  const { refresh } = useLive();
  const [message, setMessage] = useState(null);
  const save = async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const kind = form.get("kind");
    const allowlist = String(form.get("allowlist") || "")
      .split(/[\s,]+/)
      .filter(Boolean);
    try {
      await api("PUT", `/benchmarks/${id}/auto-approval/${kind}`, { mode: form.get("mode"), allowlist });
      setMessage({ ok: `${kind} requests: ${form.get("mode")}` });
      refresh();
    } catch (error) {
      setMessage({ error });
    }
  };
  return (
    <Section title="Auto-approval" id="auto-approval">
      <p class="dim">
        How requests are approved without a person deciding. A request whose compatibility test failed is never
        approved automatically.
      </p>
      <form class="inline" onSubmit={save}>
        <label>
          Requests from{" "}
          <select name="kind">
            <option value="model">models</option>
            <option value="dataset">datasets</option>
          </select>
        </label>
        <label>
          are approved{" "}
          <select name="mode">
            <option value="NEVER">never (the committee decides)</option>
            <option value="ALWAYS">always, when the test passed</option>
            <option value="ALLOWLIST">when their owner is on the list</option>
          </select>
        </label>
        <label>
          Allow list <input name="allowlist" placeholder="user names" />
        </label>
        <button type="submit">Save</button>
      </form>
      {message && message.ok && <p role="status">Saved: {message.ok}</p>}
      {message && message.error && <Problem error={message.error} />}
    </Section>
  );
}
