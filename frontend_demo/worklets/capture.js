// Microphone capture: downsample the AudioContext's rate to 24 kHz mono PCM16 and post fixed-size chunks.
// A boxcar low-pass (as long as the rate ratio) then linear interpolation: crude, and plenty for speech.

const OUT_RATE = 24000;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const chunkMs = options.processorOptions?.chunkMs ?? 50;
    this.ratio = sampleRate / OUT_RATE; // input samples per output sample
    this.taps = Math.max(1, Math.round(this.ratio));
    this.ring = new Float32Array(this.taps);
    this.ringPos = 0;
    this.prev = 0; // the previous low-passed input sample
    this.next = 0; // where the next output sample falls, relative to the current input sample
    this.chunkSize = Math.round((OUT_RATE * chunkMs) / 1000);
    this.chunk = new Int16Array(this.chunkSize);
    this.filled = 0;
    this.peak = 0;
  }

  emit(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.peak = Math.max(this.peak, Math.abs(v));
    this.chunk[this.filled++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    if (this.filled === this.chunkSize) {
      const pcm = this.chunk.buffer;
      this.port.postMessage({ pcm, peak: this.peak }, [pcm]); // transferred: this.chunk is now empty
      this.chunk = new Int16Array(this.chunkSize);
      this.filled = 0;
      this.peak = 0;
    }
  }

  process(inputs) {
    const samples = inputs[0]?.[0];
    if (!samples) return true;
    for (let k = 0; k < samples.length; k++) {
      this.ring[this.ringPos] = samples[k];
      this.ringPos = (this.ringPos + 1) % this.taps;
      let sum = 0;
      for (let t = 0; t < this.taps; t++) sum += this.ring[t];
      const y = sum / this.taps;
      // output samples between the previous input sample (at -1) and this one (at 0)
      while (this.next <= 0) {
        this.emit(y + (y - this.prev) * this.next);
        this.next += this.ratio;
      }
      this.next -= 1;
      this.prev = y;
    }
    return true;
  }
}

registerProcessor("parley-capture", CaptureProcessor);
