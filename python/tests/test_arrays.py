"""Arrays have the documented shapes and dtypes; the GIL is released during a run; the
example script runs top to bottom."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import CONFIG, ROOT, STATE

import predhead


def test_eval_arrays():
    r = predhead.eval(CONFIG, STATE)
    m, d = 2, 6
    assert r.arrays["grad_w"].shape == (m, d) and r.arrays["grad_w"].dtype == np.float64
    assert r.arrays["grad_e"].shape == (m, m) and r.arrays["grad_e"].dtype == np.float64
    assert r.arrays["grad_w"].tolist() == r.summary["grad_w"]


@pytest.mark.parametrize("run", [predhead.flow, predhead.sgd])
def test_trajectory_columns(run):
    r = run(CONFIG, seed=1)
    m = 2
    names = ["tau", "a_0", "a_1", "b_0", "b_1", "g_0_0", "g_0_1", "g_1_1"]
    names += [f"e_{j}_{k}" for j in range(m) for k in range(m)] + ["loss", "offdiag", "corr_0_1"]
    assert list(r.arrays) == names
    rows = len(r.arrays["tau"])
    assert rows > 10
    for name, column in r.arrays.items():
        assert column.dtype == np.float64 and column.shape == (rows,), name
    assert np.all(np.diff(r.arrays["tau"]) >= 0)
    try:
        import pandas
    except ImportError:
        assert r.trajectory is r.arrays
    else:
        assert isinstance(r.trajectory, pandas.DataFrame) and r.trajectory.shape == (
            rows,
            len(names),
        )
    assert run(CONFIG, seed=1, trajectory=False).trajectory is None


def ticks_while(call) -> int:
    """How many times this (main) thread runs a short Python loop while `call` runs in
    another thread: many if `call` releases the GIL, about none if it holds it."""
    done = threading.Event()
    worker = threading.Thread(target=lambda: (call(), done.set()))
    count = 0
    worker.start()
    time.sleep(0.05)  # let the worker enter the call
    while not done.is_set():
        count += 1
        time.sleep(0)  # a bytecode boundary: the GIL may be handed over here
    worker.join()
    return count


def test_the_gil_is_released_during_a_run():
    # A long SGD run (a few seconds): the main thread keeps running meanwhile.
    config = {**CONFIG, "training": {**CONFIG["training"], "steps": 20000, "batch": 256}}
    start = time.perf_counter()
    released = ticks_while(lambda: predhead.sgd(config, seed=0, trajectory=False))
    elapsed = time.perf_counter() - start
    assert elapsed > 0.3, "the run is too short to tell"
    assert released > 1000, released


def test_the_gil_check_can_fail():
    # Negative control: the builtin `sum` over a long range holds the GIL in C for its whole
    # duration, and the same count stays near zero (Python 3.11's switch interval is 5 ms:
    # a few hand-overs at most).
    n = 60_000_000
    held = ticks_while(lambda: sum(range(n)))
    assert held < 100, held


def test_notebook_runs_top_to_bottom(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "PREDHEAD_NOTEBOOK_OUT": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "notebook.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    for name in ("figure2_analog.png", "phase_times_vs_d.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
