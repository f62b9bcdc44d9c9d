"""Configuration: profiles, dotted overrides, errors that name the key and the allowed values,
device placement, and the resolved config surviving a dump → load round trip."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest
import yaml

from rtchat import configs
from rtchat.common.files import write_atomic
from rtchat.configs import ConfigError, dump, load
from rtchat.configs import cli as config_cli
from rtchat.configs.devices import place
from rtchat.configs.schema import Config

# ---------------------------------------------------------------- profiles and overrides


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_packaged_profiles_load(profile):
    cfg = load(profile)
    assert isinstance(cfg, Config)
    assert profile in configs.profiles()


def test_cpu_profile_runs_everything_on_the_cpu():
    cfg = load("cpu")
    assert (cfg.agent.device, cfg.asr.device, cfg.tts.device) == ("cpu", "cpu", "cpu")


def test_gpu_profile_places_models_automatically():
    cfg = load("gpu")
    assert (cfg.agent.device, cfg.asr.device, cfg.tts.device) == ("auto", "auto", "auto")
    assert cfg.agent.dtype == "float16"


def test_profile_values_override_the_schema_defaults():
    assert load("cpu").tts.model == "embedded:joe"
    assert load("gpu").tts.backend == "fastspeech2"


def test_scalar_override_applies():
    assert load("cpu").agent.interval_s != 0.5
    assert load("cpu", ["agent.interval_s=0.5"]).agent.interval_s == 0.5


def test_integer_given_for_a_float_becomes_a_float():
    value = load("cpu", ["agent.interval_s=1"]).agent.interval_s
    assert value == 1.0 and type(value) is float


def test_list_override_replaces_the_list():
    assert load("cpu", ["launcher.nodes=[logger]"]).launcher.nodes == ("logger",)
    assert load("cpu", ["launcher.nodes=[]"]).launcher.nodes == ()


def test_nested_section_override_applies():
    cfg = load("cpu", ["bus.curve.client_name=alice", "bus.hwm=5000"])
    assert cfg.bus.curve.client_name == "alice"
    assert cfg.bus.hwm == 5000


def test_later_override_wins():
    assert load("cpu", ["agent.interval_s=0.5", "agent.interval_s=0.25"]).agent.interval_s == 0.25


def test_empty_override_value_is_the_empty_string():
    assert load("cpu", ["tts.voice="]).tts.voice == ""


def test_overrides_do_not_leak_into_the_next_load():
    load("cpu", ["agent.interval_s=0.5"])
    assert load("cpu").agent.interval_s == 0.8


def test_profile_may_be_a_path_to_a_yaml_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("agent:\n  interval_s: 0.3\n  device: cpu\n")
    cfg = load(str(path))
    assert cfg.agent.interval_s == 0.3
    assert cfg.asr == Config().asr  # sections the file leaves out keep their defaults


def test_empty_yaml_file_gives_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load(str(path)) == Config()


# ---------------------------------------------------------------- errors name key and allowed values


def config_error(profile: str = "cpu", overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load(profile, list(overrides))
    return str(info.value)


def test_unknown_key_names_the_key_and_the_allowed_keys():
    message = config_error(overrides=("agent.nope=1",))
    assert message.startswith("agent.nope: unknown key")
    assert "allowed: model, adapter, device, dtype, threads" in message and "interval_s" in message


def test_unknown_nested_key_names_its_full_path():
    message = config_error(overrides=("bus.curve.nope=1",))
    assert message.startswith("bus.curve.nope: unknown key")
    assert "keys_dir" in message and "client_name" in message


def test_unknown_section_names_the_section_and_the_allowed_sections():
    message = config_error(overrides=("nope.x=1",))
    assert message.startswith("nope: unknown key")
    for section in ("run", "bus", "launcher", "logger", "agent", "asr", "tts"):
        assert section in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("agent.interval_s=fast", "agent.interval_s: expected a finite number, got str 'fast'"),
        ("agent.interval_s=null", "agent.interval_s: expected a finite number"),
        ("bus.hwm=1.5", "bus.hwm: expected an integer, got float 1.5"),
        ("bus.hwm=true", "bus.hwm: expected an integer, got bool True"),
        ("launcher.nodes=logger", "launcher.nodes: expected a list, got str 'logger'"),
        ("agent=1", "agent: expected a mapping for AgentConfig, got int 1"),
    ],
)
def test_wrong_type_names_the_key_and_the_expected_type(override, expected):
    assert expected in config_error(overrides=(override,))


def test_bad_literal_choice_lists_the_choices():
    message = config_error(overrides=("agent.dtype=float64",))
    assert message == "agent.dtype: got str 'float64'; allowed: 'auto', 'float32', 'float16', 'bfloat16', 'int8', 'int4'"


def test_bad_ui_choice_lists_the_front_ends():
    assert "allowed: 'none', 'terminal', 'gradio'" in config_error(overrides=("launcher.ui=web",))


@pytest.mark.parametrize("device", ["gpu0", "cuda", "cuda:x", "CPU", "mps"])
def test_bad_device_string_lists_the_device_forms(device):
    message = config_error(overrides=(f"asr.device={device}",))
    assert message == f"asr.device: got {device!r}; allowed: cpu, auto, cuda:N"


@pytest.mark.parametrize(
    "override, key, allowed",
    [
        ("agent.interval_s=-1", "agent.interval_s", "a number > 0"),
        ("agent.interval_s=0", "agent.interval_s", "a number > 0"),
        ("agent.trim_to_words=-5", "agent.trim_to_words", "an integer >= 0"),
        ("bus.hwm=0", "bus.hwm", "an integer > 0"),
        ("bus.pub_endpoint=udp://x:1", "bus.pub_endpoint", "tcp://HOST:PORT"),
        ("launcher.nodes=[logger, nope]", "launcher.nodes", "logger, audio, asr, agent, tts"),
        ("launcher.nodes=[logger, logger]", "launcher.nodes", "listed twice"),
        ("logger.flush_interval_ms=0", "logger.flush_interval_ms", "an integer > 0"),
    ],
)
def test_bad_value_names_the_key_and_what_is_allowed(override, key, allowed):
    message = config_error(overrides=(override,))
    assert message.startswith(f"{key}: ")
    assert allowed in message


@pytest.mark.parametrize("override", ["agentinterval", "agent.interval_s", "=1", "agent..x=1", ".x=1", "agent.=1"])
def test_malformed_override_shows_the_expected_form(override):
    message = config_error(overrides=(override,))
    assert message == f"override {override!r}: expected KEY=VALUE with a dotted key, e.g. agent.interval_s=0.5"


def test_override_below_a_value_says_it_is_not_a_section():
    assert config_error(overrides=("agent.interval_s.x=1",)) == "agent.interval_s: is a value, not a section"


def test_unknown_profile_lists_the_profiles():
    message = config_error("nope")
    assert message.startswith("unknown profile 'nope'; allowed: ")
    assert "cpu" in message and "gpu" in message and ".yaml" in message


def test_missing_config_file_is_named(tmp_path):
    path = tmp_path / "absent.yaml"
    assert config_error(str(path)) == f"config file {str(path)!r} does not exist"


def test_invalid_yaml_file_is_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("agent: [1,\n")
    message = config_error(str(path))
    assert message.startswith(f"{path}: not valid YAML")


def test_yaml_file_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- agent\n- asr\n")
    assert config_error(str(path)) == f"{path}: expected a mapping of sections at the top level"


def test_unknown_key_in_a_yaml_file_is_named(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("agent:\n  intervl_s: 0.5\n")
    assert config_error(str(path)).startswith(f"{path}, line 2: agent.intervl_s: unknown key; allowed: ")


# ---------------------------------------------------------------- the rtchat config command


def run_config_cli(*argv: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rtchat.cli", "config", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_command_exits_2_without_traceback_on_a_bad_key(tmp_path):
    proc = run_config_cli("agent.nope=1", tmp_path=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2
    assert "agent.nope: unknown key" in proc.stderr
    assert proc.stdout == ""


def test_config_command_prints_the_resolved_config(tmp_path):
    proc = run_config_cli("--config", "gpu", "agent.interval_s=0.5", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert configs.from_dict(yaml.safe_load(proc.stdout)) == load("gpu", ["agent.interval_s=0.5"])


def config_cli_run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    config_cli.configure(parser)
    return config_cli.run(parser.parse_args(argv))


def test_config_cli_module_reports_a_bad_key_with_exit_code_2(capsys):
    assert config_cli_run(["agent.nope=1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("rtchat config: agent.nope: unknown key; allowed: ")


def test_config_cli_module_prints_yaml_that_loads_back(capsys):
    assert config_cli_run(["launcher.ui=terminal"]) == 0
    out, _ = capsys.readouterr()
    assert configs.from_dict(yaml.safe_load(out)).launcher.ui == "terminal"


# ---------------------------------------------------------------- device placement


@pytest.mark.parametrize(
    "n_gpus, expected",
    [
        (0, {"tts": "cpu", "asr": "cpu", "agent": "cpu"}),
        (1, {"tts": "cuda:0", "asr": "cuda:0", "agent": "cuda:0"}),
        (2, {"tts": "cuda:0", "asr": "cuda:0", "agent": "cuda:1"}),
        (3, {"tts": "cuda:0", "asr": "cuda:1", "agent": "cuda:2"}),
        (4, {"tts": "cuda:0", "asr": "cuda:1", "agent": "cuda:2"}),
    ],
)
def test_auto_placement_follows_the_reference_table(n_gpus, expected):
    assert place(load("gpu"), n_gpus) == expected


@pytest.mark.parametrize("n_gpus", [0, 1, 4])
def test_cpu_profile_stays_on_the_cpu_whatever_the_gpus(n_gpus):
    assert place(load("cpu"), n_gpus) == {"tts": "cpu", "asr": "cpu", "agent": "cpu"}


def test_explicit_devices_are_kept_and_mixed_with_auto():
    cfg = load("gpu", ["agent.device=cuda:1", "tts.device=cpu"])
    assert place(cfg, 2) == {"tts": "cpu", "asr": "cuda:0", "agent": "cuda:1"}


def test_explicit_device_beyond_the_visible_gpus_names_it_and_what_exists():
    cfg = load("gpu", ["agent.device=cuda:1"])
    with pytest.raises(ConfigError) as info:
        place(cfg, 1)
    message = str(info.value)
    assert message.startswith("agent.device: cuda:1 does not exist")
    assert "1 CUDA device(s) visible" in message
    assert message.endswith("allowed: cpu, auto, cuda:0")


def test_explicit_gpu_on_a_machine_without_gpus_offers_only_the_cpu():
    with pytest.raises(ConfigError, match=r"tts\.device: cuda:0 does not exist.*allowed: cpu, auto$"):
        place(load("gpu", ["tts.device=cuda:0"]), 0)


# ---------------------------------------------------------------- saving the resolved config


@pytest.mark.parametrize(
    "profile, overrides",
    [
        ("cpu", ()),
        ("gpu", ()),
        ("cpu", ("agent.interval_s=0.5", "launcher.nodes=[]", "bus.curve.keys_dir=/keys", "run.log_level=debug")),
    ],
)
def test_dumped_config_loads_back_identical(tmp_path, profile, overrides):
    cfg = load(profile, list(overrides))
    path = tmp_path / "run" / "config.yaml"
    write_atomic(path, dump(cfg))
    assert load(str(path)) == cfg


@pytest.mark.parametrize("text", ["123", "null", "yes", "~", "1e3", "0x10", "a: b", "- x", "", "'quoted'", "ünï"])
def test_strings_that_look_like_other_yaml_survive_the_round_trip(tmp_path, text):
    cfg = load("cpu")
    cfg = dataclasses.replace(
        cfg, run=dataclasses.replace(cfg.run, id=text), tts=dataclasses.replace(cfg.tts, voice=text)
    )
    path = tmp_path / "config.yaml"
    write_atomic(path, dump(cfg))
    assert load(str(path)) == cfg


def test_dump_writes_every_section():
    assert set(yaml.safe_load(dump(load("cpu")))) == {f.name for f in dataclasses.fields(Config)}


def test_text_fields_take_override_values_as_written():
    cfg = load("cpu", ["tts.voice=16", "run.id=123", "agent.model=null"])
    assert (cfg.tts.voice, cfg.run.id, cfg.agent.model) == ("16", "123", "null")


def test_non_finite_numbers_are_refused():
    with pytest.raises(ConfigError, match="agent.interval_s: expected a finite number"):
        load("cpu", ["agent.interval_s=.inf"])
