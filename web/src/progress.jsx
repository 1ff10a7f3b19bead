// Work running at the viewer's sites, live: each job's stage and, for long stages (hashing,
// a preparator's report), how far along it is. Fed by the job events of the live feed.
import { useLive, Name } from "./live.jsx";
import { Section, Empty } from "./ui.jsx";

const ENDED = new Set(["job.succeeded", "job.failed", "job.cancelled"]);
// The events that move a job along; a released log tail (job.log_released) comes after its end.
const STEPS = new Set(["job.queued", "job.started", "job.progress", ...ENDED]);

function latestJobs(events, sites) {
  const jobs = new Map();
  for (const item of [...events].reverse()) {
    const e = item.event;
    if (!STEPS.has(e.type) || !sites.includes(e.site)) continue;
    const key = `${e.site}/${e.job_id}`;
    const job = jobs.get(key) || { site: e.site, job_id: e.job_id, kind: e.kind, benchmark_id: e.benchmark_id };
    Object.assign(job, { model_id: e.model_id, dataset_id: e.dataset_id, type: e.type, at: e.occurred_at });
    if (e.type === "job.progress") Object.assign(job, { stage: e.stage, done: e.done, total: e.total, message: e.message, report: e.report });
    if (e.type === "job.started") job.stage = "started";
    jobs.set(key, job);
  }
  return [...jobs.values()].filter((j) => !ENDED.has(j.type));
}

function Bar({ job }) {
  if (job.total) {
    const percent = Math.min(100, Math.round((100 * job.done) / job.total));
    return (
      <>
        <progress max={job.total} value={job.done} aria-label={`${job.stage} of job ${job.job_id}`} /> {percent} %
      </>
    );
  }
  return <progress aria-label={`${job.stage || "running"} of job ${job.job_id}`} />;
}

export function Progress({ sites }) {
  const { events, feed } = useLive();
  const running = latestJobs(events, sites);
  return (
    <Section title="Running now" id="running">
      {feed.state !== "live" && <p class="dim">Live progress needs the event feed ({feed.state}).</p>}
      {!running.length && <Empty>Nothing runs at your sites right now.</Empty>}
      <ul class="plain">
        {running.map((job) => (
          <li data-testid="running-job">
            <b>{job.site}</b> job {job.job_id}: {job.kind}
            {job.kind === "prepare" ? " (preparing a dataset)" : ""} for <Name kind="benchmark" id={job.benchmark_id} />
            {job.model_id ? (
              <>
                {" "}
                — model <Name kind="model" id={job.model_id} />
              </>
            ) : null}
            <div>
              <span class="stage">{job.stage || job.type.slice(4)}</span> <Bar job={job} />
              {job.message ? <span class="dim"> {job.message}</span> : null}
              {job.report ? <span class="dim" data-testid="report-summary"> {summary(job.report)}</span> : null}
            </div>
          </li>
        ))}
      </ul>
    </Section>
  );
}

function summary(report) {
  if (typeof report !== "object") return String(report);
  return Object.entries(report)
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
}
