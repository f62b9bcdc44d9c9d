// The microphone's AudioWorklet: mono int16 frames of `frame` samples (20 ms at the context's rate),
// posted to the page, which sends them over the WebSocket.
class RtchatMic extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.n = options.processorOptions.frame;
    this.buf = new Int16Array(this.n);
    this.k = 0;
  }
  process(inputs) {
    const chans = inputs[0];
    if (!chans || !chans.length) return true;
    const len = chans[0].length;
    for (let i = 0; i < len; i++) {
      let v = 0;
      for (let c = 0; c < chans.length; c++) v += chans[c][i];
      v = Math.max(-1, Math.min(1, v / chans.length));
      this.buf[this.k++] = v < 0 ? v * 32768 : v * 32767;
      if (this.k === this.n) {
        this.port.postMessage(this.buf.buffer, [this.buf.buffer]);
        this.buf = new Int16Array(this.n);
        this.k = 0;
      }
    }
    return true;
  }
}
registerProcessor("rtchat-mic", RtchatMic);
