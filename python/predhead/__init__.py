"""predhead in Python: a thin layer over the Rust library (see docs/python.md).

Every function runs the very code the ``predhead`` binary runs (``predhead::cli::execute``)
on the same arguments, with the GIL released: the summaries are the binary's JSON, byte for
byte, and a bad input raises ``ValueError`` carrying the binary's stderr line (without its
``predhead: `` prefix), which names the field and the value. Inputs given as Python values
(a dict, numpy arrays) are written to a temporary directory as the files the binary reads.

Functions: :class:`Config`, :func:`eval`, :func:`flow`, :func:`sgd`, :func:`sweep`,
:func:`report`, and :func:`cli` (any command line, as a list of arguments).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from . import _native

__all__ = [
    "Config",
    "ReportResult",
    "Result",
    "SweepResult",
    "cli",
    "eval",
    "flow",
    "report",
    "sgd",
    "sweep",
]
__version__ = _native.__version__


def cli(*args: str) -> str:
    """Runs ``predhead ARGS...`` in-process and returns its stdout text.

    >>> cli("eval", "--precision", "1")  # doctest: +SKIP
    Traceback (most recent call last):
    ValueError: --config: required argument missing
    """
    return _native.cli(["predhead", *[str(a) for a in args]])


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, bytes, os.PathLike))


class Config:
    """A configuration, validated by the binary's own reader.

    ``Config(path)`` reads a TOML file; ``Config(dict)`` takes the tables as nested dicts
    (``{"setting": {...}, "model": {...}, "training": {...}}``); ``Config.from_toml(text)``
    takes TOML text. A bad configuration raises ``ValueError`` naming the field and value.

    Attributes: ``toml`` (the text the commands read), ``path`` (the file, or ``None``),
    ``resolved`` (a dict with every default filled in).
    """

    def __init__(self, source: Any):
        if isinstance(source, Config):
            self.path, self.toml = source.path, source.toml
        elif isinstance(source, dict):
            self.path = None
            self.toml = _native.toml_from_dict(source)
        elif _is_path(source):
            self.path = os.fspath(source)
            self.toml = _native.load_config(self.path)
        else:
            raise TypeError(
                f"Config: expected a dict, a path or a Config, got {type(source).__name__}"
            )
        self.resolved: Dict[str, Any] = json.loads(_native.check_config(self.toml))

    @classmethod
    def from_toml(cls, text: str) -> Config:
        """A configuration from TOML text."""
        c = cls.__new__(cls)
        c.path, c.toml = None, text
        c.resolved = json.loads(_native.check_config(text))
        return c

    def __repr__(self) -> str:
        where = f"path={self.path!r}" if self.path else "from a dict"
        return f"predhead.Config({where})"


class _Files:
    """A temporary directory holding the inputs given as Python values."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="predhead-")
        self.dir = self._dir.name

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc: object) -> None:
        self._dir.cleanup()

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def write(self, name: str, text: str) -> str:
        p = self.path(name)
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
        return p

    def config(self, config: Any) -> str:
        c = config if isinstance(config, Config) else Config(config)
        return c.path if c.path is not None else self.write("config.toml", c.toml)

    def json_input(self, name: str, value: Any) -> str:
        """A STATE.json or BATCH.json: a path as given, or a dict of arrays written out
        (floats in shortest round-trip form, so the binary reads the same numbers)."""
        if _is_path(value):
            return os.fspath(value)
        if not isinstance(value, dict):
            raise TypeError(f"{name}: expected a dict or a path, got {type(value).__name__}")
        plain = {
            k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for k, v in value.items()
        }
        return self.write(f"{name}.json", json.dumps(plain))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _options(options: Dict[str, Any]) -> List[str]:
    """``rtol=1e-9`` -> ``--rtol 1e-09``; ``stop_at_t_end=True`` -> ``--stop-at-t-end``;
    ``None`` and ``False`` are left out. Floats are written with ``repr`` (shortest
    round-trip), so the binary parses the same number."""
    argv: List[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        if value is True:
            argv.append(_flag(key))
        else:
            argv += [_flag(key), repr(value) if isinstance(value, float) else str(value)]
    return argv


def _trajectory(columns: Dict[str, np.ndarray]) -> Any:
    try:
        import pandas
    except ImportError:
        return columns
    return pandas.DataFrame(columns)


@dataclass
class Result:
    """The result of :func:`eval`, :func:`flow` or :func:`sgd`.

    ``json``: the binary's stdout line, byte for byte. ``summary``: ``json.loads`` of it.
    ``arrays``: named numpy arrays (``eval``: ``grad_w`` of shape (m, d) and ``grad_e`` of
    shape (m, m), ``float64``, or ``str`` with ``precision``; ``flow``/``sgd``: one 1-D
    ``float64`` array per trajectory column). ``trajectory``: the trajectory columns as a
    ``pandas.DataFrame`` when pandas is installed, else the dict ``arrays``.
    """

    json: str
    summary: Dict[str, Any]
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    trajectory: Any = None


def eval(config: Any, state: Any, batch: Any = None, precision: Optional[int] = None) -> Result:
    """``predhead eval``: the population loss and gradient at ``state`` (a dict with ``w``
    (m, d) and ``e`` (m, m), or a STATE.json path); with ``batch`` (``x1``, ``x2`` of shape
    (N, P, d), or a BATCH.json path) the batch loss (3.3); with ``precision`` (bits) in MPFR,
    every number a decimal string."""
    with _Files() as f:
        argv = ["eval", "--config", f.config(config), "--state", f.json_input("state", state)]
        if batch is not None:
            argv += ["--batch", f.json_input("batch", batch)]
        argv += _options({"precision": precision})
        out = cli(*argv)
    summary = json.loads(out)
    dtype = str if precision is not None else np.float64
    arrays = {k: np.asarray(summary[k], dtype=dtype) for k in ("grad_w", "grad_e")}
    return Result(json=out, summary=summary, arrays=arrays)


def _run(
    command: str,
    config: Any,
    seed: Optional[int],
    state: Any,
    trajectory: bool,
    options: Dict[str, Any],
) -> Result:
    with _Files() as f:
        argv = [command, "--config", f.config(config), "--json"]
        if seed is not None:
            argv += ["--seed", str(seed)]
        if state is not None:
            argv += ["--state", f.json_input("state", state)]
        if trajectory:
            argv += ["--out", f.path("trajectory.csv")]
        out = cli(*argv, *_options(options))
        arrays = _native.read_trajectory(f.path("trajectory.csv")) if trajectory else {}
    return Result(
        json=out,
        summary=json.loads(out),
        arrays=arrays,
        trajectory=_trajectory(arrays) if trajectory else None,
    )


def flow(
    config: Any,
    seed: Optional[int] = None,
    state: Any = None,
    trajectory: bool = True,
    **options: Any,
) -> Result:
    """``predhead flow --json``: the exact population gradient flow from ``seed`` (the exact
    reduced initialization; default 0) or from ``state``. ``options`` are the command's
    flags with ``_`` for ``-`` (``rtol=1e-10``, ``method="rosenbrock"``,
    ``stop_at_t_end=True``, ``no_error_estimate=True``, ...). ``trajectory=False`` skips the
    trajectory (the ``--out`` CSV, one row per accepted step)."""
    return _run("flow", config, seed, state, trajectory, options)


def sgd(
    config: Any,
    seed: Optional[int] = None,
    state: Any = None,
    trajectory: bool = True,
    **options: Any,
) -> Result:
    """``predhead sgd --json``: SGD from ``seed`` (default 0) or ``state``. ``options`` are
    the command's flags (``engine="reduced"``, ``data_seed=3``, ``record_every=10``,
    ``stop_at_t_end=True``)."""
    return _run("sgd", config, seed, state, trajectory, options)


@dataclass
class SweepResult:
    """``records``: the results file's records (dicts, seals removed), in file order;
    ``path``: the results file; ``message``: the binary's stdout line."""

    records: List[Dict[str, Any]]
    path: str
    message: str


def sweep(
    spec: Any,
    shard: Any = None,
    results: Any = None,
    quick: bool = False,
    max_tasks: Optional[int] = None,
) -> SweepResult:
    """``predhead sweep``: runs (a shard, ``"i/n"`` or ``(i, n)``, of) the sweep ``spec`` (a
    TOML path) on the rayon pool, appending to its results file (``results``, or the
    binary's default beside the spec; a re-run resumes), and returns its records."""
    if not _is_path(spec):
        raise TypeError(f"spec: expected a path to a TOML spec, got {type(spec).__name__}")
    if isinstance(shard, tuple):
        shard = f"{shard[0]}/{shard[1]}"
    argv = ["sweep", os.fspath(spec)] + _options(
        {
            "shard": shard,
            "results": results and os.fspath(results),
            "quick": quick,
            "max_tasks": max_tasks,
        }
    )
    message = cli(*argv)
    # The binary's default results file is named on its stdout line.
    path = (
        os.fspath(results)
        if results is not None
        else message.rsplit("; results in ", 1)[-1].rstrip("\n")
    )
    records = [json.loads(r) for r in _native.read_records(path)]
    return SweepResult(records=records, path=path, message=message)


@dataclass
class ReportResult:
    """``message``: the binary's stdout line (verdicts); ``markdown``: the report's text;
    ``path``: the report's Markdown file; ``table``: its CSV as a ``pandas.DataFrame`` when
    pandas is installed, else the CSV path."""

    message: str
    markdown: str
    path: str
    table: Any


def report(
    name: str, dir: Any = "reports", quick: bool = False, fresh: bool = False
) -> ReportResult:
    """``predhead report --only NAME``: runs the sweep of ``DIR/NAME.toml`` (resumable) and
    writes the report ``DIR[/quick]/NAME.md``, its CSV and figures; returns them."""
    d = os.fspath(dir)
    message = cli("report", "--only", name, "--dir", d, *_options({"quick": quick, "fresh": fresh}))
    out = os.path.join(d, "quick") if quick else d
    md, csv = os.path.join(out, f"{name}.md"), os.path.join(out, f"{name}.csv")
    with open(md, encoding="utf-8") as fh:
        markdown = fh.read()
    try:
        import pandas

        table: Any = pandas.read_csv(csv)
    except ImportError:
        table = csv
    return ReportResult(message=message, markdown=markdown, path=md, table=table)
