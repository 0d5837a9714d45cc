//! Reading and validating the TOML configuration.
//!
//! `[setting]` and `[model]` are required with every key of `../shared/contract.md`;
//! `[training]` and `[phases]` are optional, each key with the default documented on
//! [`Training`] and [`Phases`]. Unknown tables, unknown keys, wrong types and values out of
//! range are [`Error`]s that name the field and the value.

use crate::error::{echo, Error, Result};
use crate::setting::{Config, HeadMode, Model, Normalization, Phases, Setting, Training};
use std::path::Path;
use toml::{Table, Value};

/// The largest number of patches: the sampler's stream layout gives each patch its own
/// stream inside a sample (`data.rs`), with room for `2^20 - 2` patches.
pub const MAX_PATCHES: usize = (1 << 20) - 2;

/// The largest `(P0 + 1) P` accepted: the exact overlap moments cost time and memory in
/// proportion to it ([`validate_setting`]).
pub const MAX_OVERLAP_COST: u128 = 1 << 28;

/// Reads and validates a configuration file.
pub fn load_config(path: impl AsRef<Path>) -> Result<Config> {
    let path = path.as_ref();
    let text = crate::input::read_bounded(path, crate::input::MAX_CONFIG_BYTES)?;
    parse_config(&text)
}

/// Parses and validates a configuration from TOML text.
pub fn parse_config(text: &str) -> Result<Config> {
    let root: Table = text
        .parse::<Table>()
        .map_err(|e| Error::parse("config", e))?;
    let mut top = Reader::new("", &root);
    let setting_t = top.table("setting")?;
    let model_t = top.table("model")?;
    let training_t = top.optional_table("training")?;
    let phases_t = top.optional_table("phases")?;
    top.finish()?;

    let mut r = Reader::new("setting", setting_t);
    let dim = r.integer("dim")?;
    let patches = r.integer("patches")?;
    let feature_patches = r.integer("feature_patches")?;
    let alpha = r.pair("alpha")?;
    let noise_std = r.float("noise_std")?;
    let neurons = r.integer("neurons")?;
    r.finish()?;
    let setting = Setting {
        dim,
        patches: to_usize("setting.patches", patches)?,
        feature_patches: to_usize("setting.feature_patches", feature_patches)?,
        alpha,
        noise_std,
        neurons: to_usize("setting.neurons", neurons)?,
    };

    let mut r = Reader::new("model", model_t);
    let head = r.enumeration(
        "head",
        HeadMode::from_name,
        "identity-offdiag, frozen or linear",
    )?;
    let normalization = r.enumeration(
        "normalization",
        Normalization::from_name,
        "batchnorm or none",
    )?;
    let stop_gradient = r.boolean("stop_gradient")?;
    r.finish()?;
    let model = Model {
        head,
        normalization,
        stop_gradient,
    };

    let mut training = Training::defaults(setting.dim);
    if let Some(t) = training_t {
        let mut r = Reader::new("training", t);
        let lr = r.optional_float("lr")?;
        if let Some(lr) = lr {
            training.lr = lr;
            training.lr_head = lr * Training::DEFAULT_HEAD_RATIO;
        }
        if let Some(v) = r.optional_float("lr_head")? {
            training.lr_head = v;
        } else if let Some(lr) = lr {
            if lr > 0.0 && training.lr_head == 0.0 {
                return Err(Error::invalid(
                    "training.lr",
                    format!(
                        "{lr:e} is too small: the default lr_head = lr * {} underflows to 0",
                        Training::DEFAULT_HEAD_RATIO
                    ),
                ));
            }
        }
        if let Some(v) = r.optional_integer("batch")? {
            training.batch = to_usize("training.batch", v)?;
        }
        if let Some(v) = r.optional_integer("steps")? {
            training.steps = v;
        }
        if let Some(v) = r.optional_float("horizon")? {
            training.horizon = v;
        }
        r.finish()?;
    }

    let mut phases = Phases::default();
    if let Some(t) = phases_t {
        let mut r = Reader::new("phases", t);
        for (key, slot) in [
            ("t1", &mut phases.t1),
            ("t2", &mut phases.t2),
            ("t3", &mut phases.t3),
            ("t_end", &mut phases.t_end),
            ("outcome_cos", &mut phases.outcome_cos),
        ] {
            if let Some(v) = r.optional_float(key)? {
                *slot = v;
            }
        }
        r.finish()?;
    }

    let config = Config {
        setting,
        model,
        training,
        phases,
    };
    validate(&config)?;
    Ok(config)
}

