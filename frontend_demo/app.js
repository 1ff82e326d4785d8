// Parley demo page: Start -> ticket -> WebSocket (realtime + parley-ticket) -> microphone; answers play as they
// stream; speaking over an answer stops it at once and tells the relay how much was heard.

import { Mic, Player, createAudioContext, pcm16ToBase64 } from "./audio.js";
import { Refusal, explainClose, getTicket, openSocket } from "./connect.js";
import { Conversation } from "./conversation.js";

const $ = (id) => document.getElementById(id);
const ui = {
  talk: $("talk"),
  state: $("state"),
  hint: $("hint"),
  notice: $("notice"),
  session: $("session"),
  textForm: $("text-form"),
  text: $("text"),
  provider: $("provider"),
  language: $("language"),
  jwt: $("jwt"),
  stats: $("stats"),
};
const conversation = new Conversation($("log"));
const HINT = ui.hint.textContent;
const MAX_SOCKET_BUFFER = 512 * 1024; // bytes: beyond this the network is stalled; drop mic audio, not memory

const stats = { audioDeltas: 0, audioMs: 0, truncates: 0, turns: 0, errors: 0, micChunks: 0 };
function bump(name, by = 1) {
  stats[name] += by;
  ui.stats.dataset[name] = String(Math.round(stats[name]));
}

function setState(state, label) {
  document.body.dataset.state = state;
  ui.state.textContent = label;
  const busy = state === "live" || state === "connecting";
  ui.talk.textContent = busy ? "Stop" : "Start";
  for (const input of ui.textForm.elements) input.disabled = state !== "live";
}

function notify(text, kind = "info") {
  ui.notice.hidden = !text;
  ui.notice.textContent = text;
  ui.notice.className = `notice ${kind}`;
  if (kind === "error") bump("errors");
}

function explainError(error = {}) {
  const { code = "", message = "" } = error;
  const plain = {
    event_not_allowed: `The relay refused a message from this page: ${message}`,
    audio_rate_limited: "Audio arrived faster than real time; some of it was dropped.",
    upstream_unavailable: `The voice provider is unreachable: ${message}`,
    llm_unavailable: `The assistant's language model is unavailable: ${message}`,
    transcription_failed: "Your speech could not be transcribed. Try again.",
    tts_failed: "The assistant's voice failed. Try again.",
    frame_too_large: "A message was too large for the relay.",
  };
  return plain[code] ?? `Error${code ? ` (${code})` : ""}: ${message || "unknown"}`;
}

function micProblem(err) {
  if (!window.isSecureContext) return "The microphone needs HTTPS (or localhost). You can still type below.";
  if (err?.name === "NotAllowedError") return "Microphone permission was denied. You can still type below.";
  if (err?.name === "NotFoundError") return "No microphone found. You can still type below.";
  return `The microphone could not start (${err?.message || err}). You can still type below.`;
}

const saved = {
  get: (key) => localStorage.getItem(`parley.${key}`),
  set: (key, value) => (value ? localStorage.setItem(`parley.${key}`, value) : localStorage.removeItem(`parley.${key}`)),
};

class Session {
  constructor() {
    this.ws = null;
    this.ctx = null;
    this.ctxReady = null;
    this.mic = null;
    this.player = null;
    this.info = null; // the last parley.session
    this.speakingItem = null; // the assistant item whose audio is playing or still streaming
    this.responseActive = false;
    this.cut = new Set(); // interrupted assistant items: their late deltas are dropped
    this.stopped = false; // the user pressed Stop
    this.ended = false; // cleaned up: closed, refused or stopped
    this.closeReason = "";
    this.timer = 0;
    this.endsAt = 0;
  }

