"""The web page: talk to the agent from a browser (``rtchat run --ui gradio``, http://127.0.0.1:7860).

Gradio lays out the page and its settings (``page.py``); audio both ways and the live view go
over our own WebSocket (``app.py``), because Gradio 6's streaming audio output plays with gaps and
its streaming microphone sends 0.5 s chunks (``shared/reference/browser-probe.md``). ``bridge.py``
is the page's bus participant (one thread, one ``BusClient``); ``state.py`` folds the bus into what
the page shows (pure, on virtual time); ``protocol.py`` checks what a page sends (pure);
``net.py`` refuses other sites' pages and opens the listening socket; ``static/`` holds the
page's script, its microphone AudioWorklet and its style.

WebSocket protocol (``/rtchat/ws?token=T&client=C[&takeover=1]``; T is the per-launch token the
page gets through a Gradio event, C a random id of the tab; ``protocol.py`` checks every frame):

page → server
- binary: one microphone frame: ``b"RTM1"``, uint32 LE sample rate (the AudioContext's real
  rate, e.g. 48000 or 44100), then int16 LE mono PCM (20 ms; at most 100 ms, whole samples) →
  ``audio.in`` (the bridge assigns ``stream_pos`` and ``t_capture_ns`` = receive time − the
  frame's duration);
- text JSON: ``{"type": "text", "text": …}`` → ``user.text``; ``{"type": "reset"}`` → ``ctl.reset``
  (at most 4 a second); ``{"type": "config", "changes": {"agent.top_p": 0.5, …}}`` → ``ctl.config``
  (only the keys in ``protocol.CONTROL_KEYS``, typed and checked as the config loader does).
  Exactly these keys; finite numbers; no lone surrogates.
- anything else is refused and counted (a text frame also gets a notice saying why; a binary one
  a notice the first time); a frame over 64 KiB, or one the WebSocket protocol forbids, closes
  the connection (1009, 1002, 1007).

server → page
- text JSON: ``{"type": "hello", "settings": {…}, "voices": […]}`` on connect;
  ``{"type": "state", "transcript": [{"who", "parts": [{"w": words} | {"p": seconds} |
  {"cut": true}], "partial"}], "floor", "speaking": {"user", "agent"}, "timeline": {"window_ms",
  "spans": [{"who", "from_ms", "to_ms", "text"}]}, "latencies_ms": {"asr", "agent", "tts",
  "response"}, "nodes": {name: {"status", "restarts", "reason", "uptime_s"}}, "notes", "resets"}``
  (times in ms before now), at most 10 a second and at least once a second, to every tab;
  ``{"type": "cancel", "gen": G}`` (``agent.cancel``: drop audio of generations below G; ``-1`` on
  ``ctl.reset``: drop all); ``{"type": "locked" | "taken", "message": …}`` (another tab holds the
  conversation / took it over: this tab is read-only); ``{"type": "notice", "message": …}`` (a
  reply to a request, or why it was refused);
- binary (to the tab holding the conversation): one piece of the agent's audio (``tts.audio``):
  ``b"RTA1"``, uint32 LE turn, gen, chunk, sample rate, uint8 last, 3 padding bytes, then int16 LE
  mono PCM.
- close codes: 4401 no or wrong token ("not logged in"), 4403 another site's page (or a foreign
  ``Host``), 1013 too many tabs (``app.MAX_TABS``), 1009 a frame over 64 KiB, 1002/1007 a frame
  the WebSocket protocol forbids.

One conversation per server: the first tab holds it; the others are read-only and may take over.
``GET /rtchat/status?token=T`` answers the server's counters as JSON (401 without the token).
"""
