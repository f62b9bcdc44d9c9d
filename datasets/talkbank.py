"""``rtchat data talkbank``: TalkBank CA corpora (CHAT) → transcript-line datasets.

Reads the reference's nine CA corpora (downloaded as zip files, or ``--from DIR`` of ``.cha``
files), parses them with pylangacq, maps speakers to S1, S2… (spec §13.2), cleans each main tier
in the reference's order (§13.3), windows each dialogue into ≤450-word examples with ≥100 words
of overlap (§13.6), splits by dialogue 81/9/10 (§13.8) and writes ``dataset_{train,dev,test}.txt``
atomically. Beyond the reference, ``--pauses-from-bullets`` turns the media time bullets into
pause tokens instead of deleting them (§13.4 says they never become pauses there).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import math
import random
import re
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pylangacq

from rtchat.datasets import splits
from rtchat.datasets.lines import Identity, format_line

log = logging.getLogger(__name__)

BASE_URL = "https://ca.talkbank.org/data"
CORPORA = {  # key → zip path under BASE_URL (spec §13.1)
    "CABNC": "CABNC.zip",
    "CallFriend_eng_n": "CallFriend/eng-n.zip",
    "CallFriend_eng_s": "CallFriend/eng-s.zip",
    "CallHome_eng": "CallHome/eng.zip",
    "GCSAusE": "GCSAusE.zip",
    "ISL": "ISL.zip",
    "MICASE": "MICASE.zip",
    "SCoSE": "SCoSE.zip",
    "SBCSAE": "SBCSAE.zip",
}
EXCLUDE_RE = re.compile(r"MICASE.+?(?:lab500su044|ofc301mu021)")  # spec §13.1
MAX_SPEAKERS = 9  # the line format names speakers S1…S9 (datasets/lines.py)
MAX_UTTERANCE_WORDS = 150
MIN_BULLET_PAUSE_MS = 100  # gaps shorter than 0.1 s are not written
KNOWN_TIERS = frozenset(  # CHAT dependent tiers (CHAT manual ch. 10); %x… are user-defined
    "%act %add %alt %cod %coh %com %def %eng %err %exp %fac %flo %gls %gpx %gra %grt %int %lan "
    "%mod %mor %ort %par %pho %sin %sit %spa %tim %trn %wor %xpho %xmod".split()
)

BULLET_RE = re.compile("\x15(\\d+?)_(\\d+?)\x15")  # literal NAK on both sides (spec §16.24)
BRACKET_RE = re.compile(r"\[[^%].*?\]")
NOT_KEPT_RE = re.compile(r"[^\w !?.,;\"'`()&=%\[\]]")
LONG_EVENT_RE = re.compile(r"&[l,n]=\S*")
DROPPED_EVENTS_RE = re.compile(r"&=(?:lengthened|tsk|in|nonvocal|ex)\b", re.I)
SHORT_PAUSE_RE = re.compile(r"\((\.\.?)\)")  # (.) and (..); (...) is never standardised
SINGLE_DOT_PAUSE_RE = re.compile(r"\((?=\d*\.\d*\))")  # the "(" of (0.5) or (.), not of (..) / (...)
PAUSE_TOKEN = "<p>"  # step 10: the reference's --add-special-pause-token marker
SPACE_BEFORE_RE = re.compile(r" (?=[!?.,;']|n')")
BLANK_UTTERANCES = frozenset({"", ".", "0."})


class TalkbankError(Exception):
    """Input the pipeline cannot use; the message names the file or URL and what to do."""


@dataclasses.dataclass(frozen=True, slots=True)
class Turn:
    tag: str  # "S1"
    text: str  # raw main tier as pylangacq gives it, bullets and CA symbols included


@dataclasses.dataclass(frozen=True, slots=True)
class Dialogue:
    name: str  # file path relative to its source, e.g. "MICASE/lab175.cha"
    identities: dict[str, Identity]
    turns: tuple[Turn, ...]


# ---- cleaning (spec §13.3, in order) -----------------------------------------------------------


def clean_line(text: str, rng: random.Random | None = None, pause_token: bool = False) -> str:
    """One main tier → cleaned text; ``rng`` given = standardise ``(.)``/``(..)`` (step 9);
    ``pause_token`` = ``<p> `` before every single-dot pause (step 10, after step 9)."""
    text = text.replace(" [!]", "!")  # 1
    text = BRACKET_RE.sub("", text)  # 2: [/], [//], [<], [=! laughs] go; [% comment] stays
    text = BULLET_RE.sub("", text)  # 3
    for mark in ('+"', "+,", "+/.", "&-"):  # 4, in this order
        text = text.replace(mark, "")
    text = text.replace("°", " ").replace("☺", " ")  # 5
    text = NOT_KEPT_RE.sub("", text)  # 6: arrows, ⌈⌉⌊⌋, ':' lengthening, hyphens, controls
    text = text.replace("ʔ", "")  # 7
    text = LONG_EVENT_RE.sub("", text)  # 8
    text = DROPPED_EVENTS_RE.sub("", text)
    if rng is not None:  # 9
        text = SHORT_PAUSE_RE.sub(lambda m: f"({_short_pause_s(m.group(1), rng):.1f})", text)
    if pause_token:  # 10
        text = SINGLE_DOT_PAUSE_RE.sub(PAUSE_TOKEN + " (", text)
    text = " ".join(text.split())  # 11
    return SPACE_BEFORE_RE.sub("", text).strip()


def _short_pause_s(dots: str, rng: random.Random) -> float:
    return rng.uniform(0.2, 0.6) if dots == "." else rng.uniform(0.7, 1.2)


def bullets_to_pauses(turns: list[Turn]) -> list[Turn]:
    """Each bullet followed by a gap ≥ 0.1 s before the next bullet becomes ``(x.y)`` in place.

    A bullet closes its stretch of speech, so the pause lands at the end of the finishing
    speaker's utterance (a turn gap) or mid-utterance (a within-turn pause); other bullets and
    overlaps (negative gaps) leave nothing, and ``clean_line`` deletes the remaining bullets.
    """
    spans = [(int(m.group(1)), int(m.group(2))) for t in turns for m in BULLET_RE.finditer(t.text)]
    gaps_ms = [nxt[0] - cur[1] for cur, nxt in zip(spans, spans[1:], strict=False)] + [-1]
    marks = iter(f" ({gap / 1000:.1f}) " if gap >= MIN_BULLET_PAUSE_MS else " " for gap in gaps_ms)
    out = []
    for turn in turns:
        out.append(dataclasses.replace(turn, text=BULLET_RE.sub(lambda _m: next(marks), turn.text)))
    return out


# ---- participants (spec §13.2) -----------------------------------------------------------------


def identity_of(participant) -> Identity:
    """pylangacq participant → name/age/sex as the reference describes them."""
    name = (participant.name or "").lower()
    sex = participant.sex or ""
    age = participant.age
    years = str(age.years) if age is not None else ""
    if name in ("male", "female"):
        name, sex = "", name
    else:
        name = name[:1].upper() + name[1:]
    cabnc_bug = age is not None and (age.years, age.months, age.days) == (1, 1, 1)
    if name == "Unknown_speaker" and cabnc_bug and sex == "male":  # corpus metadata error
        name = years = sex = ""
    return Identity(name=name or "unknown", age=years or "unknown", sex=sex or "unknown")


# ---- reading ---------------------------------------------------------------------------------


def read_dialogue(path: Path, name: str) -> Dialogue:
    """Parse one ``.cha`` file; TalkbankError names the file (and line) when it is unusable."""
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise TalkbankError(f"{name}: not UTF-8 text (byte {e.start}); is it a CHAT file?") from e
    except OSError as e:
        raise TalkbankError(f"{name}: cannot read: {e.strerror}") from e
    lines = raw.splitlines()
    if not any(line.startswith("@Begin") for line in lines):
        raise TalkbankError(f"{name}: not a CHAT file (no @Begin line)")
    try:
        chat = pylangacq.CHAT.from_strs([raw], ids=[name], parallel=False, strict=False)
    except ValueError as e:
        raise TalkbankError(f"{name}: pylangacq cannot parse it: {e}") from e
    participants = chat.headers()[0].participants if chat.n_files else []
    if not participants:
        raise TalkbankError(f"{name}: no participants (@Participants header missing or empty)")
    if len(participants) > MAX_SPEAKERS:
        raise TalkbankError(f"{name}: {len(participants)} participants; the line format allows {MAX_SPEAKERS}")
    tags = {p.code: f"S{k}" for k, p in enumerate(participants, 1)}
    for number, line in enumerate(lines, 1):
        tier = line.split(":", 1)[0]
        if line.startswith("%") and tier not in KNOWN_TIERS and not tier.startswith("%x"):
            log.warning("%s:%d: unknown dependent tier %s (ignored)", name, number, tier)
        elif line.startswith("*") and tier[1:] not in tags:
            log.warning("%s:%d: speaker %s is not in @Participants (utterance skipped)", name, number, tier)
    turns = tuple(
        Turn(tag=tags[u.participant], text=u.tiers[u.participant])
        for u in chat.utterances()
        if u.participant in tags and u.tiers and u.participant in u.tiers
    )
    identities = {tags[p.code]: identity_of(p) for p in participants}
    return Dialogue(name=name, identities=identities, turns=turns)


def chat_files(root: Path) -> list[tuple[Path, str]]:
    """``.cha`` files under ``root`` in path order, minus the reference's exclusions."""
    if not root.is_dir():
        raise TalkbankError(f"--from {root}: not a folder")
    found = sorted(root.rglob("*.cha"))
    if not found:
        raise TalkbankError(f"--from {root}: no .cha files in it or its subfolders (CHAT transcripts, as in the "
                            "TalkBank corpus zips)")
    named = [(p, p.relative_to(root).as_posix()) for p in found]
    kept = [(p, n) for p, n in named if not EXCLUDE_RE.search(n)]
    if len(kept) < len(named):
        log.info("excluded %d file(s) matching %s", len(named) - len(kept), EXCLUDE_RE.pattern)
    return kept


