// Audio worklet for hands-free mode: turns the microphone's float samples into little-endian
// 16-bit PCM and posts them to the page in frames of `frameSamples` samples (about 40 ms).
class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.size = options.processorOptions.frameSamples;
    this.frame = new Int16Array(this.size);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    let peak = 0;
    for (let i = 0; i < channel.length; i++) {
      const sample = Math.max(-1, Math.min(1, channel[i]));
      peak = Math.max(peak, Math.abs(sample));
      this.frame[this.filled++] = sample < 0 ? sample * 0x8000 : sample * 0x7fff;
      if (this.filled === this.frame.length) {
        const buffer = this.frame.buffer;
        this.port.postMessage({ pcm: buffer, peak }, [buffer]);
        this.frame = new Int16Array(this.size); // the last one was handed over
        this.filled = 0;
        peak = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
