"""Bad inputs raise ValueError carrying the binary's stderr line (field path and value),
never a crash: a panic would surface as pyo3_runtime.PanicException, a BaseException that
`pytest.raises(ValueError)` does not catch, so it would fail these tests."""

from __future__ import annotations

import copy
import json
import math

import pytest
from conftest import CONFIG, STATE, cli_error

import predhead


def with_(path: str, value):
    """CONFIG with the dotted `path` set to `value` (deleted when value is DELETE)."""
    c = copy.deepcopy(CONFIG)
    *tables, key = path.split(".")
    t = c
    for name in tables:
        t = t.setdefault(name, {})
    if value is DELETE:
        del t[key]
    else:
        t[key] = value
    return c


DELETE = object()

BAD_CONFIGS = [
    ("setting.dim", 2),
    ("setting.dim", -6),
    ("setting.dim", 2**64),
    ("setting.dim", 6.5),
    ("setting.patches", 5),
    ("setting.feature_patches", 9),
    ("setting.alpha", [1.0, 4.0]),
    ("setting.alpha", [4.0]),
    ("setting.alpha", [math.inf, 1.0]),
    ("setting.noise_std", -1.0),
    ("setting.noise_std", "one"),
    ("setting.neurons", 0),
    ("setting.neurons", DELETE),
    ("setting.extra", 1),
    ("model.head", "triangular"),
    ("model.normalization", 3),
    ("training.lr", 0.0),
    ("training.lr", math.nan),
    ("training.steps", -1),
    ("phases.t1", -0.5),
    ("model.stop_gradient", "yes"),
    ("nonsense.key", 1),
]


@pytest.mark.parametrize("path,value", BAD_CONFIGS, ids=[f"{p}={v!r}" for p, v in BAD_CONFIGS])
def test_bad_config_raises_the_cli_line(tmp_path, path, value):
    config = with_(path, value)
    with pytest.raises(ValueError) as info:
        predhead.Config(config)
    message = str(info.value)
    # The field is named: the table, and the key unless the whole table is refused.
    table = path.split(".")[0]
    assert message.startswith(table), message
    # The binary, reading the same TOML text, prints the same line.
    try:
        text = predhead._native.toml_from_dict(config)
    except ValueError:
        assert "TOML" in message  # no TOML form (2**64): nothing the binary could read
        return
    f = tmp_path / "c.toml"
    f.write_text(text)
    state = tmp_path / "s.json"
    state.write_text(json.dumps(STATE))
    assert message == cli_error("eval", "--config", f, "--state", state)


def test_a_wrong_field_path_would_be_caught():
    # Negative control: the check above compares the whole line, so a message naming
    # another field (or another value) fails it.
    with pytest.raises(ValueError) as info:
        predhead.Config(with_("setting.dim", 2))
    message = str(info.value)
    assert message.startswith("setting.dim")
    assert message != message.replace("setting.dim", "setting.patches")
    assert "2" in message


BAD_STATES = [
    {"w": [[1.0] * 6], "e": STATE["e"]},  # one row missing
    {"w": [row[:5] for row in STATE["w"]], "e": STATE["e"]},  # short rows
    {"w": STATE["w"], "e": [[1.0, 0.1], [0.05, 2.0]]},  # diagonal not 1 with identity-offdiag
    {"w": STATE["w"]},  # e missing
    {"w": STATE["w"], "e": STATE["e"], "x": 1},  # unknown key
    {"w": [[1e300] * 6, [1e300] * 6], "e": STATE["e"]},  # overflow
    {"w": [["a"] * 6, [0.0] * 6], "e": STATE["e"]},
    {"w": [[0.0] * 6, [0.0] * 6], "e": STATE["e"]},  # zero variance
]


@pytest.mark.parametrize("state", BAD_STATES)
def test_bad_state_raises_the_cli_line(tmp_path, state):
    f = tmp_path / "c.toml"
    f.write_text(predhead.Config(CONFIG).toml)
    s = tmp_path / "s.json"
    s.write_text(json.dumps(state))
    expected = cli_error("eval", "--config", f, "--state", s)
    assert expected.startswith("state")
    with pytest.raises(ValueError) as info:
        predhead.eval(CONFIG, s)
    assert str(info.value) == expected
    # As a dict, it is written to another file: the line is the same but for that name.
    with pytest.raises(ValueError) as info:
        predhead.eval(CONFIG, state)
    assert str(info.value).split(":")[0] == expected.split(":")[0]


BAD_OPTIONS = [
    ("flow", {"rtol": "x"}),
    ("flow", {"rtol": -1.0}),
    ("flow", {"method": "euler"}),
    ("flow", {"max_refinements": -3}),
    ("flow", {"no_such_option": 1}),
    ("sgd", {"engine": "quantum"}),
    ("sgd", {"record_every": 0}),
    ("sgd", {"seed": -1}),
    ("flow", {"seed": 2**64}),
]


@pytest.mark.parametrize("command,options", BAD_OPTIONS, ids=[f"{c}-{o}" for c, o in BAD_OPTIONS])
def test_bad_option_raises_the_cli_line(files, command, options):
    config, _ = files
    run = getattr(predhead, command)
    with pytest.raises(ValueError) as info:
        run(config, **options)
    argv = [command, "--config", config, "--json", "--out", "/dev/null"]
    for k, v in options.items():
        argv += ["--" + k.replace("_", "-"), repr(v) if isinstance(v, float) else str(v)]
    assert str(info.value) == cli_error(*argv)
    assert str(info.value).startswith("--")


def test_state_and_seed_together(files):
    config, state = files
    with pytest.raises(ValueError, match="--seed|--state"):
        predhead.flow(config, seed=1, state=state)


def test_bad_batch(tmp_path):
    with pytest.raises(ValueError) as info:
        predhead.eval(CONFIG, STATE, batch={"x1": [[[0.0] * 6] * 4], "x2": [[[0.0] * 5] * 4]})
    assert str(info.value).startswith("batch")
    with pytest.raises(ValueError, match="precision"):
        predhead.eval(CONFIG, STATE, precision=10)


def test_bad_paths(tmp_path):
    with pytest.raises(ValueError) as info:
        predhead.Config(tmp_path / "missing.toml")
    assert str(info.value) == cli_error(
        "eval", "--config", tmp_path / "missing.toml", "--state", "x"
    )
    with pytest.raises(ValueError):
        predhead.sweep(tmp_path / "missing.toml")
    with pytest.raises(ValueError):
        predhead.report("nothing", dir=tmp_path)


def test_non_python_values():
    with pytest.raises(ValueError, match="None"):
        predhead.Config(with_("setting.dim", None))
    with pytest.raises(TypeError):
        predhead.Config(3)
    with pytest.raises(ValueError):
        predhead.Config.from_toml("[setting\ndim = ")