def download(corpora: list[str], cache: Path, base_url: str, timeout_s: float) -> Path:
    """Fetch and unpack each corpus zip into ``cache/<key>/`` (kept for the next run)."""
    for key in corpora:
        target = cache / key
        if target.is_dir() and any(target.rglob("*.cha")):
            log.info("%s: using %s", key, target)
            continue
        url = f"{base_url.rstrip('/')}/{CORPORA[key]}"
        log.info("%s: downloading %s", key, url)
        data = _fetch(url, timeout_s)
        staging = cache / f".{key}.part"  # renamed into place only once fully unpacked
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for member in zf.infolist():
                    member_path = Path(member.filename)
                    if member_path.suffix == ".cha" and ".." not in member_path.parts and not member_path.is_absolute():
                        (staging / member_path).parent.mkdir(parents=True, exist_ok=True)
                        (staging / member_path).write_bytes(zf.read(member))
        except zipfile.BadZipFile as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise TalkbankError(f"{url}: not a zip file ({e}); {_by_hand(url)}") from e
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return cache


def _fetch(url: str, timeout_s: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        why = {401: "asks for a login", 403: "refuses access (TalkBank may ask for a login)", 404: "was not found"}
        raise TalkbankError(f"{url} {why.get(e.code, f'answered HTTP {e.code}')}; {_by_hand(url)}") from e
    except OSError as e:  # URLError, timeouts, refused connections
        reason = getattr(e, "reason", e)
        raise TalkbankError(f"{url} could not be reached ({reason}); {_by_hand(url)}") from e


def _by_hand(url: str) -> str:
    return f"download {url} yourself (log in at talkbank.org if asked), unzip it and pass the folder with --from DIR"


# ---- utterances (spec §13.6 steps 2–4) --------------------------------------------------------------------


def utterances(dialogue: Dialogue, rng: random.Random | None, pauses_from_bullets: bool,
               pause_token: bool = False) -> list[str]:
    """Cleaned, tagged utterances (``S1: …``), blanks dropped, each cut to 150 words."""
    turns = bullets_to_pauses(list(dialogue.turns)) if pauses_from_bullets else dialogue.turns
    out = []
    for turn in turns:
        text = clean_line(turn.text, rng, pause_token)
        if text in BLANK_UTTERANCES:
            continue
        words = f"{turn.tag}: {text}".split()
        if len(words) > MAX_UTTERANCE_WORDS:
            words = words[:MAX_UTTERANCE_WORDS]
            words[-1] += "..."
        out.append(" ".join(words))
    return out


# ---- summaries (spec §13.7; off unless --summaries MODEL_ID) -----------------------------------

SUMMARY_DROP_RE = re.compile(r"\bi?[hx]+\b|\((?:\d+\.\d+|\.{1,3})\)|(?<!\d):")
TAG_SPLIT_RE = re.compile(r"(?=\bS\d: )")


def summarizer_input(body: str) -> str:
    """The window as the summariser reads it: no hhh/xxx, no pauses, one ``S<k>:`` line each."""
    out = []
    for utt in TAG_SPLIT_RE.split(body):
        tag, _, text = utt.strip().partition(": ")
        text = " ".join(SUMMARY_DROP_RE.sub("", text).split())
        if tag and text:
            out.append(f"{tag}: {text}")
    return "\n".join(out)


def load_summarizer(model_id: str):
    """A callable window body → summary, or TalkbankError saying why the model cannot be used."""
    try:
        from transformers import pipeline

        summarize = pipeline("summarization", model=model_id, device=-1)
    except Exception as e:  # transformers raises OSError, ValueError, ImportError, … for a bad id
        raise TalkbankError(f"--summaries {model_id}: cannot load a summarization model: {e}") from e
    summarize.tokenizer.truncation_side = "left"
    model_max = summarize.model.config.max_length or 0

    def run_one(body: str) -> str:
        text = summarizer_input(body)
        max_length = max(model_max, math.ceil(len(text.split()) / 5))
        return summarize(text, max_length=max_length, truncation=True)[0]["summary_text"]

    return run_one


# ---- pipeline and CLI --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    standardize_pauses: bool = False  # (.) → 0.2–0.6 s, (..) → 0.7–1.2 s; (...) stays
    pauses_from_bullets: bool = False  # media-bullet gaps ≥ 0.1 s → (x.y)
    seed: int = 42  # split shuffle and pause standardisation
    pause_token: bool = False  # <p> before every single-dot pause (the reference's --add-special-pause-token)


def build(files: list[tuple[Path, str]], opts: Options, summarize=None) -> tuple[dict[str, list[str]], int]:
    """(split → lines, files skipped). Every readable dialogue is windowed, then split by file."""
    rng = random.Random(opts.seed) if opts.standardize_pauses else None
    by_dialogue: dict[str, list[str]] = {}
    skipped = 0
    for path, name in files:
        try:
            dialogue = read_dialogue(path, name)
        except TalkbankError as e:
            log.warning("skipped %s", e)
            skipped += 1
            continue
        body = " ".join(utterances(dialogue, rng, opts.pauses_from_bullets, opts.pause_token))
        if not body:
            log.warning("skipped %s: no utterances left after cleaning", name)
            skipped += 1
            continue
        lines = []
        for words in splits.windows(body.split(), size=450, overlap=100):
            window = " ".join(words)
            lines.append(format_line(dialogue.identities, summarize(window) if summarize else "", window))
        by_dialogue[name] = lines
    if not by_dialogue:
        raise TalkbankError(f"no usable dialogues among {len(files)} file(s) ({skipped} skipped); nothing written")
    chosen = splits.split_dialogues(by_dialogue, opts.seed)
    return {part: [line for name in names for line in by_dialogue[name]] for part, names in chosen.items()}, skipped


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_dir", type=Path, metavar="DIR", help="a folder of .cha files instead of downloading")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where dataset_{train,dev,test}.txt go")
    parser.add_argument("--corpora", default="All", help=f"All or comma-separated keys of {', '.join(CORPORA)}")
    parser.add_argument("--standardize-pauses", action="store_true", help="(.) → 0.2–0.6 s, (..) → 0.7–1.2 s, seeded")
    parser.add_argument("--pauses-from-bullets", action="store_true", help="write media-bullet gaps ≥ 0.1 s as (x.y)")
    parser.add_argument("--add-special-pause-token", dest="pause_token", action="store_true",
                        help="write <p> before every single-dot pause such as (0.5) or (.), as the reference's option")
    parser.add_argument("--seed", type=int, default=42, help="split and pause seed (default 42)")
    parser.add_argument("--summaries", metavar="MODEL_ID", help="summarization model (hub id or folder); off by default")
    parser.add_argument("--base-url", default=BASE_URL, help=f"where the corpus zips live (default {BASE_URL})")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per-download network timeout in seconds")


