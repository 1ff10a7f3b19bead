// The data owner's page: their sites and datasets, preparations as they run, the statistics that
// left the site, results held for their release, and failed jobs with whose fault and the log tail.
import { useApi, useLive, Name } from "./live.jsx";
import { Section, Empty, Problem, Act, Status, When } from "./ui.jsx";
import { Progress } from "./progress.jsx";

export function DataPage() {
  const { mine } = useLive();
  const sites = [...new Set(mine.dataset.map((d) => d.site))].sort();
  return (
    <>
      <h1>Data</h1>
      {!mine.dataset.length && (
        <Empty>
          You have no dataset yet. At your site, <code>medperf dataset submit --benchmark B --data-path D --labels-path L
          --name N</code> prepares one with the benchmark's preparator and asks you before anything leaves the site.
        </Empty>
      )}
      {mine.dataset.length > 0 && <Datasets />}
      <Progress sites={sites} />
      <Held />
      <Failed sites={sites} />
    </>
  );
}

function Datasets() {
  const { mine } = useLive();
  const associations = useApi("/me/associations?limit=500");
  const joined = (id) => (associations.data || []).filter((a) => a.kind === "dataset" && a.component_id === id);
  return (
    <Section title="Your datasets" id="datasets">
      <table>
        <thead>
          <tr>
            <th scope="col">dataset</th>
            <th scope="col">site</th>
            <th scope="col">state</th>
            <th scope="col">benchmarks</th>
            <th scope="col">what left the site</th>
          </tr>
        </thead>
        <tbody>
          {mine.dataset.map((d) => (
            <tr data-testid="dataset-row">
              <th scope="row" title={`dataset ${d.id}`}>
                {d.name}
              </th>
              <td>{d.site}</td>
              <td>
                <Status value={d.state} />
              </td>
              <td>
                {joined(d.id).map((a) => (
                  <div>
                    <a href={`#/benchmarks/${a.benchmark_id}`}>
                      <Name kind="benchmark" id={a.benchmark_id} />
                    </a>{" "}
                    <Status value={a.status} />
                  </div>
                ))}
              </td>
              <td>
                <details>
                  <summary>hashes and statistics</summary>
                  <dl class="facts">
                    <dt>input hash</dt>
                    <dd>
                      <code>{d.input_hash}</code>
                    </dd>
                    <dt>prepared hash</dt>
                    <dd>
                      <code>{d.prepared_hash}</code>
                    </dd>
                  </dl>
                  <pre data-testid="statistics">{JSON.stringify(d.statistics, null, 2)}</pre>
                </details>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </Section>
  );
}

function Held() {
  const { data, error } = useApi("/console/pending");
  const held = (data && data.held_results) || [];
  const sites = [...new Set(held.map((h) => h.site))];
  return (
    <Section title="Results waiting for your release" id="held">
      <Problem error={error} />
      <p class="dim">
        Your site holds these results until you release them: only their metrics leave the site, signed by its agent.
      </p>
      {data && !held.length && <Empty>No result waits for your release.</Empty>}
      {sites.map((site) => (
        <div class="site-block">
          <h3>
            {site}{" "}
            <Act
              label="Release all"
              path={`/sites/${site}/held-results/release`}
              body={{ all: true }}
              confirm={`Let every held result's metrics leave ${site}?`}
              testid={`release-all-${site}`}
            />
          </h3>
          <ul class="plain">
            {held
              .filter((h) => h.site === site)
              .map((h) => (
                <li data-testid="held-result">
                  <Name kind="model" id={h.model_id} /> on <Name kind="dataset" id={h.dataset_id} /> in{" "}
                  <Name kind="benchmark" id={h.benchmark_id} /> <span class="dim">(job {h.id})</span>{" "}
                  <Act label="Release" path={`/sites/${site}/held-results/release`} body={{ job_ids: [h.id] }} />
                </li>
              ))}
          </ul>
        </div>
      ))}
    </Section>
  );
}

export function FailedJob({ job, canRelease }) {
  return (
    <tr data-testid="failed-job">
      <td>{job.site}</td>
      <td>
        <Name kind="benchmark" id={job.benchmark_id} />
      </td>
      <td>
        <Name kind="model" id={job.model_id} />
      </td>
      <td>
        <Name kind="dataset" id={job.dataset_id} />
      </td>
      <td>
        <b class="bad">{job.failure}'s fault</b>
        {job.will_retry ? " (will retry)" : ""}: {job.failure_reason}
        {job.log_tail ? (
          <details>
            <summary>log tail</summary>
            <pre data-testid="log-tail">{job.log_tail}</pre>
          </details>
        ) : job.log_tail_kept_at_site ? (
          <div class="dim">
            The log tail stays at the site.{" "}
            {canRelease && (
              <Act
                label="Release log tail"
                path={`/sites/${job.site}/jobs/${job.job_id}/log-release`}
                confirm="The log may quote patient data. Let its tail leave the site for the model owner and committee?"
              />
            )}
          </div>
        ) : null}
      </td>
      <td>
        <When at={job.last_event_at} />
      </td>
    </tr>
  );
}

export function FailedTable({ jobs, canRelease }) {
  return (
    <table>
      <thead>
        <tr>
          <th scope="col">site</th>
          <th scope="col">benchmark</th>
          <th scope="col">model</th>
          <th scope="col">dataset</th>
          <th scope="col">whose fault, why</th>
          <th scope="col">when</th>
        </tr>
      </thead>
      <tbody>
        {jobs.map((j) => (
          <FailedJob job={j} canRelease={canRelease} />
        ))}
      </tbody>
    </table>
  );
}

function Failed({ sites }) {
  const { data, error } = useApi("/console/jobs?status=failed&limit=200");
  const jobs = (data || []).filter((j) => sites.includes(j.site));
  return (
    <Section title="Failed jobs at your sites" id="failed">
      <Problem error={error} />
      {data && !jobs.length && <Empty>No job failed at your sites.</Empty>}
      {jobs.length > 0 && <FailedTable jobs={jobs} canRelease />}
    </Section>
  );
}
