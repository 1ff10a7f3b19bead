// What every page shares: who is signed in, what they own, the names of things (people think in
// names, not ids), and the live feed. Pages re-read their data when `tick` moves: once per burst of
// events, and every 10 s besides (heartbeats and site-side progress are not all in the feed). Names
// and what the viewer owns change only with registrations: they are re-read when a registry event
// passes, after the viewer's own actions, and, without the feed, with every tick.
import { createContext } from "preact";
import { useContext, useEffect, useMemo, useRef, useState, useCallback } from "preact/hooks";
import { api, follow } from "./api.js";

export const Live = createContext(null);
export const useLive = () => useContext(Live);

const KINDS = ["benchmark", "model", "dataset", "container"];
const PLURAL = { benchmark: "benchmarks", model: "models", dataset: "datasets", container: "containers" };
const MAX_EVENTS = 300;

export function useLiveState(me) {
  const [tick, setTick] = useState(0);
  const [registered, setRegistered] = useState(0);
  const [events, setEvents] = useState([]);
  const [feed, setFeed] = useState({ state: "connecting" });
  const [names, setNames] = useState({ benchmark: {}, model: {}, dataset: {}, container: {} });
  const [mine, setMine] = useState({ benchmark: [], model: [], dataset: [], container: [] });
  const timer = useRef(null);
  const known = useRef(names);
  const namesStale = useRef(false);

  // One refresh per burst of events; the names too when the burst may have named something new.
  const bump = useCallback((registry = true) => {
    namesStale.current = namesStale.current || registry;
    clearTimeout(timer.current);
    timer.current = setTimeout(() => {
      if (namesStale.current) setRegistered((n) => n + 1);
      namesStale.current = false;
      setTick((t) => t + 1);
    }, 300);
  }, []);

  useEffect(() => {
    const every = setInterval(() => setTick((t) => t + 1), 10_000);
    return () => clearInterval(every);
  }, []);

  // Names and the viewer's own entities, re-read as things are registered.
  useEffect(() => {
    let stale = false;
    (async () => {
      const all = await Promise.all(KINDS.map((k) => api("GET", `/${PLURAL[k]}?limit=500`).catch(() => [])));
      const own = await Promise.all(KINDS.map((k) => api("GET", `/me/${PLURAL[k]}?limit=500`).catch(() => [])));
      if (stale) return;
      const byKind = {};
      KINDS.forEach((k, i) => {
        byKind[k] = Object.fromEntries([...all[i], ...own[i]].map((e) => [e.id, e.name]));
      });
      known.current = byKind;
      setNames(byKind);
      setMine(Object.fromEntries(KINDS.map((k, i) => [k, own[i]])));
    })();
    return () => {
      stale = true;
    };
  }, [registered, feed.state === "live" ? 0 : tick]);

  // The live feed: what the server lets this viewer see, from the last 200 events on.
  useEffect(() => {
    const abort = new AbortController();
    let lastSeq = null;
    let retry = null;
    const connect = async () => {
      const query = lastSeq === null ? "last=200" : `since_seq=${lastSeq + 1}`;
      try {
        await follow(`/console/events?${query}`, {
          signal: abort.signal,
          onLive: () => setFeed({ state: "live" }),
          onEvent: (item) => {
            lastSeq = item.seq;
            setEvents((list) => [item, ...list].slice(0, MAX_EVENTS));
            bump(String(item.subject || "").startsWith("medperf.registry.") || namesUnknown(item.event, known.current));
          },
        });
      } catch (error) {
        if (abort.signal.aborted) return;
        if (error.status === 403 || error.status === 401) {
          setFeed({ state: "unavailable", reason: error.message });
          return; // pages still refresh every 10 s
        }
      }
      if (!abort.signal.aborted) {
        setFeed({ state: "reconnecting" });
        retry = setTimeout(connect, 2000);
      }
    };
    connect();
    return () => {
      abort.abort();
      clearTimeout(retry);
    };
  }, [me.user]);

  return useMemo(() => ({ me, tick, refresh: bump, events, feed, names, mine }), [me, tick, events, feed, names, mine]);
}

// Does the event name an entity whose name is not known here (another's, registered meanwhile)?
function namesUnknown(event, names) {
  const named = [
    ["benchmark", event.benchmark_id],
    ["model", event.model_id],
    ["dataset", event.dataset_id],
    [event.kind, event.component_id],
  ];
  return named.some(([kind, id]) => names[kind] && typeof id === "number" && !(id in names[kind]));
}

// Data from one GET, re-read when the live state moves; `error` holds the server's message.
export function useApi(path, extra = []) {
  const { tick } = useLive();
  const [state, setState] = useState({ data: undefined, error: null });
  useEffect(() => {
    if (!path) return undefined;
    let stale = false;
    api("GET", path).then(
      (data) => !stale && setState({ data, error: null }),
      (error) => !stale && setState((s) => ({ data: s.data, error })),
    );
    return () => {
      stale = true;
    };
  }, [path, tick, ...extra]);
  return state;
}

// An entity's name, its kind and id on hover (and for screen readers).
export function Name({ kind, id }) {
  const { names } = useLive();
  if (id === null || id === undefined) return <span class="dim">–</span>;
  const name = names[kind] && names[kind][id];
  return (
    <span class="name" title={`${kind} ${id}`} data-id={`${kind}:${id}`}>
      {name || `${kind} ${id}`}
    </span>
  );
}