/// Checks every rule on a configuration built in code (the parser calls it too).
pub fn validate(config: &Config) -> Result<()> {
    validate_setting(&config.setting)?;
    validate_model(&config.setting, &config.model)?;
    let t = &config.training;
    positive("training.lr", t.lr)?;
    positive("training.lr_head", t.lr_head)?;
    positive("training.horizon", t.horizon)?;
    // The flow runs the head at rate lr_head / lr (contract: dE/dtau = -(lr_head/lr) grad_E).
    let ratio = t.lr_head / t.lr;
    if !ratio.is_finite() {
        // Blame the rate farther from 1 (in ratio): the tiny lr or the huge lr_head.
        let field = if t.lr_head.ln().abs() > t.lr.ln().abs() {
            "training.lr_head"
        } else {
            "training.lr"
        };
        return Err(Error::invalid(
            field,
            format!(
                "lr_head / lr = {:e} / {:e} overflows f64 (the head's rate in flow time)",
                t.lr_head, t.lr
            ),
        ));
    }
    if t.batch == 0 {
        return Err(Error::invalid(
            "training.batch",
            "must be at least 1, got 0",
        ));
    }
    // One sample has no batch statistics; without them the loss (3.3) is defined for N = 1.
    if t.batch < 2 && config.model.normalization == Normalization::Batchnorm {
        return Err(Error::invalid(
            "training.batch",
            format!(
                "must be at least 2 for batch normalization, got {}",
                t.batch
            ),
        ));
    }
    if t.steps == 0 {
        return Err(Error::invalid("training.steps", "must be positive, got 0"));
    }
    let p = &config.phases;
    positive("phases.t1", p.t1)?;
    positive("phases.t2", p.t2)?;
    positive("phases.t_end", p.t_end)?;
    for (field, v) in [("phases.t3", p.t3), ("phases.outcome_cos", p.outcome_cos)] {
        positive(field, v)?;
        if v > 1.0 {
            return Err(Error::invalid(
                field,
                format!("is a cosine, must be at most 1, got {v}"),
            ));
        }
    }
    Ok(())
}

/// Checks the rules of the setting: `d >= 3`, `P` even and positive, `1 <= P0 <= P`,
/// `alpha_1 >= alpha_2 > 0`, `s > 0`, every number finite, `m >= 1`.
pub fn validate_setting(s: &Setting) -> Result<()> {
    if s.dim < 3 {
        return Err(Error::invalid(
            "setting.dim",
            format!("must be at least 3, got {}", s.dim),
        ));
    }
    if s.patches < 2 || !s.patches.is_multiple_of(2) {
        return Err(Error::invalid(
            "setting.patches",
            format!("must be even and at least 2, got {}", s.patches),
        ));
    }
    if s.patches > MAX_PATCHES {
        return Err(Error::invalid(
            "setting.patches",
            format!("must be at most {MAX_PATCHES}, got {}", s.patches),
        ));
    }
    if s.feature_patches == 0 || s.feature_patches > s.patches {
        return Err(Error::invalid(
            "setting.feature_patches",
            format!(
                "must be between 1 and patches = {}, got {}",
                s.patches, s.feature_patches
            ),
        ));
    }
    // The exact overlap moments (`moments::overlap`, eqs. (O1)-(O6)) sum the P0 + 1 terms
    // of the hypergeometric pmf, each a ratio of binomials of about P bits: time and memory
    // grow as P0 P (2^28 takes about 6 s and 100 MB; 5e9 would take hours and tens of GB).
    let overlap_cost = (s.feature_patches as u128 + 1) * s.patches as u128;
    if overlap_cost > MAX_OVERLAP_COST {
        return Err(Error::invalid(
            "setting.feature_patches",
            format!(
                "(feature_patches + 1) * patches = {overlap_cost} exceeds {MAX_OVERLAP_COST}, \
                 the budget of the exact overlap moments (got feature_patches = {}, \
                 patches = {})",
                s.feature_patches, s.patches
            ),
        ));
    }
    positive("setting.alpha[0]", s.alpha[0])?;
    positive("setting.alpha[1]", s.alpha[1])?;
    if s.alpha[1] > s.alpha[0] {
        return Err(Error::invalid(
            "setting.alpha",
            format!(
                "alpha2 = {} must not exceed alpha1 = {}",
                s.alpha[1], s.alpha[0]
            ),
        ));
    }
    positive("setting.noise_std", s.noise_std)?;
    representable(s)?;
    if s.neurons == 0 {
        return Err(Error::invalid(
            "setting.neurons",
            "must be at least 1, got 0",
        ));
    }
    Ok(())
}

