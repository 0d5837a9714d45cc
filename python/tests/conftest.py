"""Shared fixtures of the Python suite: the CLI binary to compare with, and small inputs.

The binary is ``$PREDHEAD_BIN``, else ``$CARGO_TARGET_DIR/release/predhead``, else
``target/release/predhead`` at the repository root (built by ``cargo test --release`` or
``cargo build --release``). A missing binary fails the comparisons (it does not skip them).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CONFIG = {
    "setting": {
        "dim": 6,
        "patches": 4,
        "feature_patches": 2,
        "alpha": [4.0, 1.0],
        "noise_std": 1.0,
        "neurons": 2,
    },
    "model": {"head": "identity-offdiag", "normalization": "batchnorm", "stop_gradient": True},
    "training": {"lr": 0.01, "lr_head": 0.001, "batch": 64, "steps": 300, "horizon": 3000.0},
}

STATE = {
    "w": [[0.9, 0.2, 0.1, -0.3, 0.05, 0.3], [0.1, 0.7, -0.2, 0.2, 0.4, -0.1]],
    "e": [[1.0, 0.1], [0.05, 1.0]],
}


def binary() -> Path:
    if "PREDHEAD_BIN" in os.environ:
        return Path(os.environ["PREDHEAD_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "predhead"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Runs the binary; stdout and stderr as text."""
    exe = binary()
    assert exe.exists(), (
        f"{exe} is missing: run `cargo build --release` first (or set PREDHEAD_BIN)"
    )
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, check=False)


def cli_stdout(*args: str) -> str:
    p = run_cli(*args)
    assert p.returncode == 0, p.stderr
    return p.stdout


def cli_error(*args: str) -> str:
    """The binary's one stderr line without its ``predhead: `` prefix (exit status 2,
    nothing on stdout)."""
    p = run_cli(*args)
    assert p.returncode == 2 and p.stdout == "", (p.returncode, p.stdout)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("predhead: "), p.stderr
    return lines[0][len("predhead: ") :]


def assert_same_json(python_text: str, cli_text: str) -> None:
    """Bit-identical output: the same bytes, and (for a readable failure) the same parsed
    value with every float compared by its bits."""
    a, b = json.loads(python_text), json.loads(cli_text)
    assert json.dumps(a) == json.dumps(b), "parsed values differ"
    assert python_text == cli_text, "bytes differ"


@pytest.fixture
def files(tmp_path: Path):
    """The config and state written as files, for the binary."""
    import predhead

    config = tmp_path / "config.toml"
    config.write_text(predhead.Config(CONFIG).toml)
    state = tmp_path / "state.json"
    state.write_text(json.dumps(STATE))
    return config, state