  async start() {
    const provider = ui.provider.value;
    this.ctxReady = createAudioContext(); // created inside the click, so the browser lets it play
    const ticket = await getTicket(ui.jwt.value.trim());
    this.ctx = await this.ctxReady;
    this.player = new Player(this.ctx, () => this.onPlayback());
    const lastQuota = JSON.parse(saved.get("quota") || "{}");
    const ws = await openSocket(provider, ticket.ticket, { providers: ticket.providers, ...lastQuota });
    this.ws = ws;
    ws.onmessage = (e) => this.onEvent(JSON.parse(e.data));
    ws.onclose = (e) => this.onClose(e);
    if (this.stopped) return ws.close(1000, "user stopped");
    if (saved.get("language")) this.sendLanguage(); // else the server's default, shown from session.created
    setState("live", `Connected · ${provider}`);
    try {
      const mic = await Mic.open(this.ctx, (pcm) => this.sendAudio(pcm));
      if (this.ended) return mic.close(); // closed while the microphone was starting
      this.mic = mic;
      ui.hint.textContent = "Listening — ask a question. Speak over the answer to interrupt.";
    } catch (err) {
      if (this.ended) return;
      notify(micProblem(err), "warn");
      ui.hint.textContent = "Text only: type below.";
    }
  }

  send(event) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(event));
  }

  // The language the user speaks; the assistant hears and answers in it (from the next turn when changed).
  sendLanguage() {
    const language = ui.language.value;
    this.send({ type: "session.update", session: { type: "realtime", audio: { input: { transcription: { language } } } } });
  }

  sendAudio(pcm) {
    if (this.ws?.readyState !== WebSocket.OPEN || this.ws.bufferedAmount > MAX_SOCKET_BUFFER) return;
    this.send({ type: "input_audio_buffer.append", audio: pcm16ToBase64(pcm) });
    bump("micChunks");
  }

  async sendText(text) {
    await this.bargeIn({ cancel: true });
    conversation.newTurn();
    conversation.userText(`text-${Date.now()}`, text, { final: true });
    this.send({
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text }] },
    });
    this.send({ type: "response.create" });
  }

  // Barge-in: stop playback now, drop what is queued, and trim the answer to what was heard. On speech the
  // upstream cancels the response itself (interrupt_response); on typed text the page cancels it.
  async bargeIn({ cancel = false } = {}) {
    const itemId = this.speakingItem;
    if (!itemId || !this.player) return;
    const streaming = this.responseActive;
    this.speakingItem = null;
    this.cut.add(itemId);
    if (cancel && streaming) this.send({ type: "response.cancel" });
    const { hadQueued } = await this.player.flush();
    if (!hadQueued && !streaming) return; // it had finished: nothing to trim
    const audioEndMs = this.player.playedMs(itemId);
    this.send({ type: "conversation.item.truncate", item_id: itemId, content_index: 0, audio_end_ms: audioEndMs });
    conversation.interrupted(itemId);
    bump("truncates");
    ui.stats.dataset.lastTruncateMs = String(audioEndMs);
  }

  onPlayback() {
    ui.stats.dataset.playedMs = String(this.player.totalPlayedMs());
    document.body.classList.toggle("speaking", this.player.playing);
    if (!this.player.playing && !this.responseActive) this.speakingItem = null;
  }

  onEvent(ev) {
    const handler = HANDLERS[ev.type];
    if (handler) handler.call(this, ev);
  }

  showSession() {
    const { provider, quota = {}, limits = {} } = this.info;
    const left = Math.max(0, Math.round((this.endsAt - Date.now()) / 1000));
    const clock = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    ui.session.hidden = false;
    ui.session.textContent =
      `${provider} · session ends in ${clock} · ${quota.sessions_left_this_hour} of ${limits.sessions_per_hour} ` +
      `sessions left this hour · ${limits.max_concurrent_sessions} at a time · closes after ${limits.idle_timeout_s} s idle`;
  }

  onClose(e) {
    const reason = e.reason || this.closeReason;
    const byUser = reason === "user stopped";
    this.cleanup();
    setState(byUser ? "idle" : "closed", "Not connected");
    notify(explainClose(e.code, reason, this.info), byUser ? "info" : "warn");
    ui.stats.dataset.closeCode = String(e.code);
  }

  stop() {
    this.stopped = true;
    if (this.ws) {
      this.ws.close(1000, "user stopped");
    } else {
      this.cleanup();
      setState("idle", "Not connected");
    }
  }

  cleanup() {
    this.ended = true;
    if (session === this) session = null;
    clearInterval(this.timer);
    this.mic?.close();
    this.player?.close();
    this.ctxReady?.then((ctx) => ctx.close()).catch(() => {});
    this.mic = this.player = this.ctx = this.ctxReady = null;
    document.body.classList.remove("hearing", "speaking");
    ui.hint.textContent = HINT;
  }
}

