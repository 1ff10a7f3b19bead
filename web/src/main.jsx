// The web app: sign in, then a page per role ("my work"), each benchmark's page, forms to register
// things, and the live activity. Served by the ingress at /app; every request goes to the same API
// (and the same permission table) as the CLI.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, session } from "./api.js";
import { Live, useLiveState } from "./live.jsx";
import { Home } from "./home.jsx";
import { BenchmarkPage } from "./benchmark.jsx";
import { DataPage } from "./data.jsx";
import { ModelsPage } from "./models.jsx";
import { RegisterPage } from "./register.jsx";
import { Activity } from "./activity.jsx";
import "./style.css";

function useRoute() {
  const [hash, setHash] = useState(location.hash || "#/");
  useEffect(() => {
    const changed = () => setHash(location.hash || "#/");
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return hash.slice(1).split("/").filter(Boolean);
}

function SignIn({ onSignedIn }) {
  const [error, setError] = useState("");
  const [issuer, setIssuer] = useState(null);
  const [device, setDevice] = useState(null);
  useEffect(() => {
    api("GET", "/app/sign-in").then((options) => setIssuer(options.oidc_issuer), () => setIssuer(null));
  }, []);
  const enter = async (token) => {
    session.set(token);
    try {
      onSignedIn(await api("GET", "/me"));
    } catch (failure) {
      session.set("");
      setError(failure.message);
    }
  };
  const submit = (event) => {
    event.preventDefault();
    enter(new FormData(event.target).get("token").trim());
  };
  // The device grant (RFC 8628), as `medperf auth login` does it: approve the code at the issuer.
  const withIssuer = async () => {
    setError("");
    let started;
    try {
      started = await api("POST", "/app/sign-in/device");
    } catch (failure) {
      setError(failure.message);
      return;
    }
    setDevice(started);
    let interval = Math.max(1, Number(started.interval) || 5) * 1000;
    const deadline = Date.now() + (Number(started.expires_in) || 600) * 1000;
    while (Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, interval));
      let answer;
      try {
        answer = await api("POST", "/app/sign-in/token", { device_code: started.device_code });
      } catch (failure) {
        setDevice(null);
        setError(failure.message);
        return;
      }
      if (answer.access_token) {
        setDevice(null);
        return enter(answer.access_token);
      }
      if (answer.slow_down) interval += 5000;
    }
    setDevice(null);
    setError("The code expired before it was approved: sign in again.");
  };
  return (
    <main id="main" class="signin">
      <h1>MedPerf federation</h1>
      {issuer && (
        <section aria-labelledby="oidc-title">
          <h2 id="oidc-title">Sign in with your identity provider</h2>
          {!device && (
            <button type="button" onClick={withIssuer}>
              Sign in at {new URL(issuer).host}
            </button>
          )}
          {device && (
            <p role="status" data-testid="device-code">
              Open{" "}
              <a href={device.verification_uri_complete || device.verification_uri} target="_blank" rel="noopener">
                {device.verification_uri}
              </a>{" "}
              and confirm the code <b class="code">{device.user_code}</b>. This page signs you in once you have.
            </p>
          )}
        </section>
      )}
      <form onSubmit={submit} aria-labelledby="signin-title">
        <h2 id="signin-title">{issuer ? "Or paste an API token" : "Sign in"}</h2>
        <p class="dim">
          An admin issues tokens (<code>medperf admin issue-token USER</code>; the first admin's comes from{" "}
          <code>medperf admin bootstrap</code>). It stays in this browser tab only.
        </p>
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="off" required />
        <button type="submit">Sign in</button>
        <p role="alert" class="error">
          {error}
        </p>
      </form>
    </main>
  );
}

const PAGES = [
  ["", "My work"],
  ["data", "Data"],
  ["models", "Models"],
  ["register", "Register"],
  ["activity", "Activity"],
];

function Shell({ me, onSignOut }) {
  const live = useLiveState(me);
  const route = useRoute();
  const [page, arg] = route;
  let content;
  if (page === "benchmarks" && arg) content = <BenchmarkPage id={Number(arg)} />;
  else if (page === "data") content = <DataPage />;
  else if (page === "models") content = <ModelsPage />;
  else if (page === "register") content = <RegisterPage kind={arg || "container"} />;
  else if (page === "activity") content = <Activity />;
  else content = <Home />;
  return (
    <Live.Provider value={live}>
      <a class="skip" href="#main" onClick={(e) => (e.preventDefault(), document.getElementById("main").focus())}>
        Skip to content
      </a>
      <header>
        <span class="brand">MedPerf federation</span>
        <nav aria-label="Pages">
          {PAGES.map(([path, label]) => (
            <a href={`#/${path}`} aria-current={(page || "") === path ? "page" : undefined}>
              {label}
            </a>
          ))}
          {me.is_admin && <a href="/console">Admin console</a>}
        </nav>
        <span class="who" data-testid="who">
          {me.user}
          {me.is_admin ? " (admin)" : ""}
        </span>
        <span class={`feed-state ${live.feed.state}`} data-testid="feed-state" title={live.feed.reason || ""}>
          {live.feed.state === "live" ? "● live" : live.feed.state === "unavailable" ? "○ refreshing every 10 s" : "○ connecting"}
        </span>
        <button type="button" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <main id="main" tabindex="-1">
        {content}
      </main>
    </Live.Provider>
  );
}

function App() {
  const [me, setMe] = useState(null);
  const [checking, setChecking] = useState(Boolean(session.token));
  useEffect(() => {
    if (!session.token) return;
    api("GET", "/me")
      .then(setMe, () => session.set(""))
      .finally(() => setChecking(false));
  }, []);
  if (checking) return <p class="dim">Signing in…</p>;
  if (!me) return <SignIn onSignedIn={setMe} />;
  const signOut = () => {
    session.set("");
    setMe(null);
  };
  return <Shell me={me} onSignOut={signOut} />;
}

render(<App />, document.getElementById("app"));
