"""The configuration schema: one frozen dataclass per section, units in the field names.

A profile (``configs/cpu.yaml``…) gives values for some fields; the rest keep the defaults
below. Every field is validated where it is declared, with an error naming the allowed values.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from rtchat.common.audio import SR_HZ

DEVICE_RE = re.compile(r"^(cpu|auto|cuda:\d+)$")
NODE_NAMES = ("logger", "audio", "asr", "agent", "tts")  # runnable as python -m rtchat.nodes.<name>
# what can have a spare: the proxy (it binds when called in) and the nodes whose loading touches no
# file of the run (the logger opens the event log and the audio node the recording when they load)
STANDBY_NODES = ("proxy", "asr", "agent", "tts")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{key}: {message}")


def _device(key: str, value: str) -> None:
    _check(bool(DEVICE_RE.match(value)), key, f"got {value!r}; allowed: cpu, auto, cuda:N")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    runs_dir: str = "runs"  # run directories go here, relative to the current directory
    id: str = ""  # run id; empty = a new timestamped id
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CurveConfig:
    keys_dir: str = ""  # made by `rtchat keys gen DIR`: server.key_secret, client.key_secret, authorized/
    client_name: str = "client"  # which client keypair in keys_dir this process uses


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BusConfig:
    pub_endpoint: str = ""  # publishers connect here (proxy XSUB); empty = ipc:// in the run dir
    sub_endpoint: str = ""  # subscribers connect here (proxy XPUB); empty = ipc:// in the run dir
    hwm: int = 200_000  # high-water mark on every socket; ZeroMQ's default 1000 drops bursts
    max_message_bytes: int = 8 * 1024 * 1024  # larger frames are rejected as bad input
    heartbeat_interval_s: float = 1.0  # every node publishes node.heartbeat this often
    handshake_timeout_s: float = 10.0  # a node gives up if its own ping never comes back
    curve: CurveConfig = CurveConfig()

    def __post_init__(self):
        _check(self.hwm > 0, "bus.hwm", f"got {self.hwm}; allowed: an integer > 0")
        _check(self.max_message_bytes >= 1024, "bus.max_message_bytes", "allowed: >= 1024")
        _check(self.heartbeat_interval_s > 0, "bus.heartbeat_interval_s", "allowed: a number > 0")
        _check(self.handshake_timeout_s > 0, "bus.handshake_timeout_s", "allowed: a number > 0")
        for key in ("pub_endpoint", "sub_endpoint"):
            value = getattr(self, key)
            _check(
                value == "" or value.startswith(("ipc://", "tcp://", "inproc://")),
                f"bus.{key}",
                f"got {value!r}; allowed: empty (ipc in the run dir), ipc://PATH, tcp://HOST:PORT",
            )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LauncherConfig:
    nodes: tuple[str, ...] = ("logger",)  # started in this order, after the proxy
    ui: Literal["none", "terminal", "gradio"] = "none"  # the front-end
    ready_timeout_s: float = 300.0  # all nodes must publish node.ready within this
    missed_heartbeats: int = 3  # a node silent this many intervals is restarted (its process is frozen)
    stall_limit_s: float = 30.0  # a node whose loop is inside one call this long is restarted (README: measured)
    restart_backoff_s: float = 0.5  # the wait before a second restart in a row (the first is at once); doubles per restart
    standby: tuple[str, ...] = ()  # nodes with a hot spare: loaded beside them, called in at a restart
    restart_backoff_max_s: float = 10.0
    healthy_reset_s: float = 30.0  # a node up this long gets its backoff reset
    shutdown_grace_s: float = 3.0  # after ctl.shutdown, wait this long, then terminate, then kill
    duration_s: float = 0.0  # stop by itself after this long (0 = run until Ctrl-C)

    def __post_init__(self):
        for name in self.nodes:
            _check(name in NODE_NAMES, "launcher.nodes", f"unknown node {name!r}; allowed: {', '.join(NODE_NAMES)}")
        _check(len(set(self.nodes)) == len(self.nodes), "launcher.nodes", "a node is listed twice")
        for name in self.standby:
            allowed = ", ".join(STANDBY_NODES)
            _check(name in STANDBY_NODES, "launcher.standby", f"{name!r} cannot have a spare; allowed: {allowed}")
        _check(self.missed_heartbeats >= 1, "launcher.missed_heartbeats", "allowed: an integer >= 1")
        _check(self.restart_backoff_s > 0, "launcher.restart_backoff_s", "allowed: a number > 0")
        _check(self.stall_limit_s > 0, "launcher.stall_limit_s", "allowed: a number > 0")
        _check(self.duration_s >= 0, "launcher.duration_s", "allowed: a number >= 0")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LoggerConfig:
    flush_interval_ms: int = 200  # a crash loses at most this much of the log

    def __post_init__(self):
        _check(self.flush_interval_ms > 0, "logger.flush_interval_ms", "allowed: an integer > 0")


DECODINGS = ("greedy", "nucleus", "typical", "contrastive", "dynamic_contrastive")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    # the model
    model: str = "embedded:smollm2-135m"  # hub id, local folder, a .gguf file, or embedded:NAME
    adapter: str = ""  # LoRA adapter (hub id or folder; "embedded" = the project's, "embedded-v1" = the first), empty = none
    device: str = "auto"  # cpu | cuda:N | auto
    # auto = float32 on cpu, float16 on cuda; int8 / int4 = quantised linear weights (CPU only; nodes/agent/quant.py)
    dtype: Literal["auto", "float32", "float16", "bfloat16", "int8", "int4"] = "auto"
    threads: int = 0  # torch CPU threads; 0 = torch's default
    seed: int = 0  # seeds sampling; the same seed and inputs give the same words
    # the conversation
    user_name: str = "unknown"
    user_age: str = "unknown"
    user_sex: str = "unknown"
    agent_name: str = "unknown"
    agent_age: str = "unknown"
    agent_sex: str = "unknown"
    summary: str = ""  # "S1 and S2 are talking about …"; empty = no Summary: section
    max_summary_chars: int = 2000  # a longer summary is cut at a word boundary (and reported)
    agent_starts: bool = False  # the transcript opens with S2:
    opening_utterance: str = ""  # the agent's first words, used at its first turn
    # timing
    interval_s: float = 0.8  # decision interval while the agent speaks
    listen_interval_s: float = 0.1  # decision interval while the agent listens (min with interval_s): the pause step
    switch_threshold: float = 0.5  # the agent takes the turn when P(its tag comes next) reaches this
    # pauses the switch schedule covers after new words (nodes/agent/schedule.py); 0 = a probe every decision
    schedule_steps: int = 10
    user_pause_step_s: float = 0.1  # user silence is written in steps of this
    max_agent_pause_s: float = 10.0  # cap on the wait after a pause the agent wrote
    max_history_words: int = 100  # transcript words kept after the prefix (trimmed at a speaker tag)
    # a trim keeps this many words (0, or more than max_history_words: max_history_words); fewer
    # makes the next trim, which re-runs the whole history on the model, come later
    trim_to_words: int = 0
    # decoding
    max_new_tokens: int = 7  # one chunk of agent speech per cycle
    # at a switch, a reply generated then (none was ready) goes out after its first N words, and
    # what follows the first chunk (generated or released) is generated at once, while it plays
    # (issue 20); 0 = the reference's cadence: the words up to the first pause, the next chunk interval_s later
    first_chunk_words: int = 1
    decoding: Literal["greedy", "nucleus", "typical", "contrastive", "dynamic_contrastive"] = "dynamic_contrastive"
    top_k: int = 8  # contrastive candidates
    top_p: float = 0.7  # nucleus p; for dynamic contrastive, sampling among candidates (0 = deterministic)
    typical_p: float = 0.95
    temperature: float = 1.0
    min_penalty_alpha: float = 0.0  # contrastive α; dynamic contrastive moves between min and max
    max_penalty_alpha: float = 0.6
    add_pause_token: bool = False  # write pauses as "<p> (0.4)" (only for models trained so)
    prevent_special_tokens: bool = False  # ban newline, eos and the prefix words (zero-shot base models)
    # lookahead
    lookahead: bool = True  # predict the user's completion and the reply while the user speaks
    similarity_threshold: float = 0.8  # keep the last prediction while the actual words stay this similar
    lookahead_max_tokens: int = 80
    response_max_tokens: int = 10  # the predicted reply, its " S" tag token included

    def __post_init__(self):
        _device("agent.device", self.device)
        for key in ("interval_s", "listen_interval_s", "user_pause_step_s", "max_agent_pause_s", "temperature"):
            value = getattr(self, key)
            _check(value > 0, f"agent.{key}", f"got {value}; allowed: a number > 0")
        _check(self.first_chunk_words >= 0, "agent.first_chunk_words", f"got {self.first_chunk_words}; allowed: an integer >= 0")
        for key in ("max_history_words", "max_new_tokens", "top_k", "lookahead_max_tokens", "response_max_tokens"):
            value = getattr(self, key)
            _check(value >= 1, f"agent.{key}", f"got {value}; allowed: an integer >= 1")
        _check(self.threads >= 0, "agent.threads", "allowed: an integer >= 0")
        _check(self.schedule_steps >= 0, "agent.schedule_steps", f"got {self.schedule_steps}; allowed: an integer >= 0")
        _check(self.trim_to_words >= 0, "agent.trim_to_words", f"got {self.trim_to_words}; allowed: an integer >= 0")
        _check(self.max_summary_chars >= 0, "agent.max_summary_chars", "allowed: an integer >= 0")
        _check(0 <= self.top_p <= 1, "agent.top_p", f"got {self.top_p}; allowed: 0 … 1")
        _check(0 < self.typical_p <= 1, "agent.typical_p", f"got {self.typical_p}; allowed: > 0 … 1")
        _check(-1 <= self.similarity_threshold <= 1, "agent.similarity_threshold", "allowed: -1 … 1")
        _check(0 < self.switch_threshold <= 1, "agent.switch_threshold", f"got {self.switch_threshold}; allowed: > 0 … 1")
        _check(
            0 <= self.min_penalty_alpha <= self.max_penalty_alpha <= 1,
            "agent.min_penalty_alpha",
            f"got {self.min_penalty_alpha}/{self.max_penalty_alpha}; allowed: 0 <= min <= max <= 1",
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AsrConfig:
    # the recogniser
    backend: Literal["faster-whisper", "openai-whisper"] = "faster-whisper"
    model: str = "embedded:tiny.en"  # size name, model folder/checkpoint, or embedded:NAME
    device: str = "auto"
    # auto = int8 on cpu, float16 on cuda (faster-whisper); openai-whisper: float16 only on cuda
    compute_type: Literal["auto", "int8", "int8_float16", "int8_float32", "float16", "float32"] = "auto"
    threads: int = 0  # CPU threads of the recogniser; 0 = the backend's default
    language: str = "en"  # passed to Whisper; English-only models (*.en) ignore it
    # fit: the encoder sees the call's audio + audio_ctx_margin_s, not Whisper's padded 30 s window
    # (whisper.cpp's audio_ctx; faster-whisper only, its cost follows the audio); full: the 30 s window
    audio_ctx: Literal["fit", "full"] = "fit"
    audio_ctx_margin_s: float = 2.0
    # the streaming policy (nodes/asr/policy.py)
    hop_s: float = 0.4  # new speech between two transcriptions (rtchat bench asr: 0.5 s commits words ~150 ms later)
    first_word_hop_s: float = 0.2  # the hop after a call that found no word of the utterance yet (0: hop_s)
    max_hop_s: float = 2.0  # behind real time by L s, the node waits hop_s + L (at most this) between calls
    max_buffer_s: float = 15.0  # the most audio one transcription sees
    trim_after_s: float = 10.0  # keep committed audio as context until the buffer is this long
    preroll_s: float = 0.3  # audio before the VAD's speech start that Whisper hears too
    prompt_words: int = 50  # committed words passed to Whisper as its prompt
    silence_dbfs: float = -50.0  # a buffer quieter than this is not transcribed
    # voice activity (nodes/asr/vad.py): gates transcription, publishes vad.start / vad.end
    vad_start_threshold: float = 0.5  # speech starts at a 32 ms window this likely to be speech
    vad_end_threshold: float = 0.35  # and ends after vad_min_silence_ms of windows below this
    vad_min_silence_ms: int = 500
    vad_speech_pad_ms: int = 30  # the speech span is widened by this on both sides
    # a hypothesis as soon as the VAD has heard this much silence inside speech (whole 32 ms windows,
    # rounded up; 0: off): when the speech then ends there, vad.end's flush needs no recogniser call
    silence_hop_ms: int = 64
    # input frames and self-echo
    max_gap_s: float = 2.0  # a longer gap between frames restarts the stream (frames.py)
    echo: Literal["suppress", "none"] = "suppress"  # suppress: drop words the agent just played
    echo_margin_s: float = 0.5  # a word this close to played agent audio may be its echo

    def __post_init__(self):
        _device("asr.device", self.device)
        _check(self.threads >= 0, "asr.threads", "allowed: an integer >= 0")
        _check(bool(self.language), "asr.language", "allowed: a Whisper language code such as en")
        _check(0 <= self.audio_ctx_margin_s <= 30, "asr.audio_ctx_margin_s", f"got {self.audio_ctx_margin_s}; allowed: 0 … 30")
        _check(
            0 < self.hop_s < self.max_buffer_s,
            "asr.hop_s",
            f"got hop_s={self.hop_s}, max_buffer_s={self.max_buffer_s}; allowed: 0 < hop_s < max_buffer_s",
        )
        _check(
            0 <= self.first_word_hop_s <= self.hop_s,
            "asr.first_word_hop_s",
            f"got {self.first_word_hop_s}; allowed: 0 (= hop_s) … hop_s ({self.hop_s})",
        )
        _check(
            self.hop_s <= self.max_hop_s < self.max_buffer_s,
            "asr.max_hop_s",
            f"got {self.max_hop_s}; allowed: hop_s ({self.hop_s}) … below max_buffer_s ({self.max_buffer_s})",
        )
        _check(self.prompt_words >= 0, "asr.prompt_words", "allowed: an integer >= 0")
        _check(
            0 <= self.trim_after_s <= self.max_buffer_s,
            "asr.trim_after_s",
            f"got {self.trim_after_s}; allowed: 0 … max_buffer_s ({self.max_buffer_s})",
        )
        _check(0 <= self.preroll_s <= 0.9, "asr.preroll_s", f"got {self.preroll_s}; allowed: 0 … 0.9")
        _check(
            0 < self.vad_end_threshold <= self.vad_start_threshold < 1,
            "asr.vad_start_threshold",
            f"got start {self.vad_start_threshold}, end {self.vad_end_threshold}; allowed: 0 < end <= start < 1",
        )
        _check(self.vad_min_silence_ms > 0, "asr.vad_min_silence_ms", "allowed: an integer > 0")
        _check(self.vad_speech_pad_ms >= 0, "asr.vad_speech_pad_ms", "allowed: an integer >= 0")
        _check(
            0 <= self.silence_hop_ms < self.vad_min_silence_ms,
            "asr.silence_hop_ms",
            f"got {self.silence_hop_ms}; allowed: 0 (off) … below vad_min_silence_ms ({self.vad_min_silence_ms})",
        )
        _check(self.max_gap_s >= 0, "asr.max_gap_s", "allowed: a number >= 0")
        _check(self.echo_margin_s >= 0, "asr.echo_margin_s", "allowed: a number >= 0")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TtsConfig:
    backend: Literal["piper", "espeak", "bark", "fastspeech2"] = "piper"
    # piper: embedded:joe or a .onnx voice file; bark / fastspeech2: hub id or folder
    # (empty = suno/bark-small, espnet/fastspeech2_conformer_with_hifigan); espeak: unused
    model: str = ""
    voice: str = ""  # backend-specific voice (bark preset, fastspeech2 "Voice N", espeak name); empty = default
    device: str = "auto"
    max_chars: int = 400  # longer text is rendered in pieces cut at word boundaries
    rate: float = 1.0  # speaking speed (piper: length_scale 1/rate; espeak: 175 words/min × rate)
    threads: int = 0  # piper's onnxruntime threads; 0 = onnxruntime's default (all cores)

    def __post_init__(self):
        _device("tts.device", self.device)
        _check(self.max_chars >= 20, "tts.max_chars", f"got {self.max_chars}; allowed: an integer >= 20")
        _check(0.25 <= self.rate <= 4.0, "tts.rate", f"got {self.rate}; allowed: 0.25 … 4.0")
        _check(self.threads >= 0, "tts.threads", f"got {self.threads}; allowed: an integer >= 0")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AudioConfig:
    # auto = the default microphone if there is one, else none (typed input only); mic; none;
    # browser (the web page sends the audio); or a WAV file to play as the user
    input: str = "auto"
    # auto = the default speaker if there is one, else none; speaker; none; browser
    output: str = "auto"
    input_device: str = ""  # sounddevice device name or index; empty = the system default
    output_device: str = ""
    realtime: bool = True  # pace a WAV input in real time; false = as fast as possible (tests)
    pad_after_eof: bool = True  # after a real-time WAV input ends, silence frames follow (as from a microphone)
    sr_hz: int = SR_HZ  # rate of the audio.in frames and of the session recording
    frame_ms: int = 20  # one audio.in frame
    record: bool = True  # write session.wav in the run dir: user left, agent right, time-aligned
    tail_s: float = 5.0  # after a WAV input ends, the session goes on this long, then stops

    def __post_init__(self):
        for key in ("input", "output"):
            _check(bool(getattr(self, key)), f"audio.{key}", "allowed: auto, mic/speaker, none, browser, or a WAV path")
        _check(self.output in ("auto", "speaker", "none", "browser"), "audio.output",
               f"got {self.output!r}; allowed: auto, speaker, none, browser")
        _check(8000 <= self.sr_hz <= 48000, "audio.sr_hz", f"got {self.sr_hz}; allowed: 8000 … 48000")
        _check(5 <= self.frame_ms <= 100, "audio.frame_ms", f"got {self.frame_ms}; allowed: 5 … 100")
        _check(self.tail_s >= 0, "audio.tail_s", f"got {self.tail_s}; allowed: a number >= 0")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UiConfig:
    """The web page (launcher.ui=gradio)."""

    host: str = "127.0.0.1"  # listen here; 0.0.0.0 opens the page to the network (a warning is printed)
    port: int = 7860
    auth: str = ""  # empty = no login; user:password, or a file of user:password lines

    def __post_init__(self):
        _check(bool(self.host), "ui.host", "allowed: an address such as 127.0.0.1 or 0.0.0.0")
        _check(0 < self.port < 65536, "ui.port", f"got {self.port}; allowed: 1 … 65535")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    run: RunConfig = RunConfig()
    bus: BusConfig = BusConfig()
    launcher: LauncherConfig = LauncherConfig()
    logger: LoggerConfig = LoggerConfig()
    agent: AgentConfig = AgentConfig()
    asr: AsrConfig = AsrConfig()
    tts: TtsConfig = TtsConfig()
    audio: AudioConfig = AudioConfig()
    ui: UiConfig = UiConfig()
