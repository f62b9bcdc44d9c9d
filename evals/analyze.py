"""``rtchat analyze RUN_DIR --json OUT [--png OUT.png]``: what happened in a session, from its log alone.

Speech spans (all times on the bus clock, ns):
- **user**: ``vad.start``/``vad.end`` pairs (audio time, mapped to the clock through the capture
  time of ``audio.in`` frames), labelled with the ``asr.final`` words inside them; in a session
  without a VAD, ``asr.final`` word times; typed ``user.text`` is an instant.
- **agent**: ``audio.played`` chunks, trimmed of the leading and trailing silence pieces their
  ``tts.audio`` carried (a chunk ``(0.4) yeah`` starts sounding 0.4 s after its first sample);
  chunks closer than ``MERGE_GAP_NS`` form one inter-pausal unit (IPU).

Floor transfers: an agent IPU whose most recent preceding speech start is the user's (the user
spoke since the agent last did) is a user → agent transfer; its offset (FTO) is the agent's
first sound minus the end of that user IPU — negative when the agent started while the user was
still speaking. User IPUs closer than ``turn_gap`` with no agent speech between form a user turn;
a turn is answered when agent speech starts after its start and before the next user turn.
Overlaps are the stretches where both speak. An interruption is a user IPU that starts while the
agent is sounding; the agent yielded when an ``agent.cancel`` follows within ``YIELD_WINDOW_NS``.

Stage latencies (p50 per stage, ms), each measured where the log shows both ends:
``vad_start`` / ``vad_end`` (event time − the speech onset/end it reports), ``asr_partial`` /
``asr_final`` (event time − end of its last word), ``agent_decision`` (the agent output that
opens an agent turn − the last user event before it: asr.*, user.text, vad.pause, vad.end), ``tts_first_audio``
(first ``tts.audio`` piece of a chunk − the ``agent.say``/``agent.release`` that asked for it),
``played`` (the chunk's first sample played − its first tts.audio piece).

The signals of each transfer (``transfers[i].signals_ms``, ms after the end of the user's speech —
the transfer's user IPU end —, negative when before it; None where the log lacks one), and their
p50 over the transfers (``signal_p50_ms``, with ``signal_n`` counting them): ``vad_pause`` (the
``vad.pause`` at the start of the silence that closed that IPU), ``vad_end`` (the ``vad.end`` that
closed it), ``partial`` (the last ``asr.partial`` after the IPU began, up to
the agent's first sound), ``final`` (the ``asr.final`` with the IPU's last words: the latest one
whose last word lies in or nearest that IPU), ``decision`` (the last ``agent.cycle`` deciding to take
the floor — ``TAKE_FLOOR``: ``switch`` — since the agent's previous IPU began, up to its first
sound), ``audio`` (the ``audio.played`` start of the chunk that opened the agent's IPU: its first
sample, leading silence included), and the switch schedule's (``agent.schedule``,
nodes/agent/schedule.py): ``armed`` (the schedule in force at the agent's first sound: the last
``armed`` since the agent's previous IPU began, unless a ``disarmed`` followed it; words that came
in the silence set the schedule aside with no event, so such a transfer shows ``armed`` and is
taken by a probe) and ``fired`` (the ``fired`` in that stretch: the agent took the turn on the
schedule). The timeline picture marks them between the lanes.

Each transfer's ``schedule``: ``taken_by`` (``"schedule"`` when one fired, else ``"probe"`` when
the log shows the ``decision``, else None), ``fire_after_ms`` (the pause after which the armed
schedule planned to take the turn; None: not armed, or no pause in its plan reached the
threshold), ``fired_pause_ms`` (the pause it fired on), ``disarmed`` (schedules disarmed in that
stretch: the user spoke again first). Over the session: ``schedule_fired_rate`` (the share of
transfers taken by the schedule; None without transfers), ``schedule_disarmed`` (the ``disarmed``
events in the log), and ``schedule_list`` (every armed / fired / disarmed step, ``at_s`` on the
picture's time axis, with its ``fire_after_ms``), which the picture marks below the signals: a
disarmed schedule as a hollow circle where the user spoke again.

Full-Duplex-Bench v1.0 metrics (``fdb_*``: take-over rates in user pauses, after turn ends and after
interruptions, their latencies, the backchannel rate) are computed from the same spans by
``fdb.py``, whose docstring defines them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from rtchat.bus.events import (
    AgentCancel,
    AgentCycle,
    AgentPause,
    AgentRelease,
    AgentSay,
    AgentSchedule,
    AsrFinal,
    AsrPartial,
    AudioIn,
    AudioPlayed,
    Event,
    TtsAudio,
    UserText,
    VadEnd,
    VadPause,
    VadStart,
)
from rtchat.common.files import replacing
from rtchat.common.stats import percentile
from rtchat.evals import fdb
from rtchat.nodes.agent.transcript import PAUSE_RE

MERGE_GAP_NS = 300_000_000  # agent chunks closer than this are one IPU
YIELD_WINDOW_NS = 2_000_000_000  # an agent.cancel this soon after a user onset over agent speech = yielded
TYPED_SPAN_NS = 1  # a typed message is an instant
TAKE_FLOOR = ("switch",)  # the agent.cycle decisions that take the floor from the user
# a transfer's signals, in their usual order
SIGNALS = ("vad_pause", "vad_end", "armed", "partial", "final", "fired", "decision", "audio")
SCHEDULE_STEPS = ("armed", "fired", "disarmed")  # the agent.schedule actions the report lists and the picture marks
SIGNAL_MARKERS = {"vad_pause": ("1", "tab:blue"), "vad_end": ("v", "tab:blue"), "armed": ("o", "tab:purple"),
                  "partial": ("|", "tab:green"),
                  "final": ("s", "tab:green"), "fired": ("*", "tab:brown"), "decision": ("D", "tab:red"),
                  "audio": ("^", "tab:orange"), "disarmed": ("o", "tab:pink")}  # the timeline picture's (disarmed: hollow)


@dataclasses.dataclass
class Span:
    start_ns: int
    end_ns: int
    text: str = ""


@dataclasses.dataclass
class Timed:
    t_ns: int  # the publisher's clock time (envelope)
    event: Event


def read_events(run: str | Path) -> tuple[list[Timed], dict]:
    """The decodable events of a run directory or log file, in publish-time order, and notes
    (undecodable records, damage)."""
    from rtchat.bus.eventlog import LogReader
    from rtchat.bus.logcli import LIMITS
    from rtchat.bus.wire import WireError, decode

    reader = LogReader(run)
    out: list[Timed] = []
    undecodable = 0
    for rec in reader:
        try:
            msg = decode(rec.frames, LIMITS)
        except WireError:
            undecodable += 1
            continue
        out.append(Timed(msg.env.t_ns, msg.event))
    out.sort(key=lambda e: e.t_ns)
    notes = {"undecodable": undecodable, "damage": reader.damage.reason if reader.damage else None}
    return out, notes


def _ms(ns: int) -> float:
    return ns / 1e6


class AudioClock:
    """Maps audio time (ns since the input stream's first sample) to the bus clock."""

    def __init__(self, events: list[Timed]):
        first = next((e.event for e in events if isinstance(e.event, AudioIn)), None)
        self.offset_ns = None
        if first is not None:
            self.offset_ns = first.t_capture_ns - first.stream_pos * 1_000_000_000 // first.sr_hz

    def __call__(self, audio_ns: int) -> int | None:
        return None if self.offset_ns is None else audio_ns + self.offset_ns


def vad_spans(events: list[Timed], clock: AudioClock) -> list[Span]:
    """User speech as the VAD saw it: ``vad.start``/``vad.end`` pairs on the bus clock."""
    spans: list[Span] = []
    open_start = None
    for e in events:
        ev = e.event
        if isinstance(ev, VadStart) and clock.offset_ns is not None:
            open_start = clock(ev.audio_ns)
        elif isinstance(ev, VadEnd) and open_start is not None:
            spans.append(Span(open_start, max(open_start, clock(ev.audio_ns))))
            open_start = None
    if open_start is not None:  # speech still going when the log ended
        spans.append(Span(open_start, max(open_start, events[-1].t_ns)))
    return spans


def nearest(spans: list[Span], t_ns: int) -> Span:
    """The span holding ``t_ns``, else the closest one."""
    return min(spans, key=lambda s: max(s.start_ns - t_ns, t_ns - s.end_ns, 0))


def user_spans(events: list[Timed], clock: AudioClock) -> list[Span]:
    spans = vad_spans(events, clock)
    finals = [e for e in events if isinstance(e.event, AsrFinal)]
    if spans:
        for f in finals:
            for w in f.event.words:
                target = nearest(spans, clock((w.start_ns + w.end_ns) // 2))
                target.text = f"{target.text} {w.text.strip()}".strip()
    elif clock.offset_ns is not None:  # no VAD events: one span per final, from its word times
        for f in finals:
            if f.event.words:
                spans.append(Span(clock(f.event.words[0].start_ns), clock(f.event.words[-1].end_ns), f.event.text.strip()))
    for e in events:
        if isinstance(e.event, UserText):
            spans.append(Span(e.t_ns, e.t_ns + TYPED_SPAN_NS, e.event.text.strip()))
    return sorted(spans, key=lambda s: s.start_ns)


def _silence_edges(pieces: list[TtsAudio]) -> tuple[int, int]:
    """Leading and trailing silence (ns) of a chunk, from its tts.audio pieces (silence pieces carry no text)."""
    def run(seq) -> int:
        total = 0
        for p in seq:
            if p.text.strip():
                break
            total += p.n_samples * 1_000_000_000 // p.sr_hz
        return total

    if all(not p.text.strip() for p in pieces):
        return 0, 0
    return run(pieces), run(reversed(pieces))


def agent_chunks(events: list[Timed]) -> list[tuple[Span, AudioPlayed]]:
    """Each played chunk's audible span (silence pieces trimmed), with its audio.played."""
    pieces: dict[tuple[int, int, int], list[TtsAudio]] = {}
    for e in events:
        if isinstance(e.event, TtsAudio):
            ev = e.event
            pieces.setdefault((ev.turn, ev.gen, ev.chunk), []).append(ev)
    out = []
    for e in events:
        ev = e.event
        if not isinstance(ev, AudioPlayed) or ev.end_ns <= ev.start_ns:
            continue
        lead, trail = _silence_edges(pieces.get((ev.turn, ev.gen, ev.chunk), []))
        full_ns = ev.n_samples * 1_000_000_000 // ev.sr_hz if ev.sr_hz else ev.end_ns - ev.start_ns
        start = ev.start_ns + lead
        end = min(ev.end_ns, ev.start_ns + max(0, full_ns - trail))
        if not ev.text.strip() or end <= start:
            continue  # a chunk that only held silence, or was cut before it made a sound
        out.append((Span(start, end, ev.text.strip()), ev))
    return sorted(out, key=lambda c: c[0].start_ns)


def spread_words(chunks: list[Span]) -> list[Span]:
    """The words of each agent chunk (pause tokens left out), spread evenly over its audible span:
    the log says when a chunk sounded, not when each of its words did."""
    out = []
    for c in chunks:
        words = PAUSE_RE.sub(" ", c.text).split()
        step = (c.end_ns - c.start_ns) / max(1, len(words))
        out += [Span(c.start_ns + round(i * step), c.start_ns + round((i + 1) * step), w) for i, w in enumerate(words)]
    return out


def merge(spans: list[Span], gap_ns: int) -> list[Span]:
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: s.start_ns):
        if out and s.start_ns - out[-1].end_ns <= gap_ns:
            out[-1].end_ns = max(out[-1].end_ns, s.end_ns)
            out[-1].text = f"{out[-1].text} {s.text}".strip()
        else:
            out.append(dataclasses.replace(s))
    return out


def floor_transfers(user: list[Span], agent: list[Span]) -> list[dict]:
    """User → agent transfers: agent IPUs with user speech starting since the previous agent IPU began."""
    out = []
    for i, a in enumerate(agent):
        since = agent[i - 1].start_ns if i else -1
        spoke = [u for u in user if since < u.start_ns < a.start_ns]
        if not spoke:
            continue
        end = max(u.end_ns for u in spoke)
        out.append({
            "user_end_ns": end,
            "agent_start_ns": a.start_ns,
            "fto_ms": round(_ms(a.start_ns - end), 1),
            "user": " ".join(u.text for u in spoke if u.text),
            "agent": a.text,
        })
    return out


def overlaps(user: list[Span], agent: list[Span]) -> list[Span]:
    out = []
    for u in user:
        for a in agent:
            s, e = max(u.start_ns, a.start_ns), min(u.end_ns, a.end_ns)
            if e > s:
                out.append(Span(s, e))
    return out


def user_turns(user: list[Span], agent: list[Span], turn_gap_ns: int) -> list[dict]:
    turns: list[list[Span]] = []
    for u in user:
        if turns:
            last = turns[-1][-1]
            agent_between = any(last.start_ns < a.start_ns < u.start_ns for a in agent)
            if u.start_ns - last.end_ns <= turn_gap_ns and not agent_between:
                turns[-1].append(u)
                continue
        turns.append([u])
    out = []
    for i, t in enumerate(turns):
        nxt = turns[i + 1][0].start_ns if i + 1 < len(turns) else None
        answer = next((a for a in agent if a.start_ns > t[0].start_ns and (nxt is None or a.start_ns < nxt)), None)
        out.append({
            "start_ns": t[0].start_ns,
            "end_ns": t[-1].end_ns,
            "text": " ".join(s.text for s in t if s.text),
            "answered": answer is not None,
            "answer_start_ns": answer.start_ns if answer else None,
        })
    return out


def interruptions(events: list[Timed], user: list[Span], agent: list[Span]) -> list[dict]:
    cancels = [e.t_ns for e in events if isinstance(e.event, AgentCancel)]
    yields = [e.t_ns for e in events if isinstance(e.event, AgentCycle) and e.event.decision == "yield"]
    out = []
    for u in user:
        if any(a.start_ns < u.start_ns < a.end_ns for a in agent):
            window = (u.start_ns, u.start_ns + YIELD_WINDOW_NS)
            yielded = any(window[0] <= t <= window[1] for t in cancels + yields)
            out.append({"at_ns": u.start_ns, "user": u.text, "agent_yielded": yielded})
    return out


def stage_latencies(events: list[Timed], clock: AudioClock, transfers: list[dict]) -> dict[str, list[float]]:
    stages: dict[str, list[float]] = {k: [] for k in (
        "vad_start", "vad_end", "asr_partial", "asr_final", "agent_decision", "tts_first_audio", "played")}
    if clock.offset_ns is not None:
        for e in events:
            ev = e.event
            if isinstance(ev, VadStart):
                stages["vad_start"].append(_ms(e.t_ns - clock(ev.audio_ns)))
            elif isinstance(ev, VadEnd):
                stages["vad_end"].append(_ms(e.t_ns - clock(ev.audio_ns)))
            elif isinstance(ev, AsrPartial | AsrFinal) and ev.words:
                key = "asr_partial" if isinstance(ev, AsrPartial) else "asr_final"
                stages[key].append(_ms(e.t_ns - clock(ev.words[-1].end_ns)))
    # agent outputs, their first tts piece, and when they played
    asked: dict[tuple[int, int, int], int] = {}
    first_piece: dict[tuple[int, int, int], int] = {}
    for e in events:
        ev = e.event
        if isinstance(ev, AgentSay):
            asked.setdefault((ev.turn, ev.gen, ev.chunk), e.t_ns)
        elif isinstance(ev, AgentRelease):
            for c in range(ev.chunk, ev.chunk + ev.n_chunks):
                asked.setdefault((ev.turn, ev.gen, c), e.t_ns)
        elif isinstance(ev, TtsAudio):
            key = (ev.turn, ev.gen, ev.chunk)
            if key not in first_piece:
                first_piece[key] = e.t_ns
                if key in asked:
                    stages["tts_first_audio"].append(_ms(e.t_ns - asked[key]))
        elif isinstance(ev, AudioPlayed):
            key = (ev.turn, ev.gen, ev.chunk)
            if key in first_piece:
                stages["played"].append(_ms(ev.start_ns - first_piece[key]))
    # the output that opened each agent turn after user speech, against the last user-side event
    user_side = sorted(e.t_ns for e in events if isinstance(e.event, AsrPartial | AsrFinal | UserText | VadEnd | VadPause))
    outputs = sorted(asked.values())
    for tr in transfers:
        last_user = max((t for t in user_side if t <= tr["agent_start_ns"]), default=None)
        first_out = min((t for t in outputs if last_user is not None and last_user < t <= tr["agent_start_ns"]), default=None)
        if first_out is not None:
            stages["agent_decision"].append(_ms(first_out - last_user))
    return stages


def schedule_in(steps: list[Timed], since: int | None, start: int) -> tuple[Timed | None, Timed | None, int]:
    """The switch schedule in a transfer's stretch (after the agent's previous IPU began, up to its
    first sound): the ``armed`` step in force at the end (none once a ``disarmed`` followed it),
    the ``fired`` step, and how many were disarmed."""
    armed = fired = None
    disarmed = 0
    for step in steps:  # in time order
        if (since is not None and step.t_ns <= since) or step.t_ns > start:
            continue
        if step.event.action == "armed":
            armed = step
        elif step.event.action == "disarmed":
            armed, disarmed = None, disarmed + 1
        elif step.event.action == "fired":
            fired = step
    return armed, fired, disarmed


def _pause_ms(step: Timed | None) -> float | None:
    return None if step is None or step.event.fire_after_ns < 0 else round(_ms(step.event.fire_after_ns), 1)


def transfer_signals(events: list[Timed], clock: AudioClock, user: list[Span], agent: list[Span],
                     chunks: list[tuple[Span, AudioPlayed]], transfers: list[dict]) -> list[tuple[dict[str, float | None], dict]]:
    """Per transfer, when each signal arrived (ms after the user's speech end; None: not in the log),
    and what the switch schedule did (module doc)."""
    vad_ends = [(e.t_ns, clock(e.event.audio_ns)) for e in events if isinstance(e.event, VadEnd)]
    vad_pauses = [(e.t_ns, clock(e.event.audio_ns)) for e in events if isinstance(e.event, VadPause)]
    partials = [e.t_ns for e in events if isinstance(e.event, AsrPartial)]
    finals = [e for e in events if isinstance(e.event, AsrFinal) and e.event.words]
    decisions = [e.t_ns for e in events if isinstance(e.event, AgentCycle) and e.event.decision in TAKE_FLOOR]
    steps = [e for e in events if isinstance(e.event, AgentSchedule) and e.event.action in SCHEDULE_STEPS]
    played = {span.start_ns: ev.start_ns for span, ev in chunks}
    out = []
    for tr in transfers:
        end, start = tr["user_end_ns"], tr["agent_start_ns"]
        last = max((u for u in user if u.end_ns == end and u.start_ns < start), key=lambda u: u.start_ns)
        since = max((a.start_ns for a in agent if a.start_ns < start), default=None)
        own = [f.t_ns for f in finals if clock.offset_ns is not None
               and nearest(user, clock((f.event.words[-1].start_ns + f.event.words[-1].end_ns) // 2)) is last]
        armed, fired, disarmed = schedule_in(steps, since, start)
        signals = {  # vad.pause: the first silence_hop_ms of the silence that ended the speech (its end placed alike)
            "vad_pause": next((t for t, audio_end in vad_pauses if audio_end == end), None),
            "vad_end": next((t for t, audio_end in vad_ends if audio_end == end), None),
            "armed": None if armed is None else armed.t_ns,
            "partial": max((t for t in partials if last.start_ns < t <= start), default=None),
            "final": max(own, default=None),
            "fired": None if fired is None else fired.t_ns,
            "decision": max((t for t in decisions if (since is None or since < t) and t <= start), default=None),
            "audio": played.get(start),
        }
        schedule = {"taken_by": "schedule" if fired is not None else "probe" if signals["decision"] is not None else None,
                    "fire_after_ms": _pause_ms(armed), "fired_pause_ms": _pause_ms(fired), "disarmed": disarmed}
        out.append(({k: None if t is None else round(_ms(t - end), 1) for k, t in signals.items()}, schedule))
    return out


def analyze(events: list[Timed], turn_gap_s: float = 1.0) -> dict:
    clock = AudioClock(events)
    user = merge(user_spans(events, clock), 0)
    chunks = agent_chunks(events)
    agent = merge([c[0] for c in chunks], MERGE_GAP_NS)
    transfers = floor_transfers(user, agent)
    over = overlaps(user, agent)
    turns = user_turns(user, agent, int(turn_gap_s * 1e9))
    inter = interruptions(events, user, agent)
    stages = stage_latencies(events, clock, transfers)
    for tr, (signals, schedule) in zip(transfers, transfer_signals(events, clock, user, agent, chunks, transfers), strict=True):
        tr["signals_ms"], tr["schedule"] = signals, schedule
    fdb_samples = fdb.samples(user, agent, spread_words([c[0] for c in chunks]), int(turn_gap_s * 1e9))
    fto = [t["fto_ms"] for t in transfers]
    agent_pauses = [e.event.duration_ns / 1e9 for e in events if isinstance(e.event, AgentPause)]
    origin = min([s.start_ns for s in user + agent] or [events[0].t_ns if events else 0])
    steps = [e for e in events if isinstance(e.event, AgentSchedule) and e.event.action in SCHEDULE_STEPS]
    return {
        "turns": len(transfers),
        "fto_ms": fto,
        "fto_p50_ms": percentile(fto, 0.5),
        "fto_p90_ms": percentile(fto, 0.9),
        "overlaps": len(over),
        "overlap_ms_total": round(sum(_ms(o.end_ns - o.start_ns) for o in over), 1),
        "agent_started_in_overlap": sum(1 for t in transfers if t["fto_ms"] < 0),
        "user_turns": len(turns),
        "user_turns_answered": sum(1 for t in turns if t["answered"]),
        "interruptions": len(inter),
        "interruptions_yielded": sum(1 for i in inter if i["agent_yielded"]),
        "agent_pauses": len(agent_pauses),
        "agent_pause_s_total": round(sum(agent_pauses), 2),
        "stage_latency_ms": {k: percentile(v, 0.5) for k, v in stages.items()},
        "stage_latency_n": {k: len(v) for k, v in stages.items()},
        "signal_p50_ms": {k: percentile([t["signals_ms"][k] for t in transfers if t["signals_ms"][k] is not None], 0.5)
                          for k in SIGNALS},
        "signal_n": {k: sum(t["signals_ms"][k] is not None for t in transfers) for k in SIGNALS},
        "schedule_fired_rate": round(sum(t["schedule"]["taken_by"] == "schedule" for t in transfers) / len(transfers), 3)
        if transfers else None,
        "schedule_disarmed": sum(e.event.action == "disarmed" for e in steps),
        "schedule_list": [{"at_s": round((e.t_ns - origin) / 1e9, 3), "action": e.event.action, "fire_after_ms": _pause_ms(e)}
                          for e in steps],
        **fdb.summarize([fdb_samples]),
        "fdb_samples": {k: v for k, v in dataclasses.asdict(fdb_samples).items() if k != "backchannel_at"},
        "fdb_backchannels": [{"at_s": round((b["at_ns"] - origin) / 1e9, 3), "into_turn_s": b["into_turn_s"], "text": b["text"]}
                             for b in fdb_samples.backchannel_at],
        "transfers": [{**t, "user_end_s": round((t.pop("user_end_ns") - origin) / 1e9, 3),
                       "agent_start_s": round((t.pop("agent_start_ns") - origin) / 1e9, 3)} for t in transfers],
        "interruption_list": [{**i, "at_s": round((i.pop("at_ns") - origin) / 1e9, 3)} for i in inter],
        "spans": {
            "user": [[round((s.start_ns - origin) / 1e9, 3), round((s.end_ns - origin) / 1e9, 3), s.text] for s in user],
            "agent": [[round((s.start_ns - origin) / 1e9, 3), round((s.end_ns - origin) / 1e9, 3), s.text] for s in agent],
        },
    }


def timeline_png(report: dict, path: Path, title: str = "") -> None:
    """The timeline picture (``timeline_figure``) as a PNG."""
    import matplotlib.pyplot as plt

    fig = timeline_figure(report, title)
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")  # the text box stands right of the axes
    plt.close(fig)


def timeline_figure(report: dict, title: str = ""):
    """Who spoke when, with the words: user lane above, agent lane below, each transfer's signals
    between, and below them the switch schedule's steps (a disarmed one hollow). A matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spans = report["spans"]
    end = max([s[1] for s in spans["user"] + spans["agent"]] or [1.0])
    fig, ax = plt.subplots(figsize=(max(8.0, min(40.0, end * 0.6)), 3.0))
    for lane, (who, color) in enumerate((("user", "tab:blue"), ("agent", "tab:orange"))):
        y = 1 - lane
        for i, (s, e, text) in enumerate(spans[who]):
            ax.broken_barh([(s, max(e - s, 0.02))], (y - 0.3, 0.6), color=color, alpha=0.8)
            if text:  # labels alternate between two heights so neighbours do not overprint
                off = 0.34 + 0.22 * (i % 2)
                ax.text(s, y + off if lane == 0 else y - off, text[:60], fontsize=7,
                        va="bottom" if lane == 0 else "top", ha="left")
    for t in report["transfers"]:
        ax.annotate("", xy=(t["agent_start_s"], 0.3), xytext=(t["user_end_s"], 0.7),
                    arrowprops={"arrowstyle": "->", "color": "gray", "lw": 0.8})
    marks = [(name, t["user_end_s"] + ms / 1000, 0.5) for t in report["transfers"] for name, ms in t.get("signals_ms", {}).items()
             if ms is not None and name not in SCHEDULE_STEPS]  # the schedule's steps are drawn from its own list
    marks += [(step["action"], step["at_s"], 0.38) for step in report.get("schedule_list", [])]
    handles = {}
    for name, x, y in marks:
        marker, color = SIGNAL_MARKERS[name]
        handles[name] = ax.plot(x, y, marker=marker, color=color, ms=7 if name == "fired" else 5, ls="none", zorder=4,
                                markerfacecolor="none" if name == "disarmed" else color)[0]  # above the arrows
    if handles:
        names = [n for n in (*SIGNALS, "disarmed") if n in handles]
        ax.legend([handles[n] for n in names], [f"schedule {n}" if n in SCHEDULE_STEPS else n.replace("_", " ") for n in names],
                  loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=7, title="signals", title_fontsize=7)
    ax.set_yticks([1, 0], ["user", "agent"])
    ax.set_ylim(-1.1, 2.1)
    ax.set_xlim(0, end + 0.5)
    ax.set_xlabel("seconds")
    p50 = report["fto_p50_ms"]
    ax.set_title(title or f"{report['turns']} floor transfers to the agent, FTO p50 {p50} ms")
    if "fdb_n" in report:
        ax.text(1.01, 1.0, fdb.legend(report), transform=ax.transAxes, ha="left", va="top", fontsize=7,
                family="monospace", bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85})
    fig.tight_layout()
    return fig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR", help="a run directory (runs/<id>) or an events.rtlog file")
    parser.add_argument("--json", metavar="OUT", help="write the report here (default: print it)")
    parser.add_argument("--png", metavar="OUT.png", help="also draw the timeline picture (with the Full-Duplex-Bench figures)")
    parser.add_argument("--turn-gap", type=float, default=1.0, metavar="S",
                        help="user speech closer than this with no agent speech between is one turn; for the "
                        "Full-Duplex-Bench metrics, closer than this is one turn whatever the agent did (default 1.0)")


def run(args: argparse.Namespace) -> int:
    from rtchat.bus.eventlog import LogError
    from rtchat.common.files import write_atomic

    try:
        events, notes = read_events(args.run)
    except (FileNotFoundError, LogError) as exc:
        print(f"rtchat analyze: {exc}", file=sys.stderr)
        return 2
    report = {"run": str(args.run), **analyze(events, args.turn_gap), "log": notes}
    text = json.dumps(report, indent=2)
    if args.json:
        write_atomic(Path(args.json), text + "\n")
    else:
        print(text)
    if args.png:
        timeline_png(report, Path(args.png))
    print(f"turns {report['turns']}, FTO p50 {report['fto_p50_ms']} ms, p90 {report['fto_p90_ms']} ms, "
          f"overlaps {report['overlaps']}, user turns answered {report['user_turns_answered']}/{report['user_turns']}",
          file=sys.stderr)
    print(fdb.legend(report).replace("\n", "; "), file=sys.stderr)
    return 0
