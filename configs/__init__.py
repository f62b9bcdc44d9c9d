"""Configuration: profiles (``cpu.yaml``, ``gpu.yaml``…) plus dotted command-line overrides.

``load("cpu", ["agent.interval_s=0.5"])`` reads the profile (a name of a packaged profile or a
path to a YAML file), applies the overrides and returns a validated, frozen ``Config``. Unknown
keys, wrong types and bad values raise ``ConfigError`` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import typing
from pathlib import Path

import yaml

from rtchat.bus.schema import SchemaError, converter, to_plain
from rtchat.configs.schema import Config

PROFILE_DIR = Path(__file__).resolve().parent
DEFAULT_PROFILE = "cpu"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the allowed values."""


def profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def profile_path(profile: str) -> Path:
    if profile.endswith((".yaml", ".yml")) or os.sep in profile:
        path = Path(profile)
        if not path.is_file():
            raise ConfigError(f"config file {profile!r} does not exist")
        return path
    path = PROFILE_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile {profile!r}; allowed: {', '.join(profiles())} or a path to a .yaml file")
    return path


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def _annotation(parts: list[str]):
    """The declared type of a dotted key, or None when the key is unknown (reported later)."""
    tp = Config
    for part in parts:
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _is_text(tp) -> bool:
    if tp is str:
        return True
    return typing.get_origin(tp) is typing.Literal and all(isinstance(a, str) for a in typing.get_args(tp))


def apply_override(data: dict, override: str) -> None:
    """Apply one ``a.b.c=value`` override in place. Text fields take the value as written
    (``tts.voice=16`` is the string "16"); others parse it as YAML (numbers, lists, true)."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {override!r}: expected KEY=VALUE with a dotted key, e.g. agent.interval_s=0.5")
    if _is_text(_annotation(key.split("."))):
        value = raw
    else:
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, not a section")
        node = child
    node[parts[-1]] = value


def load(profile: str = DEFAULT_PROFILE, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    data = _read_yaml(profile_path(profile))
    for override in overrides:
        apply_override(data, override)
    return from_dict(data)


def from_dict(data: dict) -> Config:
    try:
        return converter(Config)(data, "")
    except SchemaError as exc:
        raise ConfigError(str(exc)) from None


def to_dict(cfg: Config) -> dict:
    return to_plain(cfg)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def write_atomic(path: Path, text: str) -> None:
    """Write a text file so that a reader sees the old or the new content, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
