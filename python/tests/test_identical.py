"""Every function gives the binary's output on the same inputs, byte for byte."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import CONFIG, ROOT, STATE, assert_same_json, cli_stdout

import predhead


def test_the_json_comparison_rejects_a_one_digit_change(files):
    # Negative control of assert_same_json: the binary's own line with one digit changed
    # (the last one that is not a 9), and a changed key order, are rejected.
    config, state = files
    text = cli_stdout("eval", "--config", config, "--state", state)
    i = max(k for k, c in enumerate(text) if c.isdigit() and c != "9")
    mutated = text[:i] + str(int(text[i]) + 1) + text[i + 1 :]
    with pytest.raises(AssertionError):
        assert_same_json(mutated, text)
    with pytest.raises(AssertionError):
        assert_same_json('{"b":1,"a":2}', '{"a":2,"b":1}')
    assert_same_json(text, text)


def test_eval_population(files):
    config, state = files
    r = predhead.eval(CONFIG, STATE)
    assert_same_json(r.json, cli_stdout("eval", "--config", config, "--state", state))
    # A config and a state given as paths, and numpy arrays, give the same bytes.
    r2 = predhead.eval(str(config), {"w": np.array(STATE["w"]), "e": np.array(STATE["e"])})
    assert r2.json == r.json


def test_eval_precision(files):
    config, state = files
    r = predhead.eval(CONFIG, STATE, precision=120)
    assert_same_json(
        r.json, cli_stdout("eval", "--config", config, "--state", state, "--precision", "120")
    )
    assert r.arrays["grad_w"].dtype.kind == "U"


def test_eval_batch(files, tmp_path):
    config, state = files
    rng = np.random.default_rng(5)
    batch = {"x1": rng.standard_normal((5, 4, 6)), "x2": rng.standard_normal((5, 4, 6))}
    path = tmp_path / "batch.json"
    path.write_text(json.dumps({k: v.tolist() for k, v in batch.items()}))
    r = predhead.eval(CONFIG, STATE, batch=batch)
    assert_same_json(
        r.json, cli_stdout("eval", "--config", config, "--state", state, "--batch", path)
    )


@pytest.mark.parametrize("start", ["seed", "state"])
def test_flow(files, start):
    config, state = files
    if start == "seed":
        r = predhead.flow(CONFIG, seed=3, rtol=1e-8)
        cli = cli_stdout("flow", "--config", config, "--seed", "3", "--rtol", "1e-8", "--json")
    else:
        r = predhead.flow(CONFIG, state=state, no_error_estimate=True, method="rosenbrock")
        cli = cli_stdout(
            "flow",
            "--config",
            config,
            "--state",
            state,
            "--json",
            "--no-error-estimate",
            "--method",
            "rosenbrock",
        )
        # A state given as a dict is written to a temporary STATE.json, which the key `init`
        # names: everything else is the same.
        d = predhead.flow(CONFIG, state=STATE, no_error_estimate=True, method="rosenbrock")
        assert d.summary["init"].startswith("state ") and d.summary["init"].endswith("state.json")
        assert {**d.summary, "init": None} == {**json.loads(cli), "init": None}
    assert_same_json(r.json, cli)
    for key in ("t1", "t2", "t3", "t_end", "strong_neuron", "offdiag_peak", "outcome", "rhs_evals"):
        assert key in r.summary


def test_flow_trajectory_is_the_cli_csv(files, tmp_path):
    config, _ = files
    out = tmp_path / "traj.csv"
    cli_stdout("flow", "--config", config, "--seed", "2", "--json", "--out", out)
    r = predhead.flow(CONFIG, seed=2)
    lines = out.read_text().splitlines()
    names = lines[0].split(",")
    assert list(r.arrays) == names
    rows = [line.split(",") for line in lines[1:]]
    for j, name in enumerate(names):
        expected = np.array([float(row[j]) if row[j] else np.nan for row in rows])
        got = r.arrays[name]
        assert got.tobytes() == expected.tobytes(), name


@pytest.mark.parametrize("engine", ["explicit", "reduced"])
def test_sgd(files, engine):
    config, state = files
    r = predhead.sgd(CONFIG, seed=4, engine=engine)
    assert_same_json(
        r.json, cli_stdout("sgd", "--config", config, "--seed", "4", "--engine", engine, "--json")
    )
    r = predhead.sgd(CONFIG, state=STATE, engine=engine, data_seed=9, stop_at_t_end=True)
    cli = cli_stdout(
        "sgd",
        "--config",
        config,
        "--state",
        state,
        "--engine",
        engine,
        "--data-seed",
        "9",
        "--stop-at-t-end",
        "--json",
    )
    assert_same_json(r.json, cli)


SPEC = """
seeds = 2
runner = "flow"
[axes]
dim = [50, 200]
head = ["identity-offdiag", "frozen"]
[base.setting]
dim = 50
patches = 4
feature_patches = 2
alpha = [4.0, 1.0]
noise_std = 1.0
neurons = 2
[base.model]
head = "identity-offdiag"
normalization = "batchnorm"
stop_gradient = true
"""


def sealed_body(line: str) -> dict:
    record = json.loads(line)
    del record["sha256"]
    return record


@pytest.mark.parametrize("shard", [None, (1, 3)])
def test_sweep(tmp_path, shard):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    extra = [] if shard is None else ["--shard", f"{shard[0]}/{shard[1]}"]
    cli = cli_stdout("sweep", spec, "--results", tmp_path / "cli.jsonl", *extra)
    r = predhead.sweep(spec, shard=shard, results=tmp_path / "py.jsonl")
    assert r.message == cli.replace("cli.jsonl", "py.jsonl")
    cli_lines = (tmp_path / "cli.jsonl").read_text().splitlines()
    assert (tmp_path / "py.jsonl").read_text().splitlines() == cli_lines
    assert r.records == [sealed_body(line) for line in cli_lines[1:]]
    assert len(r.records) == (8 if shard is None else 3)
    # Run again: the sweep resumes, nothing is run twice, the records are the same.
    again = predhead.sweep(spec, shard=shard, results=tmp_path / "py.jsonl")
    assert again.records == r.records


def test_report(tmp_path):
    for d in ("cli", "py"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "lemma51.toml").write_text((ROOT / "reports" / "lemma51.toml").read_text())
    cli_stdout("report", "--dir", tmp_path / "cli", "--only", "lemma51", "--quick")
    r = predhead.report("lemma51", dir=tmp_path / "py", quick=True)
    assert r.markdown == (tmp_path / "cli" / "quick" / "lemma51.md").read_text()
    assert r.message.startswith("lemma51: ")
