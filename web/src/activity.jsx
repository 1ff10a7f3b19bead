// What happened, live, as far as the viewer may see it (the server filters the feed): entity
// names instead of ids, the id on hover.
import { useLive, Name } from "./live.jsx";
import { Section, Empty, metricsText } from "./ui.jsx";

const TONE = [
  [/(failed|deleted|revoked|rejected)$/, "bad"],
  [/(succeeded|approved|reported|tested|released)$/, "good"],
  [/(requested|queued|submitted|started|progress)$/, "wait"],
];

export function describe(e) {
  const parts = [];
  if (e.site) parts.push(<b>{e.site}</b>);
  if (e.kind && (e.kind === "model" || e.kind === "dataset") && e.component_id) {
    parts.push(
      <>
        {e.kind} <Name kind={e.kind} id={e.component_id} />
      </>,
    );
  }
  if (e.model_id) parts.push(<>model <Name kind="model" id={e.model_id} /></>);
  if (e.dataset_id) parts.push(<>dataset <Name kind="dataset" id={e.dataset_id} /></>);
  if (e.benchmark_id) parts.push(<>in <Name kind="benchmark" id={e.benchmark_id} /></>);
  if (e.name && !e.benchmark_id) parts.push(<>“{e.name}”</>);
  if (e.type === "job.failed") parts.push(<span class="bad">{e.failure}'s fault: {e.reason}</span>);
  else if (e.reason) parts.push(<span class="dim">{e.reason}</span>);
  if (e.stage) parts.push(<span>{e.stage}{e.total ? ` ${Math.round((100 * e.done) / e.total)} %` : ""}</span>);
  if (e.metrics && typeof e.metrics === "object") parts.push(<span>{metricsText(e.metrics)}</span>);
  if (e.held) parts.push(<span class="dim">(held for the data owner)</span>);
  return parts.flatMap((p, i) => (i ? [" ", p] : [p]));
}

export function Activity() {
  const { events, feed } = useLive();
  return (
    <>
      <h1>Activity</h1>
      <Section title="Live events" id="activity">
        <p class="dim" data-testid="feed-status">
          {feed.state === "live" ? "Live: what concerns you, as it happens." : feed.reason || feed.state}
        </p>
        {!events.length && <Empty>No event concerns you yet.</Empty>}
        <ol class="feed" data-testid="feed" aria-live="polite">
          {events.map((item) => {
            const e = item.event;
            const tone = (TONE.find(([pattern]) => pattern.test(e.type || "")) || [null, ""])[1];
            return (
              <li data-type={e.type} data-testid="event">
                <time class="dim">{String(e.occurred_at || item.stored_at || "").slice(11, 19)}</time>{" "}
                <b class={tone}>{e.type}</b> <span class="dim">{e.actor}</span> {describe(e)}
              </li>
            );
          })}
        </ol>
      </Section>
    </>
  );
}
