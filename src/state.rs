//! The explicit state `(W, E)`: STATE.json of the contract.
//!
//! `w[j]` is `w_j in R^d` (one row per neuron, `d` numbers each) and `e[j][r] = E[j][r]`.

use crate::error::{echo, Error, Result};
use crate::setting::{HeadMode, Model, Setting};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// Weights `W = (w_1..w_m)` (stored as rows) and head `E`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// `w[j]` = `w_j`, `d` numbers.
    pub w: Vec<Vec<f64>>,
    /// `e[j][r]` = `E[j][r]`, `m x m`.
    pub e: Vec<Vec<f64>>,
}

impl State {
    /// Reads STATE.json and checks its shape against the setting.
    pub fn load(path: impl AsRef<Path>, setting: &Setting) -> Result<State> {
        let path = path.as_ref();
        let text = crate::input::read_bounded(path, crate::input::MAX_JSON_BYTES)?;
        Self::parse(&text, setting)
    }

    /// Parses STATE.json text and checks its shape against the setting.
    pub fn parse(text: &str, setting: &Setting) -> Result<State> {
        let v: Value = crate::input::parse_json(text, "state")?;
        let obj = v.as_object().ok_or_else(|| {
            Error::invalid("state", "expected a JSON object {\"w\": .., \"e\": ..}")
        })?;
        if let Some(k) = obj.keys().find(|k| *k != "w" && *k != "e") {
            return Err(Error::UnknownKey {
                field: format!("state.{k}"),
            });
        }
        let m = setting.neurons;
        let d = usize::try_from(setting.dim)
            .map_err(|_| Error::invalid("setting.dim", "too large for an explicit state"))?;
        let w = matrix(obj.get("w"), "state.w", m, d, "neurons", "dim")?;
        let e = matrix(obj.get("e"), "state.e", m, m, "neurons", "neurons")?;
        Ok(State { w, e })
    }

    /// Checks the state against the model: with `head = "identity-offdiag"` the diagonal of
    /// `E` is fixed at 1 (the paper's head, `../shared/contract.md`), so any other diagonal
    /// entry is refused, naming `state.e[j][j]` and its value.
    ///
    /// # Examples
    /// ```
    /// use predhead::setting::{HeadMode, Model, Normalization};
    /// use predhead::state::State;
    /// let model = Model { head: HeadMode::IdentityOffdiag, normalization: Normalization::None,
    ///                     stop_gradient: true };
    /// let mut s = State::with_identity_head(vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]]);
    /// assert!(s.check_model(&model).is_ok());
    /// s.e[1][1] = 0.5;
    /// assert!(s.check_model(&model).unwrap_err().to_string().starts_with("state.e[1][1]"));
    /// ```
    ///
    /// # Errors
    /// [`Error::Invalid`] for the first diagonal entry that is not 1.
    pub fn check_model(&self, model: &Model) -> Result<()> {
        if model.head != HeadMode::IdentityOffdiag {
            return Ok(());
        }
        for (j, row) in self.e.iter().enumerate() {
            if let Some(&v) = row.get(j) {
                if v != 1.0 {
                    return Err(Error::invalid(
                        format!("state.e[{j}][{j}]"),
                        format!("head = \"identity-offdiag\" fixes the diagonal at 1, got {v}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The paper's initialization is drawn elsewhere (`reduced.rs`, `sgd.rs`); this is the
    /// identity head with the given weights.
    pub fn with_identity_head(w: Vec<Vec<f64>>) -> State {
        let m = w.len();
        let e = (0..m)
            .map(|j| (0..m).map(|r| if j == r { 1.0 } else { 0.0 }).collect())
            .collect();
        State { w, e }
    }

    /// Number of neurons `m`.
    pub fn neurons(&self) -> usize {
        self.w.len()
    }

    /// Dimension `d`.
    pub fn dim(&self) -> usize {
        self.w.first().map_or(0, Vec::len)
    }
}

/// Parses a `rows x cols` matrix of finite numbers from JSON, naming the exact entry that
/// is wrong.
pub fn matrix(
    v: Option<&Value>,
    field: &str,
    rows: usize,
    cols: usize,
    rows_name: &str,
    cols_name: &str,
) -> Result<Vec<Vec<f64>>> {
    let v = v.ok_or_else(|| Error::Missing {
        field: field.to_string(),
    })?;
    let arr = v
        .as_array()
        .ok_or_else(|| Error::invalid(field, format!("expected an array of {rows} rows")))?;
    if arr.len() != rows {
        return Err(Error::invalid(
            field,
            format!("expected {rows} rows ({rows_name}), got {}", arr.len()),
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(i, row)| vector(row, &format!("{field}[{i}]"), cols, cols_name))
        .collect()
}

/// Parses a vector of `len` finite numbers from JSON.
pub fn vector(v: &Value, field: &str, len: usize, len_name: &str) -> Result<Vec<f64>> {
    let arr = v
        .as_array()
        .ok_or_else(|| Error::invalid(field, format!("expected an array of {len} numbers")))?;
    if arr.len() != len {
        return Err(Error::invalid(
            field,
            format!("expected {len} numbers ({len_name}), got {}", arr.len()),
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(k, x)| number(x, &format!("{field}[{k}]")))
        .collect()
}

/// A finite JSON number.
pub fn number(x: &Value, field: &str) -> Result<f64> {
    match x.as_f64() {
        Some(f) if f.is_finite() => Ok(f),
        _ => Err(Error::invalid(
            field,
            format!("expected a finite number, got {}", echo(x)),
        )),
    }
}
