// Playback of 24 kHz float chunks at the AudioContext's rate, in order, and a count of the 24 kHz samples actually
// played per assistant item (what conversation.item.truncate needs). Messages in:
//   {type: "push", itemId, samples: Float32Array}   queue audio
//   {type: "flush", id}                             drop everything queued at once; answers {type: "flushed", ...}
// Messages out: {type: "progress", itemId, played, queued} every ~20 ms while playing and when it runs dry.

const IN_RATE = 24000;
const REPORT_EVERY = 8; // render quanta (128 frames each)

class PlayerProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];
    this.step = IN_RATE / sampleRate; // input samples per output frame
    this.pos = 0; // fractional read position in queue[0]
    this.itemId = null;
    this.played = 0; // input samples of itemId played so far
    this.quanta = 0;
    this.wasPlaying = false;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    if (msg.type === "push") {
      this.queue.push({ itemId: msg.itemId, samples: msg.samples });
    } else if (msg.type === "flush") {
      const hadQueued = this.queue.length > 0;
      this.queue = [];
      this.pos = 0;
      this.wasPlaying = false;
      this.port.postMessage({ type: "flushed", id: msg.id, itemId: this.itemId, played: this.played, hadQueued });
    }
  }

  report() {
    this.port.postMessage({ type: "progress", itemId: this.itemId, played: this.played, queued: this.queue.length > 0 });
  }

  process(_inputs, outputs) {
    const channels = outputs[0];
    const out = channels[0];
    for (let f = 0; f < out.length; f++) {
      const head = this.queue[0];
      if (!head) {
        out[f] = 0;
        continue;
      }
      if (head.itemId !== this.itemId) {
        this.itemId = head.itemId;
        this.played = 0;
      }
      const s = head.samples;
      const i = Math.floor(this.pos);
      const a = s[i];
      const b = i + 1 < s.length ? s[i + 1] : a;
      out[f] = a + (b - a) * (this.pos - i);
      this.pos += this.step;
      this.played += Math.floor(this.pos) - i;
      if (this.pos >= s.length) {
        this.pos -= s.length;
        this.queue.shift();
      }
    }
    for (let c = 1; c < channels.length; c++) channels[c].set(out);
    const playing = this.queue.length > 0;
    if (playing && ++this.quanta >= REPORT_EVERY) {
      this.quanta = 0;
      this.report();
    } else if (!playing && this.wasPlaying) {
      this.report();
    }
    this.wasPlaying = playing;
    return true;
  }
}

registerProcessor("parley-player", PlayerProcessor);
