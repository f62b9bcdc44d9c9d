"""Worker functions for tests/test_eval_workers.py, in a module of their own so that a spawned
worker imports only this (not the test module and its model helpers)."""

from __future__ import annotations

import os


def init(device, tag):
    os.environ["RTCHAT_TEST_TAG"] = f"{tag}:{device}"


def task(payload):
    if payload == "die":
        os._exit(3)  # as a worker killed mid-run
    return (payload * 2, os.environ["RTCHAT_TEST_TAG"])


def init_fails(device, tag):
    raise ValueError(f"cannot load model {tag!r}")
