// Forms to register a container (MedPerf's YAML pasted or uploaded, or the JSON spec), a model and
// a benchmark. The server validates; its message is shown beside the field it names.
import { useState } from "preact/hooks";
import { api } from "./api.js";
import { useLive } from "./live.jsx";
import { Section } from "./ui.jsx";

const KINDS = [
  ["container", "Container"],
  ["model", "Model"],
  ["benchmark", "Benchmark"],
];

export function RegisterPage({ kind }) {
  return (
    <>
      <h1>Register</h1>
      <nav class="tabs" aria-label="What to register">
        {KINDS.map(([key, label]) => (
          <a href={`#/register/${key}`} aria-current={kind === key ? "page" : undefined}>
            {label}
          </a>
        ))}
      </nav>
      {kind === "model" ? <ModelForm /> : kind === "benchmark" ? <BenchmarkForm /> : <ContainerForm />}
    </>
  );
}

// One form's submission: the body from the form, the server's answer or its refusal per field.
function useSubmit(path, toBody) {
  const { refresh } = useLive();
  const [state, setState] = useState({});
  const submit = async (event) => {
    event.preventDefault();
    let body;
    try {
      body = toBody(new FormData(event.target));
    } catch (error) {
      setState({ error: { message: error.message, fields: error.fields || {} } });
      return;
    }
    setState({ busy: true });
    try {
      const answer = await api("POST", path, body);
      setState({ created: answer });
      refresh();
    } catch (error) {
      setState({ error });
    }
  };
  return [state, submit];
}

function Field({ name, label, state, children, hint }) {
  const message = state.error && state.error.fields && state.error.fields[name];
  return (
    <div class={`field ${message ? "invalid" : ""}`}>
      <label for={`f-${name}`}>{label}</label>
      {children}
      {hint && (
        <span class="dim hint" id={`f-${name}-hint`}>
          {hint}
        </span>
      )}
      <span class="error field-error" id={`f-${name}-error`} data-testid={`error-${name}`} role={message ? "alert" : undefined}>
        {message || ""}
      </span>
    </div>
  );
}

function input(name, props = {}) {
  return <input id={`f-${name}`} name={name} aria-describedby={`f-${name}-error f-${name}-hint`} {...props} />;
}

function Outcome({ state, what }) {
  const unplaced = state.error && !Object.keys(state.error.fields || {}).length;
  return (
    <>
      {state.created && (
        <p role="status" class="good" data-testid="created">
          Registered {what} {state.created.id}.
        </p>
      )}
      {state.error && (
        <p role="alert" class="error" data-testid="form-error">
          {unplaced ? state.error.message : "The server refused some fields: see the messages beside them."}
        </p>
      )}
    </>
  );
}

function ContainerForm() {
  const [format, setFormat] = useState("container_config");
  const [state, submit] = useSubmit("/containers", (form) => {
    const name = form.get("name");
    const stateValue = form.get("state");
    const document = String(form.get("document") || "");
    if (format === "spec") {
      try {
        return { name, state: stateValue, spec: JSON.parse(document) };
      } catch (error) {
        throw Object.assign(new Error("the spec is not valid JSON"), { fields: { spec: `not JSON: ${error.message}` } });
      }
    }
    const medperf = { [format]: document };
    const parameters = String(form.get("parameters") || "");
    if (parameters.trim()) medperf.parameters = parameters;
    if (form.get("additional_source")) {
      medperf.additional_files = { source: form.get("additional_source"), sha256: form.get("additional_sha256") };
    }
    if (form.get("image_hash")) medperf.image_hash = form.get("image_hash");
    return { name, state: stateValue, medperf };
  });
  const load = (target) => async (event) => {
    const file = event.target.files[0];
    if (file) document.getElementById(target).value = await file.text();
  };
  const documentField = format === "spec" ? "spec" : "medperf";
  return (
    <Section title="A container" id="register-container">
      <p class="dim">
        What a container must do (mounts, files it writes, what leaves a site) is in docs/containers.md. MedPerf's
        container_config.yaml or mlcube.yaml is accepted as it is.
      </p>
      <form onSubmit={submit} class="stack" aria-label="Register a container">
        <Field name="name" label="Name" state={state}>
          {input("name", { required: true, maxLength: 128 })}
        </Field>
        <Field name="format" label="Format" state={state}>
          <select id="f-format" name="format" value={format} onChange={(e) => setFormat(e.target.value)}>
            <option value="container_config">MedPerf container_config.yaml</option>
            <option value="mlcube">MedPerf mlcube.yaml (MLCube-era)</option>
            <option value="spec">JSON container spec</option>
          </select>
        </Field>
        <Field name={documentField} label={format === "spec" ? "Spec (JSON)" : "The YAML document"} state={state}>
          <textarea
            id={`f-${documentField}`}
            name="document"
            rows="12"
            required
            aria-describedby={`f-${documentField}-error`}
          />
          <label class="upload">
            or upload a file <input type="file" accept=".yaml,.yml,.json" onChange={load(`f-${documentField}`)} />
          </label>
        </Field>
        {format !== "spec" && (
          <>
            <Field name="parameters" label="parameters.yaml (optional)" state={state}>
              <textarea id="f-parameters" name="parameters" rows="4" />
            </Field>
            <Field name="additional_source" label="Additional files: URL or synapse:ID (optional)" state={state}>
              {input("additional_source")}
            </Field>
            <Field name="additional_sha256" label="Additional files: sha256" state={state}>
              {input("additional_sha256")}
            </Field>
            <Field name="image_hash" label="Image hash (sha256:…)" state={state}>
              {input("image_hash")}
            </Field>
          </>
        )}
        <Footer state={state} label="Register container" what="container" />
      </form>
    </Section>
  );
}

