//! A batch of augmented samples: the two views `X^(i,1)`, `X^(i,2)` of `N` samples, and
//! BATCH.json of the contract (`{"x1": [N][P][d], "x2": [N][P][d]}`).
//!
//! Each view of each sample is stored patch-major as `P * d` numbers (patch `p` is
//! `x[p*d .. (p+1)*d]`), the layout of [`crate::data::batch_views`], so a drawn batch is
//! wrapped without copying by [`Batch::new`].

use crate::config::validate_setting;
use crate::error::{Error, Result};
use crate::setting::Setting;
use crate::state::vector;
use serde_json::Value;
use std::path::Path;

/// The two views of `N >= 1` samples, each view `P x d`, every number finite (batch
/// normalization needs `N >= 2`, checked where the model is known,
/// [`crate::network::batch_loss_and_gradient`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `x1[i]`: the first (online) view `X^(i,1)`, patch-major `P * d` numbers.
    x1: Vec<Vec<f64>>,
    /// `x2[i]`: the second (target) view `X^(i,2)`, patch-major `P * d` numbers.
    x2: Vec<Vec<f64>>,
    /// `P`.
    patches: usize,
    /// `d`.
    dim: usize,
}

impl Batch {
    /// Wraps two views (as returned by [`crate::data::batch_views`]) after checking them
    /// against the setting (which must itself be valid, [`validate_setting`]): the same
    /// number `N >= 1` of samples in both, each of length `P * d`, every number finite.
    /// `N = 1` is valid with `normalization = "none"` (the loss (3.3) needs no batch
    /// statistics); batch normalization needs `N >= 2`, which the network checks
    /// (`../shared/contract.md`).
    pub fn new(setting: &Setting, x1: Vec<Vec<f64>>, x2: Vec<Vec<f64>>) -> Result<Batch> {
        validate_setting(setting)?;
        let dim = dim_of(setting)?;
        let patches = setting.patches;
        if x1.is_empty() {
            return Err(Error::invalid(
                "batch.x1",
                "needs at least 1 sample (N >= 1), got 0",
            ));
        }
        if x2.len() != x1.len() {
            return Err(Error::invalid(
                "batch.x2",
                format!(
                    "expected {} samples (as many as batch.x1), got {}",
                    x1.len(),
                    x2.len()
                ),
            ));
        }
        for (name, views) in [("batch.x1", &x1), ("batch.x2", &x2)] {
            for (i, x) in views.iter().enumerate() {
                if x.len() != patches * dim {
                    return Err(Error::invalid(
                        format!("{name}[{i}]"),
                        format!(
                            "expected {} numbers (patches * dim = {patches} * {dim}), got {}",
                            patches * dim,
                            x.len()
                        ),
                    ));
                }
                if let Some(k) = x.iter().position(|v| !v.is_finite()) {
                    return Err(Error::invalid(
                        format!("{name}[{i}][{}][{}]", k / dim, k % dim),
                        format!("expected a finite number, got {}", x[k]),
                    ));
                }
            }
        }
        Ok(Batch {
            x1,
            x2,
            patches,
            dim,
        })
    }

    /// Reads BATCH.json and checks it against the setting.
    pub fn load(path: impl AsRef<Path>, setting: &Setting) -> Result<Batch> {
        let path = path.as_ref();
        let text = crate::input::read_bounded(path, crate::input::MAX_JSON_BYTES)?;
        Self::parse(&text, setting)
    }

    /// Parses BATCH.json text, `{"x1": [N][P][d], "x2": [N][P][d]}`, naming the exact
    /// entry that is wrong (e.g. `batch.x1[3][1]: expected 6 numbers (dim), got 5`).
    pub fn parse(text: &str, setting: &Setting) -> Result<Batch> {
        let v: Value = crate::input::parse_json(text, "batch")?;
        let obj = v.as_object().ok_or_else(|| {
            Error::invalid("batch", "expected a JSON object {\"x1\": .., \"x2\": ..}")
        })?;
        if let Some(k) = obj.keys().find(|k| *k != "x1" && *k != "x2") {
            return Err(Error::UnknownKey {
                field: format!("batch.{k}"),
            });
        }
        let dim = dim_of(setting)?;
        let x1 = views(obj.get("x1"), "batch.x1", setting.patches, dim)?;
        let x2 = views(obj.get("x2"), "batch.x2", setting.patches, dim)?;
        Self::new(setting, x1, x2)
    }

