"""Configuration: profiles (``cpu.yaml``, ``gpu.yaml``…) plus dotted command-line overrides.

``load("cpu", ["agent.interval_s=0.5"])`` reads the profile (a name of a packaged profile or a
path to a YAML file), applies the overrides and returns a validated, frozen ``Config``. Unknown
keys, wrong types and bad values raise ``ConfigError`` naming the key and what is allowed, and
for a key the file sets, the file and the key's line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path

import yaml

from rtchat.common.schema import SchemaError, converter, to_plain
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


def _read_yaml(path: Path) -> tuple[dict, dict[tuple, int]]:
    """The file's mapping, and the line (1-based) of every key and list item in it, by key path
    (``("agent", "interval_s")``, ``("launcher", "nodes", 1)``) — PyYAML's node marks."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as a YAML text file: {exc}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    lines: dict[tuple, int] = {}
    _node_lines(node, (), lines)
    return data, lines


def _node_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                lines[(*path, key.value)] = key.start_mark.line + 1
                _node_lines(value, (*path, key.value), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _node_lines(item, (*path, i), lines)


ERROR_KEY_RE = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")  # the key a ConfigError names first


def _key_path(key: str) -> tuple:
    """``launcher.nodes[1]`` → ("launcher", "nodes", 1)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"\.|\[|\]", key) if p)


def _locate(message: str, path: Path, lines: dict[tuple, int], overridden: list[tuple]) -> str:
    """Prefix an error about a key the file sets with the file and the key's line. A key set (or
    inside a section set) on the command line has no line: the message stays as it is."""
    match = ERROR_KEY_RE.match(message)
    if match is None:
        return message
    key = _key_path(match.group(1))
    if any(key[: len(o)] == o for o in overridden):
        return message
    for n in range(len(key), 0, -1):  # the key's own line, else its nearest section's
        if key[:n] in lines:
            return f"{path}, line {lines[key[:n]]}: {message}"
    return message


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
    path = profile_path(profile)
    data, lines = _read_yaml(path)
    for override in overrides:
        apply_override(data, override)
    try:
        return from_dict(data)
    except ConfigError as exc:
        overridden = [_key_path(o.partition("=")[0].strip()) for o in overrides]
        raise ConfigError(_locate(str(exc), path, lines, overridden)) from None


def from_dict(data: dict) -> Config:
    try:
        return converter(Config)(data, "")
    except SchemaError as exc:
        raise ConfigError(str(exc)) from None


def to_dict(cfg: Config) -> dict:
    return to_plain(cfg)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
