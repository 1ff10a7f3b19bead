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

function policyOf(draft) {
  return {
    visibility: draft.visibility,
    granularity: draft.granularity,
    ranking: draft.ranking,
    min_sites: Number(draft.min_sites || 1),
    min_cases: Number(draft.min_cases || 0),
    released: Boolean(draft.released),
    embargo_until: draft.embargo_until ? new Date(draft.embargo_until).toISOString() : null,
  };
}

export function PolicyEditor({ id }) {
  const { refresh } = useLive();
  const { data: board } = useApi(`/benchmarks/${id}/leaderboard?limit=1`);
  const [draft, setDraft] = useState(null);
  const [preview, setPreview] = useState(null);
  const [state, setState] = useState({});
  useEffect(() => {
    if (board && board.policy && !draft) setDraft({ ...board.policy, embargo_until: "" });
  }, [board]);
  if (!draft) return null;
  const look = async (policy = draft) => {
    setState({});
    try {
      setPreview(await api("POST", `/benchmarks/${id}/sharing-policy/preview?limit=10`, policyOf(policy)));
    } catch (error) {
      setState({ error });
    }
  };
  const change = (name) => (event) => {
    const next = { ...draft, [name]: event.target.type === "checkbox" ? event.target.checked : event.target.value };
    setDraft(next);
    look(next);
  };
  const save = async (event) => {
    event.preventDefault();
    try {
      await api("PUT", `/benchmarks/${id}/sharing-policy`, policyOf(draft));
      setState({ saved: true });
      refresh();
    } catch (error) {
      setState({ error });
    }
  };
  const field = (name) => (state.error && state.error.fields[name] ? state.error.fields[name] : null);
  return (
    <Section title="Sharing policy" id="policy">
      <form class="grid-form" onSubmit={save}>
        <label for="visibility">Who sees the board</label>
        <select id="visibility" value={draft.visibility} onChange={change("visibility")}>
          <option value="committee">the committee only</option>
          <option value="participants">owners of its approved models and datasets</option>
          <option value="public">any signed-in user</option>
        </select>
        <label for="granularity">How much</label>
        <select id="granularity" value={draft.granularity} onChange={change("granularity")}>
          <option value="aggregate">one number per model</option>
          <option value="sites">per site, sites unnamed</option>
          <option value="matrix">every model x dataset, named</option>
        </select>
        <label for="ranking">Ranking</label>
        <select id="ranking" value={draft.ranking} onChange={change("ranking")}>
          <option value="primary">by the primary metric</option>
          <option value="mean_rank">by mean rank across sites</option>
        </select>
        <label for="min_sites">Show a model from this many sites</label>
        <input id="min_sites" type="number" min="1" value={draft.min_sites} onChange={change("min_sites")} />
        <span class="error">{field("min_sites")}</span>
        <label for="min_cases">Leave out datasets with fewer cases than</label>
        <input id="min_cases" type="number" min="0" value={draft.min_cases} onChange={change("min_cases")} />
        <span class="error">{field("min_cases")}</span>
        <label for="released">Released (unchecked: held by the committee)</label>
        <input id="released" type="checkbox" checked={draft.released} onChange={change("released")} />
        <label for="embargo_until">Held until (optional)</label>
        <input id="embargo_until" type="datetime-local" value={draft.embargo_until} onChange={change("embargo_until")} />
        <div class="buttons">
          <button type="button" onClick={() => look()}>
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
