// One typed turn through Parley with the Node `openai` SDK's Realtime WebSocket client (it only speaks wss://).
// Usage: PARLEY_BASE_URL=https://host:port/v1 PARLEY_TOKEN=<jwt> node realtime_turn.mjs "question"
// Trust a self-signed certificate with NODE_EXTRA_CA_CERTS=cert.pem. Prints one JSON line: the event types seen,
// the answer's transcript and the response status; exits 1 on an error event, 2 on a time-out.
import OpenAI from "openai";
import { OpenAIRealtimeWS } from "openai/realtime/ws";

const question = process.argv[2] ?? "Hello";
const client = new OpenAI({ apiKey: process.env.PARLEY_TOKEN, baseURL: process.env.PARLEY_BASE_URL });
const rt = await OpenAIRealtimeWS.create(client, { model: "parley-local" });
const types = [];
let transcript = "";

const timer = setTimeout(() => {
  process.stdout.write(JSON.stringify({ timeout: true, types }) + "\n");
  process.exit(2);
}, Number(process.env.PARLEY_TURN_TIMEOUT_MS ?? 60000));

rt.on("error", (err) => {
  process.stdout.write(JSON.stringify({ error: String(err.message ?? err), types }) + "\n");
  process.exit(1);
});
rt.socket.on("open", () => {
  rt.send({
    type: "conversation.item.create",
    item: { type: "message", role: "user", content: [{ type: "input_text", text: question }] },
  });
  rt.send({ type: "response.create" });
});
rt.on("event", (event) => {
  types.push(event.type);
  if (event.type === "response.output_audio_transcript.delta") transcript += event.delta;
  if (event.type === "response.done") {
    clearTimeout(timer);
    process.stdout.write(JSON.stringify({ types, transcript, status: event.response.status }) + "\n");
    rt.close();
  }
});
