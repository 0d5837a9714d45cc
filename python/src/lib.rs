//! `predhead._native`: the compiled half of the Python package (`docs/python.md`).
//!
//! Nothing here computes: [`cli`] runs the very function the `predhead` binary runs
//! ([`predhead::cli::execute`]) with the GIL released, and the readers turn the files the
//! commands write (the trajectory CSV, a sweep's results file) into Python values. Every
//! error becomes a `ValueError` carrying the binary's stderr line (without `predhead: `).
#![forbid(unsafe_code)]

use numpy::PyArray1;
use predhead::cli::{error_line, execute, Failure};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use std::path::PathBuf;
use toml::Value as Toml;

/// A `ValueError` with the one line the binary prints after `predhead: `.
fn value_error(e: &predhead::Error) -> PyErr {
    PyValueError::new_err(error_line(&e.to_string()))
}

/// Runs the command line `argv` (its first item is the program name) exactly as the
/// `predhead` binary does, with the GIL released, and returns its stdout text.
///
/// Raises `ValueError` with the binary's stderr line (without `predhead: `) on bad
/// arguments or bad input, and with clap's text for `--help` and `--version`.
#[pyfunction]
fn cli(py: Python<'_>, argv: Vec<String>) -> PyResult<String> {
    match py.detach(|| execute(argv)) {
        Ok(out) => Ok(out),
        Err(Failure::Message(line)) => Err(PyValueError::new_err(line)),
        Err(Failure::Display(e)) => Err(PyValueError::new_err(e.to_string())),
    }
}

/// `path` for an error message: `config` at the top level.
fn at(path: &str) -> &str {
    if path.is_empty() {
        "config"
    } else {
        path
    }
}

/// The Python value at `path` (dotted, for the error) as a TOML value: a dict is a table;
/// a list, a tuple or a numpy array an array; `bool`, `int` (64 bits), `float` (`inf` and
/// `nan` included, which TOML can write), `str` themselves; numpy scalars as their Python
/// value.
fn to_toml(value: &Bound<'_, PyAny>, path: &str) -> PyResult<Toml> {
    let err = |what: String| PyValueError::new_err(error_line(&format!("{}: {what}", at(path))));
    if value.is_none() {
        return Err(err("None has no TOML form".into()));
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Toml::Boolean(b.is_true()));
    }
    if value.is_instance_of::<PyInt>() {
        return value
            .extract::<i64>()
            .map(Toml::Integer)
            .map_err(|_| err(format!("{value} does not fit a TOML integer (64 bits)")));
    }
    if let Ok(x) = value.cast::<PyFloat>() {
        return Ok(Toml::Float(x.value()));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Toml::String(s.to_str()?.to_string()));
    }
    if let Ok(d) = value.cast::<PyDict>() {
        let mut table = toml::Table::new();
        for (k, v) in d.iter() {
            let key: String = k
                .extract()
                .map_err(|_| err(format!("key {k} is not a string")))?;
            let sub = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            table.insert(key, to_toml(&v, &sub)?);
        }
        return Ok(Toml::Table(table));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, v) in value.try_iter()?.enumerate() {
            items.push(to_toml(&v?, &format!("{}[{i}]", at(path)))?);
        }
        return Ok(Toml::Array(items));
    }
    // A numpy array or scalar: its Python value (`tolist` of an array, `item` of a scalar).
    for method in ["tolist", "item"] {
        if value.hasattr(method)? {
            let plain = value.call_method0(method)?;
            if !plain.is(value) {
                return to_toml(&plain, path);
            }
        }
    }
    Err(err(format!(
        "a {} has no TOML form",
        value.get_type().name()?
    )))
}

/// TOML text of a configuration given as nested dicts, unvalidated: the command that reads
/// it validates it. Raises `ValueError` for a value with no TOML form (`None`, an integer
/// beyond 64 bits, another type) or a top level that is not a dict.
#[pyfunction]
fn toml_from_dict(value: &Bound<'_, PyAny>) -> PyResult<String> {
    match to_toml(value, "")? {
        Toml::Table(t) => toml::to_string(&t)
            .map_err(|e| PyValueError::new_err(error_line(&format!("config: {e}")))),
        _ => Err(PyValueError::new_err("config: expected a table (a dict)")),
    }
}

/// Validates TOML configuration text with the binary's own reader and returns the
/// configuration with every default filled in, as JSON text.
#[pyfunction]
fn check_config(text: &str) -> PyResult<String> {
    let config = predhead::config::parse_config(text).map_err(|e| value_error(&e))?;
    serde_json::to_string(&config).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Reads and validates a configuration file as the binary does (the same errors, the file
/// name included); returns its text.
#[pyfunction]
fn load_config(path: PathBuf) -> PyResult<String> {
    predhead::config::load_config(&path).map_err(|e| value_error(&e))?;
    predhead::input::read_bounded(&path, predhead::input::MAX_CONFIG_BYTES)
        .map_err(|e| value_error(&e))
}

/// The columns of a trajectory CSV (the `--out` of `flow` and `sgd`) in file order: a dict
/// mapping each header name to a 1-D `float64` array (`nan` for an empty cell, an undefined
/// correlation). The numbers are read back exactly (they are written in shortest
/// round-trip form).
#[pyfunction]
fn read_trajectory<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let (names, columns) = py.detach(|| parse_csv(&path))?;
    let out = PyDict::new(py);
    for (name, column) in names.into_iter().zip(columns) {
        out.set_item(name, PyArray1::from_vec(py, column))?;
    }
    Ok(out)
}

/// The header and the columns of a CSV of numbers.
fn parse_csv(path: &PathBuf) -> PyResult<(Vec<String>, Vec<Vec<f64>>)> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| PyValueError::new_err(error_line(&format!("{name}: {e}"))))?;
    let mut lines = text.lines();
    let names: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .collect();
    let mut columns = vec![Vec::new(); names.len()];
    for (i, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != names.len() {
            return Err(PyValueError::new_err(format!(
                "{name} line {}: {} cells, expected {}",
                i + 2,
                cells.len(),
                names.len()
            )));
        }
        for (column, cell) in columns.iter_mut().zip(cells) {
            let x = if cell.is_empty() {
                f64::NAN
            } else {
                cell.parse::<f64>().map_err(|e| {
                    PyValueError::new_err(error_line(&format!(
                        "{name} line {}: {cell:?}: {e}",
                        i + 2
                    )))
                })?
            };
            column.push(x);
        }
    }
    Ok((names, columns))
}

/// The records of a sweep's results file, each as the JSON text of its line without the
/// seal, in file order; every line is checked against its checksum as `predhead merge`
/// and `predhead report` do.
#[pyfunction]
fn read_records(py: Python<'_>, path: PathBuf) -> PyResult<Vec<String>> {
    py.detach(|| {
        let results = predhead::sweep::read_results(&path, false).map_err(|e| value_error(&e))?;
        results
            .lines
            .iter()
            .map(|(_, line)| {
                predhead::sweep::file::unseal(line)
                    .map_err(|p| PyValueError::new_err(error_line(&p)))
            })
            .collect()
    })
}

/// The compiled module `predhead._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    m.add_function(wrap_pyfunction!(toml_from_dict, m)?)?;
    m.add_function(wrap_pyfunction!(check_config, m)?)?;
    m.add_function(wrap_pyfunction!(load_config, m)?)?;
    m.add_function(wrap_pyfunction!(read_trajectory, m)?)?;
    m.add_function(wrap_pyfunction!(read_records, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
