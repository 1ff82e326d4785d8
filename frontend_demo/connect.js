// Getting in: a ticket (with the user's JWT, or the demo login), then the WebSocket, and plain words for refusals.
//
// Browsers cannot read why a WebSocket handshake was refused (the HTTP status and body are hidden; the page only
// sees close code 1006). So the ticket request doubles as the pre-flight: it runs the same Origin, credential
// and shutdown checks and its refusals are readable. What only the socket checks (per-user session limits, the
// provider) is explained from what the page knows.

export class Refusal extends Error {
  constructor(message, { status = 0, code = "", retryAfterS = 0 } = {}) {
    super(message);
    Object.assign(this, { status, code, retryAfterS });
  }
}

function retryText(s) {
  if (!s) return "";
  return s >= 90 ? ` — retry in about ${Math.ceil(s / 60)} min` : ` — retry in ${s} s`;
}

// An HTTP refusal {status, error: {code, message}, retry-after} in plain words.
export function explainDenial(status, error = {}, retryAfterS = 0) {
  const code = error.code || "";
  const retry = retryText(retryAfterS);
  if (code === "too_many_sessions") return `Too many sessions open for this user${retry}.`;
  if (code === "session_rate_limited") return `Too many sessions started this hour${retry}.`;
  if (code === "invalid_ticket") return "The ticket expired or was already used. Press Start again.";
  if (code === "origin_not_allowed") return "The relay does not accept this page's address (PARLEY_ALLOWED_ORIGINS).";
  if (code === "provider_not_allowed") return "Your sign-in may not use this provider. Choose another one.";
  if (status === 401) return `Sign-in failed: ${error.message || "bad or expired token"}. Get a fresh token.`;
  if (status === 403) return `Not allowed: ${error.message || "forbidden"}.`;
  if (status === 429) return `Too many requests${retry}.`;
  if (status === 503) return `The relay is shutting down or not ready${retry || " — retry in a few seconds"}.`;
  return `The relay refused (HTTP ${status}): ${error.message || "unknown error"}.`;
}

// -> {ticket, expiresIn, user, providers (null: any)}
export async function getTicket(jwt) {
  const url = jwt ? "/v1/voice/ticket" : "/v1/demo/ticket";
  const headers = jwt ? { Authorization: `Bearer ${jwt}` } : {};
  let res;
  try {
    res = await fetch(url, { method: "POST", headers, cache: "no-store" });
  } catch {
    throw new Refusal("Cannot reach the relay. Is it running, and is this the right address?");
  }
  if (res.ok) {
    const body = await res.json();
    return { ticket: body.ticket, expiresIn: body.expires_in, user: body.user || null, providers: body.providers || null };
  }
  if (res.status === 404 || res.status === 405) {
    throw new Refusal(
      jwt
        ? "This relay gives no browser tickets (its ticket endpoint is off)."
        : "This relay has no demo login. Paste a token under “Sign in” (parley token --user alice).",
      { status: res.status },
    );
  }
  const body = await res.json().catch(() => ({}));
  const retryAfterS = Number(res.headers.get("Retry-After")) || 0;
  const error = body.error || {};
  throw new Refusal(explainDenial(res.status, error, retryAfterS), { status: res.status, code: error.code, retryAfterS });
}

// Opens the socket; resolves once open, rejects with a Refusal when it closes first.
export function openSocket(provider, ticket, hints = {}) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/ws/voice?provider=${encodeURIComponent(provider)}`;
  // "parley-events": the relay sends this page its own events too (sessions, sources, timings), not only GA ones.
  const ws = new WebSocket(url, ["realtime", "parley-events", `parley-ticket.${ticket}`]);
  return new Promise((resolve, reject) => {
    ws.onopen = () => {
      ws.onopen = ws.onclose = ws.onerror = null;
      resolve(ws);
    };
    ws.onerror = () => {};
    ws.onclose = (e) => {
      explainRefusedSocket(e.code, provider, hints).then((text) => reject(new Refusal(text, { status: e.code })));
    };
  });
}

// Dependencies /readyz names as not ready, e.g. ["local_voice_server"], or [] when it is ready or unreachable.
async function notReady() {
  try {
    const res = await fetch("/readyz", { cache: "no-store" });
    if (res.ok) return [];
    const body = await res.json();
    return Array.isArray(body.not_ready) ? body.not_ready : [];
  } catch {
    return [];
  }
}

const VOICE_DEPENDENCIES = ["local_voice_server", "llm"];

// Browsers hide a refused handshake's status and body (close code 1006): name the likely cause. The ticket left
// unused by the refusal, the relay's readiness says whether a dependency is down.
async function explainRefusedSocket(code, provider, { providers, quota, limits } = {}) {
  if (providers && !providers.includes(provider)) {
    return `The demo login may only use: ${providers.join(", ")}. Sign in with a token to use “${provider}”.`;
  }
  const down = await notReady();
  if (provider === "local" && down.some((name) => VOICE_DEPENDENCIES.includes(name))) {
    return `The voice provider is unreachable (not ready: ${down.join(", ")}). Retry in a minute.`;
  }
  if (down.length) return `The relay is not ready (${down.join(", ")}). Retry in a minute.`;
  const left = quota?.sessions_left_this_hour;
  const per = limits?.sessions_per_hour;
  let guess = "most likely a session limit: too many sessions open at once for this user";
  if (left === 0) guess = `most likely the hourly limit (${per ?? "a few"} sessions per hour)`;
  return (
    `The relay refused the connection (close code ${code}; the browser hides the reason) — ${guess}. ` +
    "Close other tabs or wait a minute, then retry."
  );
}

// A close after the session was open, in plain words.
export function explainClose(code, reason, lastSession) {
  const limits = lastSession?.limits || {};
  const byReason = {
    idle_timeout: `Closed after ${limits.idle_timeout_s ?? "some"} s without speech or text (idle limit).`,
    session_duration_limit: `The session reached its ${Math.round((limits.max_duration_s ?? 600) / 60)}-minute limit.`,
    server_shutdown: "The relay is shutting down. Retry in a few seconds.",
    upstream_unavailable: "The voice provider is unreachable. Retry later.",
    "user stopped": "Stopped.",
  };
  if (byReason[reason]) return byReason[reason];
  if (code === 1000) return "Closed.";
  if (code === 1001) return "The relay went away. Retry in a few seconds.";
  if (code === 1006) return "The connection dropped (network or relay crash).";
  if (code === 1009) return "A message was too large for the relay.";
  return `Closed (code ${code}${reason ? `: ${reason}` : ""}).`;
}