def corpus_keys(text: str) -> list[str]:
    if text == "All":
        return list(CORPORA)
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CORPORA]
    if unknown or not keys:
        raise TalkbankError(f"--corpora: unknown {', '.join(unknown) or '(empty)'}; allowed: All or {', '.join(CORPORA)}")
    return keys


def run(args: argparse.Namespace) -> int:
    try:
        if args.from_dir is not None:
            root = args.from_dir
        else:
            root = download(corpus_keys(args.corpora), args.out / "raw", args.base_url, args.timeout_s)
        files = chat_files(root)
        if args.from_dir is None:
            keys = corpus_keys(args.corpora)
            files = [(p, n) for p, n in files if n.split("/", 1)[0] in keys]
        summarize = load_summarizer(args.summaries) if args.summaries else None
        opts = Options(args.standardize_pauses, args.pauses_from_bullets, args.seed, args.pause_token)
        parts, skipped = build(files, opts, summarize)
        paths = splits.write_splits(args.out, parts)
    except (TalkbankError, splits.EmptyDatasetError) as e:
        print(f"rtchat data talkbank: error: {e}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{part} {len(lines)}" for part, lines in parts.items())
    print(f"{len(files) - skipped} dialogue(s) read, {skipped} skipped; lines: {counts}; wrote {paths['train'].parent}")
    return 0