/// Checks that the powers the population moments use stay in the range of `f64`
/// (`derivations/population.md`, eqs. (P1)-(P3)): `alpha_1^6 P0^2` and `15 s^6 P` must be
/// finite, `alpha_2^6` and `s^6` must not underflow to 0. Beyond these limits the moments
/// overflow (or vanish) for every state, which would surface later as a NaN variance.
fn representable(s: &Setting) -> Result<()> {
    let sixth = |x: f64| x.powi(3).powi(2);
    let p0 = s.feature_patches as f64;
    let checks = [
        (
            "setting.alpha[0]",
            s.alpha[0],
            sixth(s.alpha[0]) * p0 * p0,
            "alpha1^6 P0^2",
        ),
        (
            "setting.alpha[1]",
            s.alpha[1],
            sixth(s.alpha[1]),
            "alpha2^6",
        ),
        (
            "setting.noise_std",
            s.noise_std,
            15.0 * sixth(s.noise_std) * s.patches as f64,
            "15 s^6 P",
        ),
    ];
    for (field, value, power, name) in checks {
        if !power.is_finite() {
            return Err(Error::invalid(
                field,
                format!("{value:e} overflows: {name} is beyond the f64 range"),
            ));
        }
        if power == 0.0 {
            return Err(Error::invalid(
                field,
                format!("{value:e} underflows: {name} is 0 in f64"),
            ));
        }
    }
    Ok(())
}

/// Checks the model against the setting: the paper's head needs `m >= 2`.
pub fn validate_model(s: &Setting, m: &Model) -> Result<()> {
    if m.head == HeadMode::IdentityOffdiag && s.neurons < 2 {
        return Err(Error::invalid(
            "setting.neurons",
            format!(
                "head = \"identity-offdiag\" needs at least 2 neurons, got {}",
                s.neurons
            ),
        ));
    }
    Ok(())
}

/// Requires at least two neurons (commands that report `Corr(f_0, f_1)`).
pub fn require_two_neurons(s: &Setting) -> Result<()> {
    if s.neurons < 2 {
        return Err(Error::invalid(
            "setting.neurons",
            format!("this command needs at least 2 neurons, got {}", s.neurons),
        ));
    }
    Ok(())
}

fn positive(field: &str, v: f64) -> Result<()> {
    if !v.is_finite() {
        return Err(Error::invalid(field, format!("must be finite, got {v}")));
    }
    if v <= 0.0 {
        return Err(Error::invalid(field, format!("must be positive, got {v}")));
    }
    Ok(())
}

fn to_usize(field: &str, v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::invalid(field, format!("too large: {v}")))
}

/// Reads typed keys from one TOML table and remembers which keys it consumed, so that
/// [`Reader::finish`] can reject the rest as unknown.
struct Reader<'a> {
    prefix: &'a str,
    table: &'a Table,
    seen: Vec<&'a str>,
}

