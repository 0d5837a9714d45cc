"""Fuzz-style inputs: mutated config and state files give, in Python, exactly what the binary
gives (its stdout, or ValueError with its stderr line), and never another exception: a
panic crossing into Python would be pyo3_runtime.PanicException, caught here as a
BaseException and reported."""

from __future__ import annotations

import json
import random

from conftest import CONFIG, STATE, run_cli

import predhead

# Replacements that make typical bad inputs: signs, huge and non-finite numbers, broken
# syntax, wrong types, deleted and doubled characters.
PIECES = [
    "-",
    "0",
    "1e400",
    "nan",
    "inf",
    "9999999999999999999999",
    '"',
    "[",
    "]",
    ",",
    "{",
    "}",
    "=",
    "true",
    "\n",
    "",
    "é",
    "\x00",
]


def mutate(text: str, rng: random.Random, mild: bool) -> str:
    if mild:  # one digit changed: mostly still valid, with other numbers
        digits = [k for k, ch in enumerate(text) if ch.isdigit()]
        i = rng.choice(digits)
        return text[:i] + str(rng.randrange(10)) + text[i + 1 :]
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(text))
        j = min(len(text), i + rng.randint(0, 4))
        text = text[:i] + rng.choice(PIECES) + text[j:]
    return text


def outcome_in_python(config, state) -> tuple:
    try:
        return ("ok", predhead.eval(str(config), str(state)).json)
    except ValueError as e:
        return ("error", str(e))
    except BaseException as e:  # noqa: BLE001 - the point of the test
        return ("crash", f"{type(e).__module__}.{type(e).__name__}: {e}")


def outcome_in_cli(config, state) -> tuple:
    p = run_cli("eval", "--config", config, "--state", state)
    if p.returncode == 0:
        return ("ok", p.stdout)
    assert p.returncode == 2 and p.stdout == "" and p.stderr.count("\n") == 1, (
        p.returncode,
        p.stderr,
    )
    return ("error", p.stderr[len("predhead: ") :].rstrip("\n"))


def test_mutated_inputs_behave_as_in_the_binary(tmp_path):
    rng = random.Random(25)  # fixed: the same 150 cases every run
    config_text = predhead.Config(CONFIG).toml
    state_text = json.dumps(STATE)
    kinds = {"ok": 0, "error": 0}
    for case in range(150):
        c, s = tmp_path / f"c{case}.toml", tmp_path / f"s{case}.json"
        mutate_config, mild = case % 2 == 0, case % 3 == 0
        c.write_bytes(
            (mutate(config_text, rng, mild) if mutate_config else config_text).encode(
                "utf-8", "surrogatepass"
            )
        )
        s.write_bytes(
            (state_text if mutate_config else mutate(state_text, rng, mild)).encode(
                "utf-8", "surrogatepass"
            )
        )
        py = outcome_in_python(c, s)
        assert py[0] != "crash", (case, py)
        assert py == outcome_in_cli(c, s), case
        kinds[py[0]] += 1
    # The cases exercise both paths (else the comparison would prove little).
    print(kinds)
    assert kinds["error"] >= 50 and kinds["ok"] >= 20, kinds


def test_a_crash_would_be_reported(monkeypatch, tmp_path):
    # Negative control: an exception that is not a ValueError (here a BaseException, like
    # PanicException) is classified as a crash, which the test above rejects.
    class FakePanic(BaseException):
        pass

    def panicking(*args, **kwargs):
        raise FakePanic("explicit panic")

    monkeypatch.setattr(predhead, "eval", panicking)
    kind, text = outcome_in_python(tmp_path / "c.toml", tmp_path / "s.json")
    assert kind == "crash" and "FakePanic" in text
