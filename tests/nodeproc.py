"""Ending a node started as a real process in a test: ``stop`` asks it to shut down and checks it
exits 0; ``reap`` (in ``finally``) closes the probe, kills what is left and prints the node's
output when it failed. Import as ``from nodeproc import reap, stop``."""

from __future__ import annotations

import subprocess

from rtchat.bus.events import Shutdown


def stop(probe, proc: subprocess.Popen, timeout_s: float = 20) -> None:
    probe.publish(Shutdown(reason="test"))
    assert proc.wait(timeout=timeout_s) == 0


def reap(probe, proc: subprocess.Popen) -> None:
    probe.close()
    if proc.poll() is None:
        proc.kill()
    out = proc.communicate()[0]
    if proc.returncode:
        print(out)
