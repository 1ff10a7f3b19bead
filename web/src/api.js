// The HTTP API as the pages use it: the token from sign-in in a header, errors as ApiError with the
// server's own message (and, for invalid fields, which field), and the live feed read through fetch
// (EventSource cannot send the token in a header).

const KEY = "medperf-token";
let token = sessionStorage.getItem(KEY) || "";

export const session = {
  get token() {
    return token;
  },
  set(value) {
    token = value;
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  },
};

export class ApiError extends Error {
  constructor(status, message, fields) {
    super(message);
    this.status = status;
    this.fields = fields || {}; // top-level field name -> the server's message
  }
}

export async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "the server cannot be reached; check your connection and try again");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) {
    const message = (data && data.error) || response.statusText || `HTTP ${response.status}`;
    throw new ApiError(response.status, message, fieldsOf(data));
  }
  return data;
}

function fieldsOf(data) {
  const fields = {};
  for (const item of (data && data.fields) || []) {
    const name = String(item.field || "").split(".")[0];
    if (name && !fields[name]) fields[name] = item.message;
  }
  return fields;
}

export async function download(path, filename) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  if (!response.ok) throw new ApiError(response.status, (await response.json().catch(() => ({}))).error || "download failed");
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// Server-sent events over fetch: calls onEvent(item) for each event, onLive() when history ends.
export async function follow(path, { signal, onEvent, onLive }) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, signal });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new ApiError(response.status, body.error || response.statusText);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        else if (line.startsWith("event:")) name = line.slice(6).trim();
      }
      if (!data.length) continue; // a keep-alive comment
      const item = JSON.parse(data.join("\n"));
      if (name === "live") onLive(item);
      else onEvent(item);
    }
  }
}
