// The committee's sharing policy: edit it, preview what the public, a participant, a model owner
// and the committee itself would each see under it (side by side, computed by the server with the
// same rules it will apply), then save.
import { useEffect, useState } from "preact/hooks";
import { api } from "./api.js";
import { useApi, useLive } from "./live.jsx";
import { Section, Problem, Empty } from "./ui.jsx";
import { BoardTable, shownBoard } from "./board.jsx";

const AUDIENCES = [
  ["public", "Any signed-in user"],
  ["participant", "A participant"],
  ["model_owner", "A model owner"],
  ["committee", "The committee"],
];

function policyOf(form) {
  const data = new FormData(form);
  const embargo = String(data.get("embargo_until") || "");
  return {
    visibility: data.get("visibility"),
    granularity: data.get("granularity"),
    ranking: data.get("ranking"),
    min_sites: Number(data.get("min_sites") || 1),
    min_cases: Number(data.get("min_cases") || 0),
    released: data.get("released") === "on",
    embargo_until: embargo ? new Date(embargo).toISOString() : null,
  };
}

export function PolicyEditor({ id }) {
  const { refresh } = useLive();
  const { data: board } = useApi(`/benchmarks/${id}/leaderboard?limit=1`);
  const [policy, setPolicy] = useState(null);
  const [preview, setPreview] = useState(null);
  const [state, setState] = useState({});
  useEffect(() => {
    if (board && board.policy && !policy) setPolicy(board.policy);
  }, [board]);
  if (!policy) return null;
  const look = async (event) => {
    const form = event.target.form || event.target;
    setState({});
    try {
      setPreview(await api("POST", `/benchmarks/${id}/sharing-policy/preview`, policyOf(form)));
    } catch (error) {
      setState({ error });
    }
  };
  const save = async (event) => {
    event.preventDefault();
    try {
      await api("PUT", `/benchmarks/${id}/sharing-policy`, policyOf(event.target));
      setState({ saved: true });
      refresh();
    } catch (error) {
      setState({ error });
    }
  };
  const field = (name) => (state.error && state.error.fields[name] ? state.error.fields[name] : null);
  return (
    <Section title="Sharing policy" id="policy">
      <form class="grid-form" onSubmit={save} onChange={look}>
        <label for="visibility">Who sees the board</label>
        <select id="visibility" name="visibility" value={policy.visibility}>
          <option value="committee">the committee only</option>
          <option value="participants">owners of its approved models and datasets</option>
          <option value="public">any signed-in user</option>
        </select>
        <label for="granularity">How much</label>
        <select id="granularity" name="granularity" value={policy.granularity}>
          <option value="aggregate">one number per model</option>
          <option value="sites">per site, sites unnamed</option>
          <option value="matrix">every model x dataset, named</option>
        </select>
        <label for="ranking">Ranking</label>
        <select id="ranking" name="ranking" value={policy.ranking}>
          <option value="primary">by the primary metric</option>
          <option value="mean_rank">by mean rank across sites</option>
        </select>
        <label for="min_sites">Show a model from this many sites</label>
        <input id="min_sites" name="min_sites" type="number" min="1" value={policy.min_sites} aria-describedby="min_sites-error" />
        <span id="min_sites-error" class="error">{field("min_sites")}</span>
        <label for="min_cases">Leave out datasets with fewer cases than</label>
        <input id="min_cases" name="min_cases" type="number" min="0" value={policy.min_cases} />
        <label for="released">Released (unchecked: held by the committee)</label>
        <input id="released" name="released" type="checkbox" checked={policy.released} />
        <label for="embargo_until">Held until (optional)</label>
        <input id="embargo_until" name="embargo_until" type="datetime-local" />
        <div class="buttons">
          <button type="button" onClick={look}>
            Preview
          </button>
          <button type="submit">Save policy</button>
        </div>
      </form>
      <Problem error={state.error} />
      {state.saved && <p role="status">Saved. Everyone sees the board under the new policy from now on.</p>}
      {preview && (
        <div class="audiences" data-testid="policy-preview">
          {AUDIENCES.map(([key, label]) => (
            <Audience label={audience(key, label, preview)} view={preview[key]} testid={`preview-${key}`} />
          ))}
        </div>
      )}
    </Section>
  );
}

function audience(key, label, preview) {
  const owner = preview.model_owner_is;
  return key === "model_owner" && owner ? `${label}: ${owner.user}, owner of ${owner.model}` : label;
}

function Audience({ label, view, testid }) {
  const board = shownBoard(view);
  return (
    <div class="audience" data-testid={testid}>
      <h3>{label}</h3>
      {!view && <Empty>—</Empty>}
      {view && view.refused && <p class="dim">Sees nothing: {view.refused}</p>}
      {view && view.held && <p class="dim">{view.held}</p>}
      {view && !view.refused && !view.held && !board && <Empty>Sees no board.</Empty>}
      {board && <BoardTable board={board} testid={`${testid}-board`} />}
    </div>
  );
}