const HANDLERS = {
  // The session's language as the server applies it (its default until the user picks one: `parley up --language`).
  "session.created"(ev) {
    showLanguage(ev.session);
  },
  "session.updated"(ev) {
    showLanguage(ev.session);
  },
  "parley.session"(ev) {
    this.info = ev;
    ui.stats.dataset.sessionId = ev.session_id;
    saved.set("quota", JSON.stringify({ quota: ev.quota, limits: ev.limits }));
    if (ev.status === "active") {
      this.endsAt = Date.now() + ev.limits.max_duration_s * 1000;
      this.timer = setInterval(() => this.showSession(), 1000);
    } else if (ev.status === "expiring") {
      this.endsAt = Date.now() + ev.expires_in_s * 1000;
      notify(`This session ends in ${Math.round(ev.expires_in_s)} s (duration limit).`, "warn");
    } else if (ev.status === "closing") {
      notify("The relay is shutting down: the current answer finishes, then the session closes.", "warn");
    } else if (ev.status === "closed") {
      this.closeReason = ev.reason;
    }
    if (ev.status !== "closed") this.showSession();
  },
  "parley.context"(ev) {
    conversation.context(ev.turn_id, ev.sources, ev.status);
  },
  "parley.warning"(ev) {
    notify(ev.message || "The relay reported a problem.", "warn");
  },
  "parley.turn"(ev) {
    conversation.timings(ev.turn_id, ev.timings_ms || {}, ev.status);
    bump("turns");
    ui.stats.dataset.lastFirstAudioMs = String(ev.timings_ms?.first_audio ?? "");
  },
  "input_audio_buffer.speech_started"(ev) {
    document.body.classList.add("hearing");
    this.bargeIn();
    conversation.userSpeaking(ev.item_id);
  },
  "input_audio_buffer.speech_stopped"() {
    document.body.classList.remove("hearing");
  },
  "conversation.item.input_audio_transcription.delta"(ev) {
    conversation.userText(ev.item_id, ev.delta, { append: true });
  },
  "conversation.item.input_audio_transcription.completed"(ev) {
    conversation.userText(ev.item_id, ev.transcript, { final: true });
  },
  "conversation.item.input_audio_transcription.failed"(ev) {
    conversation.userText(ev.item_id, "(could not transcribe)", { final: true });
  },
  "response.created"() {
    this.responseActive = true;
  },
  "response.done"() {
    this.responseActive = false;
    this.onPlayback();
  },
  "response.output_audio.delta"(ev) {
    if (this.cut.has(ev.item_id) || !this.player) return;
    this.speakingItem = ev.item_id;
    bump("audioMs", this.player.push(ev.item_id, ev.delta));
    bump("audioDeltas");
  },
  "response.output_audio_transcript.delta"(ev) {
    if (!this.cut.has(ev.item_id)) conversation.assistantText(ev.item_id, ev.delta);
  },
  error(ev) {
    if (ev.error?.code === "response_cancel_not_active") return;
    notify(explainError(ev.error), "error");
  },
};

let session = null;

async function start() {
  notify("");
  setState("connecting", "Connecting…");
  const s = new Session();
  session = s;
  try {
    await s.start();
  } catch (err) {
    s.cleanup();
    if (s.stopped) return;
    setState("error", "Not connected");
    notify(err instanceof Refusal ? err.message : `Could not start: ${err.message || err}`, "error");
  }
}

ui.talk.addEventListener("click", () => (session ? session.stop() : start()));
ui.textForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.text.value.trim();
  if (!text || !session) return;
  session.sendText(text);
  ui.text.value = "";
});
ui.provider.value = saved.get("provider") || "local";
ui.jwt.value = saved.get("jwt") || "";
ui.provider.addEventListener("change", () => saved.set("provider", ui.provider.value));
ui.language.value = saved.get("language") || "en";

function showLanguage(sessionObject) {
  const language = sessionObject?.audio?.input?.transcription?.language;
  if ([...ui.language.options].some((o) => o.value === language)) ui.language.value = language;
}
ui.language.addEventListener("change", () => {
  saved.set("language", ui.language.value);
  session?.sendLanguage();
});
ui.jwt.addEventListener("change", () => saved.set("jwt", ui.jwt.value.trim()));
window.addEventListener("pagehide", () => session?.stop());