impl<'a> Reader<'a> {
    fn new(prefix: &'a str, table: &'a Table) -> Self {
        Reader {
            prefix,
            table,
            seen: Vec::new(),
        }
    }

    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.prefix, key)
        }
    }

    fn get(&mut self, key: &'a str) -> Option<&'a Value> {
        self.seen.push(key);
        self.table.get(key)
    }

    fn require(&mut self, key: &'a str) -> Result<&'a Value> {
        let path = self.path(key);
        self.get(key).ok_or(Error::Missing { field: path })
    }

    fn table(&mut self, key: &'a str) -> Result<&'a Table> {
        let path = self.path(key);
        match self.require(key)? {
            Value::Table(t) => Ok(t),
            other => Err(Error::invalid(
                path,
                format!("expected a table, got {}", echo(other)),
            )),
        }
    }

    fn optional_table(&mut self, key: &'a str) -> Result<Option<&'a Table>> {
        let path = self.path(key);
        match self.get(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(t)),
            Some(other) => Err(Error::invalid(
                path,
                format!("expected a table, got {}", echo(other)),
            )),
        }
    }

    fn integer(&mut self, key: &'a str) -> Result<u64> {
        let path = self.path(key);
        let v = self.require(key)?;
        as_integer(&path, v)
    }

    fn optional_integer(&mut self, key: &'a str) -> Result<Option<u64>> {
        let path = self.path(key);
        self.get(key).map(|v| as_integer(&path, v)).transpose()
    }

    fn float(&mut self, key: &'a str) -> Result<f64> {
        let path = self.path(key);
        let v = self.require(key)?;
        as_float(&path, v)
    }

    fn optional_float(&mut self, key: &'a str) -> Result<Option<f64>> {
        let path = self.path(key);
        self.get(key).map(|v| as_float(&path, v)).transpose()
    }

    fn pair(&mut self, key: &'a str) -> Result<[f64; 2]> {
        let path = self.path(key);
        match self.require(key)? {
            Value::Array(a) if a.len() == 2 => Ok([
                as_float(&format!("{path}[0]"), &a[0])?,
                as_float(&format!("{path}[1]"), &a[1])?,
            ]),
            Value::Array(a) => Err(Error::invalid(
                path,
                format!("expected 2 numbers [alpha1, alpha2], got {}", a.len()),
            )),
            other => Err(Error::invalid(
                path,
                format!("expected an array of 2 numbers, got {}", echo(other)),
            )),
        }
    }

    fn boolean(&mut self, key: &'a str) -> Result<bool> {
        let path = self.path(key);
        match self.require(key)? {
            Value::Boolean(b) => Ok(*b),
            other => Err(Error::invalid(
                path,
                format!("expected true or false, got {}", echo(other)),
            )),
        }
    }

    fn enumeration<T>(
        &mut self,
        key: &'a str,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<T> {
        let path = self.path(key);
        match self.require(key)? {
            Value::String(s) => parse(s).ok_or_else(|| {
                Error::invalid(
                    path,
                    format!("unknown value \"{}\", expected {expected}", echo(s)),
                )
            }),
            other => Err(Error::invalid(
                path,
                format!("expected a string ({expected}), got {}", echo(other)),
            )),
        }
    }

    fn finish(self) -> Result<()> {
        let mut unknown: Vec<&String> = self
            .table
            .keys()
            .filter(|k| !self.seen.contains(&k.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(k) => Err(Error::UnknownKey {
                field: self.path(k),
            }),
        }
    }
}

/// An integer, or a float with an integral value (so that `dim = 1e12` is accepted).
fn as_integer(path: &str, v: &Value) -> Result<u64> {
    match v {
        Value::Integer(i) if *i >= 0 => Ok(*i as u64),
        Value::Integer(i) => Err(Error::invalid(
            path,
            format!("must be non-negative, got {i}"),
        )),
        Value::Float(f) if f.is_finite() && f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19 => {
            Ok(*f as u64)
        }
        other => Err(Error::invalid(
            path,
            format!("expected an integer, got {}", echo(other)),
        )),
    }
}

fn as_float(path: &str, v: &Value) -> Result<f64> {
    match v {
        Value::Float(f) if f.is_finite() => Ok(*f),
        Value::Float(f) => Err(Error::invalid(path, format!("must be finite, got {f}"))),
        Value::Integer(i) => Ok(*i as f64),
        other => Err(Error::invalid(
            path,
            format!("expected a number, got {}", echo(other)),
        )),
    }
}

impl Config {
    /// The configuration as TOML text that [`parse_config`] reads back unchanged.
    pub fn to_toml(&self) -> String {
        // Serialization of these plain structs cannot fail.
        toml::to_string(self).unwrap_or_default()
    }
}
