"""The page's layout and controls (Gradio Blocks). The live view (transcript, floor, timeline,
latencies, nodes), the microphone button and the text box are our own HTML, driven by
``static/rtchat.js`` over the WebSocket; the settings are Gradio controls whose Apply button
publishes ``ctl.config`` (only for the tab that holds the conversation)."""

from __future__ import annotations

from rtchat.configs.schema import DECODINGS

LIVE_HTML = """
<div id="rtchat-live">
  <div class="rtchat-bar">
    <button id="rtchat-mic" class="rtchat-btn" type="button">Record</button>
    <input id="rtchat-text" type="text" placeholder="…or type here and press Enter" autocomplete="off">
    <button id="rtchat-send" class="rtchat-btn" type="button">Send</button>
    <button id="rtchat-reset" class="rtchat-btn" type="button">Reset</button>
    <button id="rtchat-takeover" class="rtchat-btn" type="button" style="display:none">Take over</button>
  </div>
  <div id="rtchat-status" class="rtchat-status">connecting…</div>
  <div id="rtchat-floor" class="rtchat-floor">floor: none</div>
  <div id="rtchat-transcript" class="rtchat-transcript"></div>
  <canvas id="rtchat-timeline" width="900" height="70"></canvas>
  <div class="rtchat-row"><div id="rtchat-latencies"></div><div id="rtchat-nodes"></div></div>
  <div id="rtchat-notes" class="rtchat-notes"></div>
</div>
"""

CLIENT_JS = "(...a) => { a[0] = (window.rtchat && window.rtchat.clientId) || ''; return a; }"


def build_blocks(web):
    import gradio as gr

    s = web.settings
    choices = [("default", v) if v == "" else (v, v) for v in _voices(web)]
    with gr.Blocks(title="rtchat") as blocks:
        gr.Markdown("## rtchat — talk with the agent\nPress **Record** and speak, or type. "
                    "S1 is you, S2 the agent; grey words are still being recognised.")
        gr.HTML(LIVE_HTML)
        token = gr.Textbox(elem_id="rtchat-token", show_label=False, container=False, interactive=False)
        blocks.load(lambda: web.token, outputs=token)
        client = gr.Textbox(elem_id="rtchat-client", show_label=False, container=False)
        with gr.Accordion("Conversation — applies at the next reset", open=False):
            summary = gr.Textbox(label="Dialogue summary prompt", value=s["agent.summary"], lines=2,
                                 info=f"e.g. S1 and S2 are talking about their weekend. At most "
                                      f"{web.cfg.agent.max_summary_chars} characters are used.")
            starts = gr.Checkbox(label="Agent starts", value=s["agent.agent_starts"])
            opening = gr.Textbox(label="Opening utterance", value=s["agent.opening_utterance"])
        with gr.Accordion("Persona — applies at once", open=False):
            with gr.Row():
                agent_name = gr.Textbox(label="Agent name", value=s["agent.agent_name"])
                agent_age = gr.Textbox(label="Agent age", value=s["agent.agent_age"])
                agent_sex = gr.Textbox(label="Agent sex", value=s["agent.agent_sex"])
            with gr.Row():
                user_name = gr.Textbox(label="User name", value=s["agent.user_name"])
                user_age = gr.Textbox(label="User age", value=s["agent.user_age"])
                user_sex = gr.Textbox(label="User sex", value=s["agent.user_sex"])
        with gr.Accordion("Voice and decoding — applies at once", open=False):
            voice = gr.Dropdown(label=f"Agent voice ({web.cfg.tts.backend})", choices=choices, value=s["tts.voice"])
            interval = gr.Slider(0.2, 2.0, step=0.05, value=s["agent.interval_s"], label="Agent interval (s)")
            decoding = gr.Dropdown(label="Decoding", choices=list(DECODINGS), value=s["agent.decoding"])
            top_p = gr.Slider(0.0, 1.0, step=0.01, value=s["agent.top_p"], label="top_p")
            temperature = gr.Slider(0.05, 2.0, step=0.05, value=s["agent.temperature"], label="Temperature")
            similarity = gr.Slider(-1.0, 1.0, step=0.01, value=s["agent.similarity_threshold"], label="Similarity threshold")
        apply = gr.Button("Apply settings", elem_id="rtchat-apply")
        result = gr.Markdown(elem_id="rtchat-apply-result")
        fields = [summary, starts, opening, agent_name, agent_age, agent_sex, user_name, user_age, user_sex, voice, interval,
                  decoding, top_p, temperature, similarity]
        keys = ["agent.summary", "agent.agent_starts", "agent.opening_utterance", "agent.agent_name", "agent.agent_age",
                "agent.agent_sex", "agent.user_name", "agent.user_age", "agent.user_sex", "tts.voice", "agent.interval_s",
                "agent.decoding", "agent.top_p", "agent.temperature", "agent.similarity_threshold"]

        def on_apply(client_id, *values):
            holder = web.holder
            if holder is None or holder.client != client_id:
                return "Not applied: " + ("this tab is not connected." if holder is None else
                                          "another tab is talking to this agent; press Take over first.")
            changes = {}
            for key, value in zip(keys, values, strict=True):
                if isinstance(value, float) and key in ("agent.interval_s", "agent.top_p", "agent.temperature",
                                                        "agent.similarity_threshold"):
                    value = round(value, 3)
                changes[key] = "" if value is None else value
            return web.configure(changes)

        apply.click(on_apply, inputs=[client, *fields], outputs=result, js=CLIENT_JS)
    return blocks


def _voices(web) -> list[str]:
    out = web.voices
    return out if web.settings["tts.voice"] in out else [*out, web.settings["tts.voice"]]
