// Audio for the demo page: the microphone (24 kHz PCM16 chunks) and the player (with played-ms per item).

export const RATE = 24000;

export function pcm16ToBase64(pcm) {
  const bytes = new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

// base64 PCM16 little-endian -> float samples in [-1, 1)
export function base64ToFloat32(b64) {
  const text = atob(b64);
  const out = new Float32Array(text.length >> 1);
  for (let i = 0; i < out.length; i++) {
    const v = text.charCodeAt(2 * i) | (text.charCodeAt(2 * i + 1) << 8);
    out[i] = (v >= 0x8000 ? v - 0x10000 : v) / 0x8000;
  }
  return out;
}

export async function createAudioContext() {
  const ctx = new AudioContext({ latencyHint: "interactive" });
  await Promise.all([
    ctx.audioWorklet.addModule(new URL("worklets/capture.js", import.meta.url)),
    ctx.audioWorklet.addModule(new URL("worklets/player.js", import.meta.url)),
  ]);
  if (ctx.state === "suspended") await ctx.resume();
  return ctx;
}

// The microphone: onChunk(Int16Array of ~chunkMs at 24 kHz, peak level 0..1).
export class Mic {
  static async open(ctx, onChunk, chunkMs = 50) {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    const source = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, "parley-capture", { processorOptions: { chunkMs } });
    node.port.onmessage = (e) => onChunk(new Int16Array(e.data.pcm), e.data.peak);
    // keep the node pulled by the graph, silently
    const mute = new GainNode(ctx, { gain: 0 });
    source.connect(node).connect(mute).connect(ctx.destination);
    return new Mic(stream, source, node, mute);
  }

  constructor(stream, source, node, mute) {
    Object.assign(this, { stream, source, node, mute });
  }

  close() {
    this.node.port.onmessage = null;
    this.source.disconnect();
    this.node.disconnect();
    this.mute.disconnect();
    for (const track of this.stream.getTracks()) track.stop();
  }
}

// The player: push(itemId, base64 PCM16); playedMs(itemId); flush() stops at once and says what was heard.
export class Player {
  constructor(ctx, onProgress = () => {}) {
    this.node = new AudioWorkletNode(ctx, "parley-player", { outputChannelCount: [1] });
    this.node.connect(ctx.destination);
    this.played = new Map(); // itemId -> ms played
    this.playing = false;
    this.flushes = new Map();
    this.flushSeq = 0;
    this.onProgress = onProgress;
    this.node.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    if (msg.itemId) this.played.set(msg.itemId, (msg.played * 1000) / RATE);
    if (msg.type === "progress") {
      this.playing = msg.queued;
      this.onProgress(this);
    } else if (msg.type === "flushed") {
      this.playing = false;
      this.flushes.get(msg.id)?.(msg);
      this.flushes.delete(msg.id);
      this.onProgress(this);
    }
  }

  push(itemId, b64) {
    const samples = base64ToFloat32(b64);
    const ms = (samples.length * 1000) / RATE; // before the transfer empties it
    this.playing = true;
    this.node.port.postMessage({ type: "push", itemId, samples }, [samples.buffer]);
    return ms;
  }

  playedMs(itemId) {
    return Math.floor(this.played.get(itemId) ?? 0);
  }

  totalPlayedMs() {
    let total = 0;
    for (const ms of this.played.values()) total += ms;
    return Math.floor(total);
  }

  // Resolves {itemId, playedMs, hadQueued} once the worklet has dropped its queue.
  flush() {
    const id = ++this.flushSeq;
    return new Promise((resolve) => {
      this.flushes.set(id, (msg) =>
        resolve({ itemId: msg.itemId, playedMs: Math.floor((msg.played * 1000) / RATE), hadQueued: msg.hadQueued }),
      );
      this.node.port.postMessage({ type: "flush", id });
    });
  }

  close() {
    this.node.port.onmessage = null;
    this.node.disconnect();
  }
}
