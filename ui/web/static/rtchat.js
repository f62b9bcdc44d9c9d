// The rtchat page: microphone → WebSocket (20 ms int16 frames), the agent's PCM → a WebAudio player
// (pieces scheduled back to back after a small jitter buffer; agent.cancel stops and flushes at once),
// and the live view (transcript, floor, timeline, latencies, nodes) from the server's state messages.
// window.rtchat exposes counters (playedSamples, scheduledSamples, micFrames, cancels, …) for tests.
// A tab that does not hold the conversation is read-only ("locked"): it shows the live view, its
// Record button and typing are refused, and Take over reconnects it as the holder.
(function () {
  if (window.rtchat && window.rtchat.started) return;
  const R = (window.rtchat = {
    started: true, clientId: Math.random().toString(36).slice(2) + Date.now().toString(36),
    playedSamples: 0, scheduledSamples: 0, pieces: 0, cancels: 0, micFrames: 0, micError: "",
    recording: false, state: null, connected: false, locked: false, notices: [],
  });
  const JITTER_S = 0.08;
  const RATES = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000];  // what the recogniser takes (app.MIC_RATES_HZ)
  const $ = (id) => document.getElementById(id);

  function status(text, bad) {
    const el = $("rtchat-status");
    if (el) { el.textContent = text; el.className = "rtchat-status" + (bad ? " bad" : ""); }
    R.status = text;
  }

  // ---------------------------------------------------------------- audio context and player
  function ctx() {
    if (!R.ctx) {
      R.ctx = new AudioContext();
      if (!RATES.includes(R.ctx.sampleRate)) { R.ctx.close(); R.ctx = new AudioContext({ sampleRate: 48000 }); }  // e.g. a 96 kHz device
    }
    if (R.ctx.state === "suspended") R.ctx.resume();
    return R.ctx;
  }
  const P = { next: 0, sources: new Set(), minGen: 0 };

  function playPiece(buf) {
    const dv = new DataView(buf);
    if (buf.byteLength < 24 || String.fromCharCode(dv.getUint8(0), dv.getUint8(1), dv.getUint8(2), dv.getUint8(3)) !== "RTA1") return;
    const gen = dv.getUint32(8, true), sr = dv.getUint32(16, true);
    const pcm = new Int16Array(buf, 24, (buf.byteLength - 24) >> 1);
    if (gen < P.minGen || pcm.length === 0) return;
    const c = ctx();
    const ab = c.createBuffer(1, pcm.length, sr);
    const data = ab.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
    const src = c.createBufferSource();
    src.buffer = ab;
    src.connect(c.destination);
    if (P.next < c.currentTime + 0.01) P.next = c.currentTime + JITTER_S;  // idle: start after the jitter buffer
    src.start(P.next);
    P.next += pcm.length / sr;  // back to back, no gap, no per-piece gain
    src.gen = gen;
    src.n = pcm.length;
    P.sources.add(src);
    R.pieces += 1;
    R.scheduledSamples += pcm.length;
    src.onended = () => { P.sources.delete(src); if (!src.cut) R.playedSamples += src.n; };
  }

  function cancel(gen) {
    if (gen >= 0) P.minGen = Math.max(P.minGen, gen);
    for (const s of Array.from(P.sources)) {
      if (gen < 0 || s.gen < gen) { s.cut = true; try { s.stop(); } catch (e) {} P.sources.delete(s); }
    }
    if (P.sources.size === 0) P.next = 0;
    R.cancels += 1;
  }

  // ---------------------------------------------------------------- microphone
  async function startMic() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      R.micError = "unsupported";
      status("This browser gives no microphone here (it needs http://127.0.0.1 or https). You can still type.", true);
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
    } catch (e) {
      R.micError = e.name || String(e);
      status("No microphone: " + (e.name === "NotAllowedError" ? "permission denied" : R.micError) + ". You can still type.", true);
      return;
    }
    const c = ctx();
    await c.audioWorklet.addModule("/rtchat/static/mic-worklet.js");
    const node = new AudioWorkletNode(c, "rtchat-mic", { processorOptions: { frame: Math.round(c.sampleRate * 0.02) } });
    const sr = c.sampleRate;
    node.port.onmessage = (e) => {
      const pcm = new Uint8Array(e.data);
      const msg = new Uint8Array(8 + pcm.length);
      msg.set([82, 84, 77, 49], 0);  // "RTM1"
      new DataView(msg.buffer).setUint32(4, sr, true);
      msg.set(pcm, 8);
      if (R.ws && R.ws.readyState === 1) { R.ws.send(msg.buffer); R.micFrames += 1; }
    };
    const source = c.createMediaStreamSource(stream);
    const mute = c.createGain();
    mute.gain.value = 0;
    source.connect(node); node.connect(mute); mute.connect(c.destination);
    R.mic = { stream, node, source, mute };
    R.recording = true;
    R.micRate = sr;
    const b = $("rtchat-mic"); b.textContent = "Stop"; b.classList.add("on");
    status("Listening (" + sr + " Hz). Speak, or type.");
  }

  function stopMic() {
    if (R.mic) {
      R.mic.stream.getTracks().forEach((t) => t.stop());
      try { R.mic.source.disconnect(); R.mic.node.disconnect(); } catch (e) {}
      R.mic = null;
    }
    R.recording = false;
    const b = $("rtchat-mic"); b.textContent = "Record"; b.classList.remove("on");
    status("Microphone off. Type, or press Record.");
  }

  // ---------------------------------------------------------------- WebSocket
  function token() {
    const el = document.querySelector("#rtchat-token textarea, #rtchat-token input");
    return el ? el.value : "";
  }

  function connect(takeover) {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/rtchat/ws?token=" +
      encodeURIComponent(token()) + "&client=" + R.clientId + (takeover ? "&takeover=1" : "");
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    R.ws = ws;
    ws.onopen = () => { R.connected = true; R.locked = false; $("rtchat-takeover").style.display = "none"; if (!R.recording) status("Connected. Press Record and speak, or type."); };
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") { playPiece(e.data); return; }
      const msg = JSON.parse(e.data);
      if (msg.type === "state") render(msg);
      else if (msg.type === "cancel") cancel(msg.gen);
      else if (msg.type === "locked" || msg.type === "taken") {
        R.locked = true;
        if (R.recording) stopMic();
        status(msg.message, true);
        $("rtchat-takeover").style.display = "";
      } else if (msg.type === "notice") { R.notices.push(msg.message); status(msg.message); }
      else if (msg.type === "hello") R.hello = msg;
    };
    ws.onclose = (e) => {
      R.connected = false;
      R.closeCode = e.code;
      R.closeReason = e.reason;
      if (R.ws !== ws) return;
      if (R.recording) stopMic();
      // refused for good (no token, another site's page): say why, do not knock again
      if (e.code === 4401) { status("Not logged in: reload the page.", true); return; }
      if (e.code === 4403) { status("The server refused this page: " + e.reason, true); return; }
      const later = e.code === 1013;  // too many tabs open
      status((later ? e.reason : "Disconnected from the agent") + "; reconnecting…", true);
      setTimeout(() => connect(false), later ? 5000 : 1000);
    };
  }

  function send(obj) { if (R.ws && R.ws.readyState === 1) { R.ws.send(JSON.stringify(obj)); return true; } return false; }

  function sendText() {
    const input = $("rtchat-text");
    const text = input.value.trim();
    if (text && send({ type: "text", text: text })) input.value = "";
  }

  // ---------------------------------------------------------------- rendering
  function esc(s) { return String(s).replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[ch])); }

  function render(st) {
    R.state = st;
    const names = { user: "S1", agent: "S2" };
    const tr = $("rtchat-transcript");
    if (tr) {
      const atBottom = tr.scrollTop + tr.clientHeight >= tr.scrollHeight - 4;
      tr.innerHTML = st.transcript.map((t) => {
        const parts = t.parts.map((p) => ("w" in p ? '<span class="w">' + esc(p.w) + "</span>" :
          "p" in p ? '<span class="pause">(' + p.p.toFixed(1) + ")</span>" : '<span class="cut">—</span>')).join(" ");
        const partial = t.partial ? ' <span class="partial">' + esc(t.partial) + "</span>" : "";
        return '<div class="rtchat-turn ' + t.who + '"><span class="who">' + names[t.who] + ":</span>" + parts + partial + "</div>";
      }).join("");
      if (atBottom) tr.scrollTop = tr.scrollHeight;
    }
    const fl = $("rtchat-floor");
    if (fl) {
      const who = st.floor === "user" ? "you (S1)" : st.floor === "agent" ? "the agent (S2)" : "nobody";
      fl.textContent = "floor: " + who + (st.speaking.user ? " · you are speaking" : "") + (st.speaking.agent ? " · the agent is speaking" : "");
    }
    drawTimeline(st.timeline);
    const lat = $("rtchat-latencies");
    if (lat) {
      const label = { asr: "ASR", agent: "agent", tts: "TTS", response: "response" };
      lat.textContent = "latency p50: " + Object.keys(label).map((k) => label[k] + " " + (st.latencies_ms[k] == null ? "—" : st.latencies_ms[k] + " ms")).join(" · ");
    }
    const nd = $("rtchat-nodes");
    if (nd) {
      nd.innerHTML = "nodes: " + Object.entries(st.nodes).map(([n, v]) =>
        '<span class="rtchat-node ' + v.status + '" title="' + esc(v.reason) + '">' + esc(n) + " " + v.status +
        (v.restarts ? " (restarted " + v.restarts + "×)" : "") + "</span>").join("");
    }
    const notes = $("rtchat-notes");
    if (notes) notes.innerHTML = st.notes.map((n) => "<div>" + esc(n) + "</div>").join("");
  }

  function drawTimeline(tl) {
    const cv = $("rtchat-timeline");
    if (!cv) return;
    const w = (cv.width = cv.clientWidth || 900), h = cv.height;
    const g = cv.getContext("2d");
    g.clearRect(0, 0, w, h);
    g.font = "11px sans-serif";
    g.fillStyle = "#555";
    g.fillText("S1", 4, 22); g.fillText("S2", 4, 52);
    g.fillText("−" + Math.round(tl.window_ms / 1000) + " s", 24, h - 2);
    g.fillText("now", w - 26, h - 2);
    const x = (ms) => 24 + (w - 28) * (1 - Math.min(ms, tl.window_ms) / tl.window_ms);
    for (const s of tl.spans) {
      const y = s.who === "user" ? 10 : 40;
      g.fillStyle = s.who === "user" ? "#1565c0" : "#2e7d32";
      const x0 = x(s.from_ms), x1 = Math.max(x(s.to_ms), x0 + 2);
      g.fillRect(x0, y, x1 - x0, 16);
    }
  }

  // ---------------------------------------------------------------- start
  function start() {
    $("rtchat-mic").addEventListener("click", () => {
      ctx();
      if (R.recording) stopMic();
      else if (R.locked) status("This tab only watches the conversation; press Take over to talk.", true);
      else startMic();
    });
    $("rtchat-send").addEventListener("click", () => { ctx(); sendText(); });
    $("rtchat-text").addEventListener("keydown", (e) => { if (e.key === "Enter") { ctx(); sendText(); } });
    $("rtchat-reset").addEventListener("click", () => { cancel(-1); send({ type: "reset" }); });
    $("rtchat-takeover").addEventListener("click", () => { if (R.ws) { R.ws.onclose = null; R.ws.close(); } connect(true); });
    R.send = send;
    connect(false);
  }

  (function wait() {
    if ($("rtchat-live") && $("rtchat-mic") && token()) start();
    else setTimeout(wait, 100);
  })();
})();
