// The model owner's page: their models and containers, the compatibility tests and association
// requests, their own results at every site (even where the shared board hides them), and why
// runs failed (the log tail only where the site's data owner released it).
import { useApi, useLive, Name } from "./live.jsx";
import { Section, Empty, Problem, Status, metricsText } from "./ui.jsx";
import { BoardTable, shownBoard } from "./board.jsx";
import { FailedTable } from "./data.jsx";

export function ModelsPage() {
  const { mine } = useLive();
  const associations = useApi("/me/associations?limit=500");
  const modelIds = new Set(mine.model.map((m) => m.id));
  const requests = (associations.data || []).filter((a) => a.kind === "model" && modelIds.has(a.component_id));
  const benchmarks = [...new Set(requests.filter((a) => a.status === "APPROVED").map((a) => a.benchmark_id))];
  return (
    <>
      <h1>Models</h1>
      {!mine.model.length && !mine.container.length && (
        <Empty>
          You have no model yet: <a href="#/register/container">register its container</a>, then{" "}
          <a href="#/register/model">the model</a>.
        </Empty>
      )}
      {mine.model.length > 0 && <Models />}
      {mine.container.length > 0 && <Containers />}
      <Section title="Compatibility tests and requests to join" id="associations">
        <Problem error={associations.error} />
        {associations.data && !requests.length && <Empty>None of your models has asked to join a benchmark.</Empty>}
        {requests.length > 0 && (
          <table>
            <thead>
              <tr>
                <th scope="col">model</th>
                <th scope="col">benchmark</th>
                <th scope="col">state</th>
                <th scope="col">compatibility test</th>
              </tr>
            </thead>
            <tbody>
              {requests.map((a) => (
                <tr data-testid="association-row">
                  <th scope="row">
                    <Name kind="model" id={a.component_id} />
                  </th>
                  <td>
                    <a href={`#/benchmarks/${a.benchmark_id}`}>
                      <Name kind="benchmark" id={a.benchmark_id} />
                    </a>
                  </td>
                  <td>
                    <Status value={a.status} />
                  </td>
                  <td>{test(a.compatibility)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      {benchmarks.map((id) => (
        <Results id={id} />
      ))}
      <Failures ids={modelIds} />
    </>
  );
}

function test(report) {
  if (!report) return <span class="dim">not tested yet</span>;
  const metrics = metricsText(report.metrics);
  return (
    <span class={report.passed ? "good" : "bad"}>
      {report.passed ? "passed" : `failed${report.failure ? ` (${report.failure}'s fault)` : ""}`}
      {metrics ? ` — ${metrics}` : ""}
      {report.detail ? <div class="detail">{report.detail}</div> : null}
    </span>
  );
}

function Models() {
  const { mine } = useLive();
  return (
    <Section title="Your models" id="models">
      <table>
        <thead>
          <tr>
            <th scope="col">model</th>
            <th scope="col">container</th>
            <th scope="col">state</th>
          </tr>
        </thead>
        <tbody>
          {mine.model.map((m) => (
            <tr data-testid="model-row">
              <th scope="row" title={`model ${m.id}`}>
                {m.name}
              </th>
              <td>
                <Name kind="container" id={m.container_id} />
              </td>
              <td>
                <Status value={m.state} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </Section>
  );
}

function Containers() {
  const { mine } = useLive();
  return (
    <Section title="Your containers" id="containers">
      <table>
        <thead>
          <tr>
            <th scope="col">container</th>
            <th scope="col">image</th>
            <th scope="col">state</th>
          </tr>
        </thead>
        <tbody>
          {mine.container.map((c) => (
            <tr data-testid="container-row">
              <th scope="row" title={`container ${c.id}`}>
                {c.name}
              </th>
              <td>
                <code>{(c.spec && (c.spec.image || c.spec.image_digest)) || "–"}</code>
              </td>
              <td>
                <Status value={c.state} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </Section>
  );
}

function Results({ id }) {
  const { data, error } = useApi(`/benchmarks/${id}/leaderboard?limit=100`);
  const board = (data && data.yours) || shownBoard(data);
  return (
    <Section title={<>Your results in <Name kind="benchmark" id={id} /></>} id={`results-${id}`}>
      <Problem error={error} />
      {data && data.held && <p class="dim">{data.held}</p>}
      {data && !board && <Empty>No result yet.</Empty>}
      {board && <BoardTable board={board} testid="your-results" />}
    </Section>
  );
}

function Failures({ ids }) {
  const { data, error } = useApi("/console/jobs?status=failed&limit=200");
  const jobs = (data || []).filter((j) => ids.has(j.model_id));
  return (
    <Section title="Where your models failed" id="model-failures">
      <Problem error={error} />
      {data && !jobs.length && <Empty>None of your models failed anywhere.</Empty>}
      {jobs.length > 0 && <FailedTable jobs={jobs} canRelease={false} />}
    </Section>
  );
}