// Every form ends alike: the entity's state, the button, and what the server said.
function Footer({ state, label, what }) {
  return (
    <>
      <StateField state={state} />
      <button type="submit" disabled={state.busy}>
        {label}
      </button>
      <Outcome state={state} what={what} />
    </>
  );
}

function StateField({ state }) {
  return (
    <Field name="state" label="State" state={state} hint="DEVELOPMENT: you can still change it; OPERATION: final">
      <select id="f-state" name="state">
        <option value="OPERATION">OPERATION</option>
        <option value="DEVELOPMENT">DEVELOPMENT</option>
      </select>
    </Field>
  );
}

function Choose({ name, label, kind, state, hint }) {
  const { mine } = useLive();
  return (
    <Field name={name} label={label} state={state} hint={hint}>
      <select id={`f-${name}`} name={name} required aria-describedby={`f-${name}-error`}>
        <option value="">choose…</option>
        {mine[kind].map((e) => (
          <option value={e.id}>
            {e.name} ({kind} {e.id})
          </option>
        ))}
      </select>
    </Field>
  );
}

function ModelForm() {
  const [state, submit] = useSubmit("/models", (form) => ({
    name: form.get("name"),
    container_id: Number(form.get("container_id")),
    state: form.get("state"),
  }));
  return (
    <Section title="A model" id="register-model">
      <form onSubmit={submit} class="stack" aria-label="Register a model">
        <Field name="name" label="Name" state={state}>
          {input("name", { required: true, maxLength: 128 })}
        </Field>
        <Choose name="container_id" label="Its container" kind="container" state={state} />
        <Footer state={state} label="Register model" what="model" />
      </form>
    </Section>
  );
}

function BenchmarkForm() {
  const [state, submit] = useSubmit("/benchmarks", (form) => {
    const metrics = String(form.get("metrics") || "")
      .split(/[\s,]+/)
      .filter(Boolean);
    return {
      name: form.get("name"),
      description: form.get("description"),
      data_preparator_id: Number(form.get("data_preparator_id")),
      reference_model_id: Number(form.get("reference_model_id")),
      metrics_container_id: Number(form.get("metrics_container_id")),
      demo_dataset: { source: form.get("demo_source"), sha256: form.get("demo_sha256") },
      metrics: metrics.map((name) => ({ name })),
      primary_metric: form.get("primary_metric") || metrics[0] || "",
      state: form.get("state"),
    };
  });
  return (
    <Section title="A benchmark" id="register-benchmark">
      <p class="dim">An admin approves a benchmark before anyone can join it.</p>
      <form onSubmit={submit} class="stack" aria-label="Register a benchmark">
        <Field name="name" label="Name" state={state}>
          {input("name", { required: true, maxLength: 128 })}
        </Field>
        <Field name="description" label="Description" state={state}>
          {input("description")}
        </Field>
        <Choose name="data_preparator_id" label="Data preparator" kind="container" state={state} />
        <Choose name="reference_model_id" label="Reference model" kind="model" state={state} />
        <Choose name="metrics_container_id" label="Metrics container" kind="container" state={state} />
        <Field name="demo_dataset" label="Demo dataset: URL or synapse:ID" state={state}>
          {input("demo_source", { id: "f-demo_dataset", required: true })}
        </Field>
        <Field name="demo_sha256" label="Demo dataset: sha256" state={state}>
          {input("demo_sha256", { required: true })}
        </Field>
        <Field name="metrics" label="Metrics (names, as the metrics container writes them)" state={state}>
          {input("metrics", { required: true, placeholder: "auc, accuracy" })}
        </Field>
        <Field name="primary_metric" label="Primary metric (ranks the board)" state={state}>
          {input("primary_metric")}
        </Field>
        <Footer state={state} label="Submit benchmark" what="benchmark" />
      </form>
    </Section>
  );
}
