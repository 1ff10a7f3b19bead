// "My work": what waits for this person, then a section per role they hold. Roles are relations
// (as in MedPerf): the committee of the benchmarks they own, the data owner of their sites, the
// owner of their models, and an admin.
import { useLive, useApi, Name } from "./live.jsx";
import { Section, Empty, Act, Status, Problem } from "./ui.jsx";

export function Home() {
  const { me, mine } = useLive();
  const pending = useApi("/console/pending");
  const roles = [
    mine.benchmark.length && "committee",
    mine.dataset.length && "data owner",
    (mine.model.length || mine.container.length) && "model owner",
    me.is_admin && "admin",
  ].filter(Boolean);
  return (
    <>
      <h1>My work</h1>
      <p class="dim" data-testid="roles">
        {roles.length ? `You act here as: ${roles.join(", ")}.` : "You own nothing here yet."}{" "}
        <a href="#/register">Register a container, model or benchmark</a>.
      </p>
      <Waiting pending={pending} />
      {(mine.benchmark.length > 0 || me.is_admin) && <Benchmarks />}
      {mine.dataset.length > 0 && (
        <Section title="Your datasets" id="home-data">
          <p>
            {mine.dataset.length} dataset(s) at {new Set(mine.dataset.map((d) => d.site)).size} site(s).{" "}
            <a href="#/data">Follow preparations, release held results, see failed jobs</a>.
          </p>
        </Section>
      )}
      {(mine.model.length > 0 || mine.container.length > 0) && (
        <Section title="Your models" id="home-models">
          <p>
            {mine.model.length} model(s), {mine.container.length} container(s).{" "}
            <a href="#/models">See their tests, associations and results at every site</a>.
          </p>
        </Section>
      )}
    </>
  );
}

function Waiting({ pending }) {
  const { data, error } = pending;
  if (error) return <Problem error={error} />;
  if (!data) return null;
  const items = [...data.benchmarks, ...data.associations, ...data.held_results];
  return (
    <Section title="Waiting for a decision" id="waiting">
      {!items.length && <Empty>Nothing waits for a decision of yours.</Empty>}
      <ul class="plain">
        {data.benchmarks.map((b) => (
          <li data-testid="pending-benchmark">
            Benchmark <Name kind="benchmark" id={b.benchmark_id} /> waits for an admin's approval.{" "}
            <Act label="Approve" class="good" path={b.action.path} body={{ approve: true }} />
            <Act label="Reject" class="bad" path={b.action.path} body={{ approve: false, reason: "rejected in the web app" }} />
          </li>
        ))}
        {data.associations.map((a) => (
          <li data-testid="pending-association">
            {a.kind === "model" ? "Model" : "Dataset"} <Name kind={a.kind} id={a.component_id} /> asks to join{" "}
            <a href={`#/benchmarks/${a.benchmark_id}`}>
              <Name kind="benchmark" id={a.benchmark_id} />
            </a>{" "}
            <span class="dim">(decided by {a.decides})</span>
          </li>
        ))}
        {data.held_results.map((h) => (
          <li data-testid="pending-held">
            A result at <b>{h.site}</b> for <Name kind="benchmark" id={h.benchmark_id} /> waits for its data owner:{" "}
            <a href="#/data">release it</a>
          </li>
        ))}
      </ul>
    </Section>
  );
}

function Benchmarks() {
  const { me, mine } = useLive();
  const all = useApi(me.is_admin ? "/benchmarks?limit=500" : null);
  const list = me.is_admin && all.data ? all.data : mine.benchmark;
  return (
    <Section title={me.is_admin ? "Benchmarks" : "Benchmarks you run"} id="home-benchmarks">
      {!list.length && <Empty>No benchmark yet.</Empty>}
      {list.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">benchmark</th>
              <th scope="col">owner</th>
              <th scope="col">approval</th>
              <th scope="col">state</th>
            </tr>
          </thead>
          <tbody>
            {list.map((b) => (
              <tr data-testid="benchmark-row">
                <td>
                  <a href={`#/benchmarks/${b.id}`} title={`benchmark ${b.id}`}>
                    {b.name}
                  </a>
                </td>
                <td>{b.owner}</td>
                <td>
                  <Status value={b.approval_status} />
                </td>
                <td>
                  <Status value={b.state} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}
