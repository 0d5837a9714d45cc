"""No progress bar in Python off a terminal (a notebook kernel, a pipe): the library draws
one only when stderr is a terminal, as the binary does."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from test_identical import SPEC

SCRIPT = """
import sys, predhead
from conftest import CONFIG
predhead.flow(CONFIG, seed=1)
predhead.sgd(CONFIG, seed=1)
predhead.sweep(sys.argv[1], results=sys.argv[2])
print("done")
"""


def run(tmp_path, stderr):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(spec), str(tmp_path / "r.jsonl")],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        timeout=300,
        check=True,
    )


def test_quiet_off_a_terminal(tmp_path):
    p = run(tmp_path, subprocess.PIPE)
    assert p.stdout == b"done\n"
    assert p.stderr == b""


def test_a_terminal_gets_the_bar(tmp_path):
    # Negative control: the same script with stderr on a pseudo-terminal draws on it.
    master, slave = pty.openpty()
    try:
        run(tmp_path, slave)
        os.close(slave)
        drawn = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(master)
    assert drawn != b""