    /// The batch size `N`.
    pub fn len(&self) -> usize {
        self.x1.len()
    }

    /// Always `false`: a batch has at least one sample.
    pub fn is_empty(&self) -> bool {
        self.x1.is_empty()
    }

    /// `P`.
    pub fn patches(&self) -> usize {
        self.patches
    }

    /// `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The first views `X^(i,1)`, each patch-major `P * d`.
    pub fn x1(&self) -> &[Vec<f64>] {
        &self.x1
    }

    /// The second views `X^(i,2)`, each patch-major `P * d`.
    pub fn x2(&self) -> &[Vec<f64>] {
        &self.x2
    }

    /// The batch as BATCH.json text (`{"x1": [N][P][d], "x2": [N][P][d]}`), which
    /// [`Batch::parse`] reads back bit for bit.
    pub fn to_json(&self) -> String {
        let nest = |views: &[Vec<f64>]| -> Vec<Vec<Vec<f64>>> {
            views
                .iter()
                .map(|x| x.chunks(self.dim).map(<[f64]>::to_vec).collect())
                .collect()
        };
        serde_json::json!({"x1": nest(&self.x1), "x2": nest(&self.x2)}).to_string()
    }
}

/// `d` as a `usize`, after checking that one view, `P d` numbers, fits the budget
/// [`crate::input::MAX_ENTRIES`] (checked arithmetic, before anything is allocated).
fn dim_of(setting: &Setting) -> Result<usize> {
    let entries = u128::from(setting.dim) * setting.patches as u128;
    if entries > crate::input::MAX_ENTRIES {
        return Err(Error::invalid(
            "setting.dim",
            format!(
                "one view of a batch has patches * dim = {} * {} = {entries} numbers, more \
                 than the {} (2 GiB) an explicit batch may use",
                setting.patches,
                setting.dim,
                crate::input::MAX_ENTRIES
            ),
        ));
    }
    usize::try_from(setting.dim)
        .ok()
        .filter(|d| d.checked_mul(setting.patches).is_some())
        .ok_or_else(|| Error::invalid("setting.dim", "too large for an explicit batch"))
}

/// `[N][P][d]` nested arrays into `N` patch-major vectors.
fn views(v: Option<&Value>, field: &str, patches: usize, dim: usize) -> Result<Vec<Vec<f64>>> {
    let v = v.ok_or_else(|| Error::Missing {
        field: field.to_string(),
    })?;
    let samples = v.as_array().ok_or_else(|| {
        Error::invalid(
            field,
            "expected an array of samples, each [patches][dim] numbers",
        )
    })?;
    samples
        .iter()
        .enumerate()
        .map(|(i, sample)| {
            let f = format!("{field}[{i}]");
            let rows = sample.as_array().ok_or_else(|| {
                Error::invalid(&f, format!("expected an array of {patches} patches"))
            })?;
            if rows.len() != patches {
                return Err(Error::invalid(
                    &f,
                    format!("expected {patches} patches (patches), got {}", rows.len()),
                ));
            }
            // Every row is checked before the sample's `P d` numbers are allocated (their
            // count comes from the config, not from the file).
            for (p, row) in rows.iter().enumerate() {
                let len = row.as_array().map(Vec::len);
                if len != Some(dim) {
                    vector(row, &format!("{f}[{p}]"), dim, "dim")?;
                }
            }
            let mut x = Vec::with_capacity(patches * dim);
            for (p, row) in rows.iter().enumerate() {
                x.extend(vector(row, &format!("{f}[{p}]"), dim, "dim")?);
            }
            Ok(x)
        })
        .collect()
}
