//! Sweeps: a grid of configurations times seeds, run in parallel, resumable, shardable.
//!
//! A sweep spec (TOML, usually `reports/<name>.toml`) names a base configuration, a scaling
//! family (`derivations/scaling.md`), grid axes and seeds. [`Spec::tasks`] expands it into
//! tasks in a fixed order; task `k` has the stable id `k` and a key that hashes its resolved
//! configuration, its runner and its seed; the results file names its spec by the SHA-256
//! of all its tasks, so results of another or a changed spec are refused, never reused.
//!
//! Results are JSON lines ([`file`]): a header line naming the spec (the SHA-256 of its
//! resolved task list) and the shard, then one record per finished task, each line sealed
//! with a SHA-256 checksum. A sweep locks its results file, checks it against the spec
//! (header, checksums, schema, tasks) before writing anything and refuses a file that fails,
//! leaving it as it was. Each record is appended with one `write` of the full line and a
//! flush ([`run`]). A re-run skips the tasks already in the file; a torn last line (the
//! process was killed mid-write) is cut off. When every task of the shard is done the file
//! is rewritten sorted by task id (through a temporary file and a rename), so a resumed
//! run, and the [`merge`] of the shards of `--shard i/n` (task `k` belongs to shard
//! `k mod n`), are byte-identical to an uninterrupted unsharded run. [`merge_with`] refuses
//! files of different specs and (unless asked to mark the output partial) incomplete sets.
//!
//! Spec format (every key but `seeds` optional):
//!
//! ```toml
//! name = "theorem41"        # default: the file stem
//! report = "theorem41"      # which report reads the results
//! runner = "flow"           # what a task runs (see `crate::report::runner`)
//! seeds = 20                # seeds 0..20, or a list [3, 7]
//! seed_streams = "per-dim"  # "shared" (default): seed s at every d; "per-dim": an
//!                           # independent stream per d (`Spec::seed_for`)
//! horizon_factor = 1e3      # flow horizon = horizon_factor * d^2
//! [family]                  # "fixed" (default) or "paper" with its constants
//! name = "paper"
//! [axes]                    # each axis a list; the grid is their product
//! dim = [1e2, 1e3]
//! neurons = [2]
//! head = ["identity-offdiag", "frozen"]
//! normalization = ["batchnorm"]
//! stop_gradient = [true]
//! head_ratio = [0.1]        # lr_head / lr
//! lr = [1e-3]
//! batch = [256]
//! lr_batch = [[1e-2, 256]]  # (lr, batch) pairs, instead of the product of lr and batch
//! lr_d = [1.0, 0.5]         # lr = lr_d / d at each d (lr_head keeps its ratio); not with lr
//! alpha_ratio = [10, 100]   # alpha = [alpha1, alpha1 / ratio] (alpha1 of the base or family)
//! feature_patches = [2, 5]  # P0
//! runner = ["flow", "sgd"]
//! [quick]                   # overrides for `--quick`: seeds and any axis
//! seeds = 3
//! dim = [1e2]
//! results = "other"         # share the results file of a spec with the same grid
//! [options]                 # free-form, read by the report
//! [base.setting]            # the base configuration (or base_config = "path.toml")
//! ```

use crate::config::{parse_config, validate};
use crate::error::{Error, Result};
use crate::setting::{Config, HeadMode, Normalization};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub mod file;
pub use file::Header;

/// A scaling family: how the setting moves with `d` (`derivations/scaling.md`).
#[derive(Clone, Debug, PartialEq)]
pub enum Family {
    /// The base setting fixed; only `d` (and the horizon) vary (eq. (D0)).
    Fixed,
    /// The paper's polylog scalings with explicit constants (eqs. (D1)-(D5)).
    Paper(PaperFamily),
}

/// The constants of the paper family (`derivations/scaling.md`, eqs. (D1)-(D5)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaperFamily {
    /// `P = 2 ceil(c_p (ln d)^k_p / 2)` (D1).
    pub c_p: f64,
    /// Exponent of (D1).
    pub k_p: f64,
    /// `P0 = min(P, max(1, round(c_0 ln d)))` (D2).
    pub c_0: f64,
    /// `alpha1 = 2^(c_a (ln ln d)^k_a)` (D3).
    pub c_a: f64,
    /// Exponent of (D3).
    pub k_a: f64,
    /// `alpha2 = alpha1 / max(1, c_2 (ln d)^k_2)` (D4).
    pub c_2: f64,
    /// Exponent of (D4).
    pub k_2: f64,
    /// `lr_head / lr = 1 / max(1, c_h (ln d)^k_h)` (D5).
    pub c_h: f64,
    /// Exponent of (D5).
    pub k_h: f64,
}

impl Default for PaperFamily {
    fn default() -> Self {
        PaperFamily {
            c_p: 2.0,
            k_p: 1.0,
            c_0: 0.5,
            c_a: 1.0,
            k_a: 1.0,
            c_2: 0.5,
            k_2: 1.0,
            c_h: 1.0,
            k_h: 1.0,
        }
    }
}

/// The values the paper family assigns at dimension `d`.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyPoint {
    /// `P`.
    pub patches: usize,
    /// `P0`.
    pub feature_patches: usize,
    /// `[alpha1, alpha2]`.
    pub alpha: [f64; 2],
    /// `lr_head / lr`.
    pub head_ratio: f64,
}

impl PaperFamily {
    /// The setting at dimension `d` (`derivations/scaling.md`, eqs. (D1)-(D5)).
    pub fn at(&self, dim: u64) -> FamilyPoint {
        let ld = (dim as f64).ln();
        let lld = ld.ln().max(0.0);
        let half = (self.c_p * ld.powf(self.k_p) / 2.0).ceil().max(1.0);
        let patches = 2 * half as usize;
        let feature_patches = ((self.c_0 * ld).round().max(1.0) as usize).min(patches);
        let alpha1 = 2f64.powf(self.c_a * lld.powf(self.k_a));
        let alpha2 = alpha1 / (self.c_2 * ld.powf(self.k_2)).max(1.0);
        let head_ratio = 1.0 / (self.c_h * ld.powf(self.k_h)).max(1.0);
        FamilyPoint {
            patches,
            feature_patches,
            alpha: [alpha1, alpha2],
            head_ratio,
        }
    }
}

impl Family {
    /// The name used in specs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Family::Fixed => "fixed",
            Family::Paper(_) => "paper",
        }
    }

    /// One line describing the family and its constants, for reports.
    pub fn describe(&self) -> String {
        match self {
            Family::Fixed => {
                "fixed (eq. (D0) of derivations/scaling.md): the base setting, only d varies".into()
            }
            Family::Paper(p) => format!(
                "paper (eqs. (D1)-(D5) of derivations/scaling.md): P = 2 ceil({} (ln d)^{} / 2), \
                 P0 = min(P, max(1, round({} ln d))), alpha1 = 2^({} (ln ln d)^{}), \
                 alpha2 = alpha1 / max(1, {} (ln d)^{}), lr_head/lr = 1 / max(1, {} (ln d)^{})",
                p.c_p, p.k_p, p.c_0, p.c_a, p.k_a, p.c_2, p.k_2, p.c_h, p.k_h
            ),
        }
    }

    /// Sets `d` in `config` and, for the paper family, `P`, `P0`, `alpha` and `lr_head`.
    pub fn apply(&self, dim: u64, config: &mut Config) {
        config.setting.dim = dim;
        if let Family::Paper(p) = self {
            let fp = p.at(dim);
            config.setting.patches = fp.patches;
            config.setting.feature_patches = fp.feature_patches;
            config.setting.alpha = fp.alpha;
            config.training.lr_head = config.training.lr * fp.head_ratio;
        }
    }
}

/// Which shard of a sweep to run: task `k` belongs to shard `k mod count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// `i` in `0..count`.
    pub index: u64,
    /// `n >= 1`.
    pub count: u64,
}

impl Shard {
    /// The whole sweep.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `i/n` with `0 <= i < n`.
    pub fn parse(text: &str) -> Result<Shard> {
        let bad = || {
            Error::invalid(
                "--shard",
                format!("expected i/n with 0 <= i < n, got \"{text}\""),
            )
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u64 = i.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether task `id` belongs to this shard.
    pub fn owns(&self, id: u64) -> bool {
        id % self.count == self.index
    }
}

/// The axis values of one grid point (`None`: the axis is not swept, the base value holds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// What the task runs.
    pub runner: String,
    /// `d`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dim: Option<u64>,
    /// `m`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub neurons: Option<usize>,
    /// Head mode.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub head: Option<HeadMode>,
    /// Normalization.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub normalization: Option<Normalization>,
    /// Stop-gradient.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stop_gradient: Option<bool>,
    /// `lr_head / lr`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub head_ratio: Option<f64>,
    /// `lr`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lr: Option<f64>,
    /// SGD batch size `N`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub batch: Option<usize>,
    /// `lr d`: the point's `lr` is this over `d`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lr_d: Option<f64>,
    /// `alpha1 / alpha2`: the point's `alpha2` is `alpha1` over this.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub alpha_ratio: Option<f64>,
    /// `P0`, the feature patches.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub feature_patches: Option<usize>,
}

/// The grid axes of a spec, each a list of values (empty: not swept).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Axes {
    /// `d`.
    pub dim: Vec<u64>,
    /// `m`.
    pub neurons: Vec<usize>,
    /// Head modes.
    pub head: Vec<HeadMode>,
    /// Normalizations.
    pub normalization: Vec<Normalization>,
    /// Stop-gradient values.
    pub stop_gradient: Vec<bool>,
    /// `lr_head / lr` values.
    pub head_ratio: Vec<f64>,
    /// `lr` values (`lr_head` keeps its ratio to `lr`).
    pub lr: Vec<f64>,
    /// SGD batch sizes.
    pub batch: Vec<usize>,
    /// Runners.
    pub runner: Vec<String>,
    /// `(lr, batch)` pairs, zipped (an alternative to the product of `lr` and `batch`).
    pub lr_batch: Vec<(f64, usize)>,
    /// `lr d` values: `lr = lr_d / d` at each `d` (an alternative to `lr`).
    pub lr_d: Vec<f64>,
    /// `alpha1 / alpha2` values (`alpha1` kept).
    pub alpha_ratio: Vec<f64>,
    /// `P0` values.
    pub feature_patches: Vec<usize>,
}

/// One task: a grid point, a seed and the resolved configuration.
#[derive(Clone, Debug)]
pub struct Task {
    /// The stable id: the position in [`Spec::tasks`].
    pub id: u64,
    /// The grid point.
    pub point: Point,
    /// The seed.
    pub seed: u64,
    /// The replicate: the spec's seed that [`Spec::seed_for_point`] maps to `seed` (the
    /// same under shared streams). Not part of the key; runners that measure a subset of
    /// the replicates (the sensitivity runners of [`crate::report::runner`]) read it.
    pub replicate: u64,
    /// The resolved configuration.
    pub config: Config,
    /// A hash of runner, configuration and seed (16 hex digits).
    pub key: String,
}

/// A parsed sweep spec.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The sweep's name (the results file is `<name>.jsonl`).
    pub name: String,
    /// The report that reads the results.
    pub report: String,
    /// The default runner.
    pub runner: String,
    /// The base configuration.
    pub base: Config,
    /// The scaling family.
    pub family: Family,
    /// `horizon = horizon_factor * d^2` (flow time).
    pub horizon_factor: f64,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Whether seed `s` is the same draw at every `d` ([`SeedStreams::Shared`]) or an
    /// independent one per `d` ([`SeedStreams::PerDim`], [`Spec::seed_for`]).
    pub seed_streams: SeedStreams,
    /// The grid.
    pub axes: Axes,
    /// The overrides of `--quick`: seeds and axes.
    pub quick: Option<(Option<Vec<u64>>, Axes)>,
    /// Free-form options for the report.
    pub options: toml::Table,
    /// The stem of the results file (default: the name). Specs with the same grid may share
    /// one results file: their tasks have the same keys, so each task runs once.
    pub results: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: Option<String>,
    report: Option<String>,
    runner: Option<String>,
    seeds: SeedsFile,
    seed_streams: Option<SeedStreams>,
    horizon_factor: Option<f64>,
    family: Option<FamilyFile>,
    axes: Option<AxesFile>,
    quick: Option<QuickFile>,
    options: Option<toml::Table>,
    base: Option<toml::Table>,
    base_config: Option<String>,
    results: Option<String>,
}

/// How a spec's seeds map to the runs' seeds across `d`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeedStreams {
    /// Seed `s` at every `d`: the initial states at two `d` are the same standard normal
    /// draw, scaled (paired on purpose; the report must then use paired statistics).
    #[default]
    Shared,
    /// An independent seed per `(d, s)` ([`Spec::seed_for`]): replicates at different `d`
    /// are independent, as a trend test in `d` needs.
    PerDim,
    /// An independent seed per grid point and `s` ([`Spec::seed_for_point`]): replicates in
    /// different cells are independent, as a trend test across any axis needs.
    PerCell,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SeedsFile {
    Count(u64),
    List(Vec<u64>),
}

impl SeedsFile {
    fn seeds(self) -> Vec<u64> {
        match self {
            SeedsFile::Count(n) => (0..n).collect(),
            SeedsFile::List(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FamilyFile {
    name: String,
    #[serde(flatten)]
    constants: toml::Table,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AxesFile {
    #[serde(default)]
    dim: Vec<f64>,
    #[serde(default)]
    neurons: Vec<usize>,
    #[serde(default)]
    head: Vec<HeadMode>,
    #[serde(default)]
    normalization: Vec<Normalization>,
    #[serde(default)]
    stop_gradient: Vec<bool>,
    #[serde(default)]
    head_ratio: Vec<f64>,
    #[serde(default)]
    lr: Vec<f64>,
    #[serde(default)]
    batch: Vec<usize>,
    #[serde(default)]
    runner: Vec<String>,
    #[serde(default)]
    lr_batch: Vec<(f64, usize)>,
    #[serde(default)]
    lr_d: Vec<f64>,
    #[serde(default)]
    alpha_ratio: Vec<f64>,
    #[serde(default)]
    feature_patches: Vec<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuickFile {
    seeds: Option<SeedsFile>,
    #[serde(flatten)]
    axes: AxesFile,
}

impl AxesFile {
    fn resolve(self) -> Result<Axes> {
        let dim = self
            .dim
            .iter()
            .map(|&d| {
                if d.fract() == 0.0 && (3.0..1.8e19).contains(&d) {
                    Ok(d as u64)
                } else {
                    Err(Error::invalid(
                        "axes.dim",
                        format!("expected integers >= 3, got {d}"),
                    ))
                }
            })
            .collect::<Result<Vec<u64>>>()?;
        let lr_given = !(self.lr.is_empty() && self.lr_batch.is_empty());
        if !self.lr_d.is_empty() && lr_given {
            return Err(Error::invalid(
                "axes.lr_d",
                "cannot be combined with axes.lr or axes.lr_batch (lr = lr_d / d)",
            ));
        }
        if let Some(x) = self.lr_d.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
            return Err(Error::invalid(
                "axes.lr_d",
                format!("must be positive and finite, got {x}"),
            ));
        }
        if let Some(x) = self
            .alpha_ratio
            .iter()
            .find(|x| !(x.is_finite() && **x > 0.0))
        {
            return Err(Error::invalid(
                "axes.alpha_ratio",
                format!("must be positive and finite, got {x}"),
            ));
        }
        Ok(Axes {
            dim,
            neurons: self.neurons,
            head: self.head,
            normalization: self.normalization,
            stop_gradient: self.stop_gradient,
            head_ratio: self.head_ratio,
            lr: self.lr,
            batch: self.batch,
            runner: self.runner,
            lr_batch: self.lr_batch,
            lr_d: self.lr_d,
            alpha_ratio: self.alpha_ratio,
            feature_patches: self.feature_patches,
        })
    }
}

/// FNV-1a, 64 bits: a platform-independent hash for task keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The `(lr, batch)` combinations: the `lr_batch` pairs if given, else the product of the
/// `lr` and `batch` axes.
fn lr_batch_pairs(a: &Axes) -> Vec<(Option<f64>, Option<usize>)> {
    if !a.lr_batch.is_empty() {
        return a
            .lr_batch
            .iter()
            .map(|&(l, b)| (Some(l), Some(b)))
            .collect();
    }
    let mut out = Vec::new();
    for lr in each(&a.lr) {
        for batch in each(&a.batch) {
            out.push((lr, batch));
        }
    }
    out
}

/// Calls `f` on each value of `axis`, or once with `None` when the axis is empty.
fn each<T: Clone>(axis: &[T]) -> Vec<Option<T>> {
    if axis.is_empty() {
        vec![None]
    } else {
        axis.iter().cloned().map(Some).collect()
    }
}

impl Spec {
    /// Reads a spec file; `base_config` paths are relative to the spec's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Spec> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, &e))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sweep".into());
        let dir = path.parent().unwrap_or(Path::new("."));
        Spec::parse(&text, &stem, dir)
    }

    /// Parses spec text; `default_name` is used when the spec has no `name`.
    pub fn parse(text: &str, default_name: &str, dir: &Path) -> Result<Spec> {
        let file: SpecFile =
            toml::from_str(text).map_err(|e| Error::parse(format!("spec {default_name}"), e))?;
        let base = match (file.base, file.base_config) {
            (Some(t), None) => {
                let text = toml::to_string(&t).map_err(|e| Error::parse("spec base", e))?;
                parse_config(&text)?
            }
            (None, Some(p)) => crate::config::load_config(dir.join(p))?,
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "base",
                    "give either [base] or base_config, not both",
                ))
            }
            (None, None) => {
                return Err(Error::Missing {
                    field: "base".into(),
                })
            }
        };
        let family = match file.family {
            None => Family::Fixed,
            Some(f) if f.name == "fixed" => {
                if !f.constants.is_empty() {
                    return Err(Error::invalid(
                        "family",
                        "the fixed family takes no constants",
                    ));
                }
                Family::Fixed
            }
            Some(f) if f.name == "paper" => {
                let text =
                    toml::to_string(&f.constants).map_err(|e| Error::parse("spec family", e))?;
                let p: PaperFamily =
                    toml::from_str(&text).map_err(|e| Error::parse("spec family", e))?;
                Family::Paper(p)
            }
            Some(f) => {
                return Err(Error::invalid(
                    "family.name",
                    format!("unknown family \"{}\", expected fixed or paper", f.name),
                ))
            }
        };
        let horizon_factor = file
            .horizon_factor
            .unwrap_or(crate::setting::Training::DEFAULT_HORIZON_FACTOR);
        if !(horizon_factor.is_finite() && horizon_factor > 0.0) {
            return Err(Error::invalid(
                "horizon_factor",
                format!("must be positive, got {horizon_factor}"),
            ));
        }
        let seeds = file.seeds.seeds();
        if seeds.is_empty() {
            return Err(Error::invalid("seeds", "no seeds"));
        }
        let quick = match file.quick {
            None => None,
            Some(q) => Some((q.seeds.map(SeedsFile::seeds), q.axes.resolve()?)),
        };
        let name = file.name.unwrap_or_else(|| default_name.to_string());
        if let Some(r) = &file.results {
            if r.is_empty() || r.contains(['/', '\\']) {
                return Err(Error::invalid(
                    "results",
                    format!("must be a file stem, got \"{r}\""),
                ));
            }
        }
        let spec = Spec {
            results: file.results.unwrap_or_else(|| name.clone()),
            report: file.report.unwrap_or_else(|| name.clone()),
            name,
            runner: file.runner.unwrap_or_else(|| "flow".into()),
            base,
            family,
            horizon_factor,
            seeds,
            seed_streams: file.seed_streams.unwrap_or_default(),
            axes: file.axes.unwrap_or_default().resolve()?,
            quick,
            options: file.options.unwrap_or_default(),
        };
        // Every task must resolve to a valid configuration.
        spec.tasks(false)?;
        spec.tasks(true)?;
        Ok(spec)
    }

    /// A variant of this spec for a report's negative control (its falsifier): the table
    /// `t` (the spec's `[options.falsifier]`) replaces the seeds, the axes and the `[quick]`
    /// grid, and optionally the runner and `horizon_factor`; base, family and options stay.
    /// The variant is named `<name>.falsifier`, and so is its results stem.
    ///
    /// # Examples
    ///
    /// ```
    /// use predhead::sweep::Spec;
    ///
    /// let spec = Spec::parse(
    ///     "report = \"theorem41\"\nseeds = 20\n[axes]\ndim = [1e2, 1e3]\n\
    ///      [base.setting]\ndim = 100\npatches = 8\nfeature_patches = 2\n\
    ///      alpha = [4.0, 1.0]\nnoise_std = 1.0\nneurons = 2\n\
    ///      [base.model]\nhead = \"identity-offdiag\"\nnormalization = \"batchnorm\"\n\
    ///      stop_gradient = true\n[base.training]\nlr = 1e-3\n",
    ///     "theorem41",
    ///     std::path::Path::new("."),
    /// )?;
    /// let t: toml::Table = toml::from_str("seeds = 6\n[axes]\ndim = [1e2]\nhead = [\"frozen\"]")?;
    /// let v = spec.variant(&t)?;
    /// assert_eq!(v.name, "theorem41.falsifier");
    /// assert_eq!(v.tasks(false)?.len(), 6);
    /// // An unknown key is refused.
    /// let bad: toml::Table = toml::from_str("seeds = 6\ncolour = 1")?;
    /// assert!(spec.variant(&bad).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// An unknown key, a bad axis value or a grid point without a valid configuration,
    /// named under `options.falsifier`.
    pub fn variant(&self, t: &toml::Table) -> Result<Spec> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct VariantFile {
            seeds: SeedsFile,
            runner: Option<String>,
            horizon_factor: Option<f64>,
            axes: Option<AxesFile>,
            quick: Option<QuickFile>,
        }
        let text = toml::to_string(t).map_err(|e| Error::parse("options.falsifier", e))?;
        let v: VariantFile =
            toml::from_str(&text).map_err(|e| Error::parse("options.falsifier", e))?;
        let mut out = self.clone();
        out.name = format!("{}.falsifier", self.name);
        out.results = out.name.clone();
        out.seeds = v.seeds.seeds();
        if out.seeds.is_empty() {
            return Err(Error::invalid("options.falsifier.seeds", "no seeds"));
        }
        if let Some(r) = v.runner {
            out.runner = r;
        }
        if let Some(h) = v.horizon_factor {
            if !(h.is_finite() && h > 0.0) {
                return Err(Error::invalid(
                    "options.falsifier.horizon_factor",
                    format!("must be positive, got {h}"),
                ));
            }
            out.horizon_factor = h;
        }
        out.axes = v.axes.unwrap_or_default().resolve()?;
        out.quick = match v.quick {
            None => None,
            Some(q) => Some((q.seeds.map(SeedsFile::seeds), q.axes.resolve()?)),
        };
        out.tasks(false)?;
        out.tasks(true)?;
        Ok(out)
    }

    /// The seeds and axes in effect (`quick`: with the `[quick]` overrides).
    pub fn grid(&self, quick: bool) -> (Vec<u64>, Axes) {
        let mut seeds = self.seeds.clone();
        let mut axes = self.axes.clone();
        if let (true, Some((qs, qa))) = (quick, &self.quick) {
            if let Some(s) = qs {
                seeds = s.clone();
            }
            macro_rules! over {
                ($($f:ident),*) => {$(if !qa.$f.is_empty() { axes.$f = qa.$f.clone(); })*};
            }
            over!(
                dim,
                neurons,
                head,
                normalization,
                stop_gradient,
                head_ratio,
                lr,
                batch,
                runner,
                lr_batch,
                lr_d,
                alpha_ratio,
                feature_patches
            );
        }
        (seeds, axes)
    }

    /// The configuration of a grid point (`derivations/scaling.md`): the base, then the
    /// family at `d`, the horizon `horizon_factor d^2`, then the other axes in order.
    pub fn config_for(&self, point: &Point) -> Result<Config> {
        let mut c = self.base.clone();
        let dim = point.dim.unwrap_or(c.setting.dim);
        self.family.apply(dim, &mut c);
        let d = dim as f64;
        c.training.horizon = self.horizon_factor * d * d;
        if let Some(m) = point.neurons {
            c.setting.neurons = m;
            if m >= 2 {
                // The base head is E = I for every m; nothing else depends on m.
            }
        }
        if let Some(h) = point.head {
            c.model.head = h;
        }
        if let Some(n) = point.normalization {
            c.model.normalization = n;
        }
        if let Some(s) = point.stop_gradient {
            c.model.stop_gradient = s;
        }
        if let Some(lr) = point.lr {
            let ratio = c.training.head_ratio();
            c.training.lr = lr;
            c.training.lr_head = lr * ratio;
        }
        if let Some(x) = point.lr_d {
            let ratio = c.training.head_ratio();
            c.training.lr = x / d;
            c.training.lr_head = c.training.lr * ratio;
        }
        if let Some(r) = point.head_ratio {
            c.training.lr_head = c.training.lr * r;
        }
        if let Some(b) = point.batch {
            c.training.batch = b;
        }
        if let Some(r) = point.alpha_ratio {
            c.setting.alpha[1] = c.setting.alpha[0] / r;
        }
        if let Some(p0) = point.feature_patches {
            c.setting.feature_patches = p0;
        }
        validate(&c)?;
        Ok(c)
    }

    /// The seed of the run for the spec's seed `seed` at dimension `d`: `seed` itself under
    /// [`SeedStreams::Shared`]; under [`SeedStreams::PerDim`], the 64-bit FNV-1a hash of the
    /// text `"<d>:<seed>"`, a distinct seed for every `(d, seed)` (its initial state is then
    /// an independent draw, reproducible with `predhead flow --seed <that seed>`).
    ///
    /// # Examples
    ///
    /// ```
    /// use predhead::sweep::Spec;
    ///
    /// let base = "seeds = 2\n[axes]\ndim = [1e2, 1e3]\n[base.setting]\ndim = 100\n\
    ///             patches = 8\nfeature_patches = 2\nalpha = [4.0, 1.0]\nnoise_std = 1.0\n\
    ///             neurons = 2\n[base.model]\nhead = \"identity-offdiag\"\n\
    ///             normalization = \"batchnorm\"\nstop_gradient = true\n\
    ///             [base.training]\nlr = 1e-3\n";
    /// let shared = Spec::parse(base, "t", std::path::Path::new("."))?;
    /// assert_eq!(shared.seed_for(1000, 1), 1);
    /// let text = format!("seed_streams = \"per-dim\"\n{base}");
    /// let per_dim = Spec::parse(&text, "t", std::path::Path::new("."))?;
    /// assert_ne!(per_dim.seed_for(100, 1), per_dim.seed_for(1000, 1));
    /// let seeds: Vec<u64> = per_dim.tasks(false)?.iter().map(|t| t.seed).collect();
    /// assert_eq!(seeds[0], per_dim.seed_for(100, 0));
    /// # Ok::<(), predhead::Error>(())
    /// ```
    pub fn seed_for(&self, d: u64, seed: u64) -> u64 {
        match self.seed_streams {
            SeedStreams::Shared => seed,
            SeedStreams::PerDim | SeedStreams::PerCell => fnv1a(format!("{d}:{seed}").as_bytes()),
        }
    }

    /// The seed of the run for the spec's seed `seed` at grid point `point`: under
    /// [`SeedStreams::PerCell`] the 64-bit FNV-1a hash of the point's JSON (runner and axis
    /// values), a colon and `seed`, a distinct seed for every cell and replicate; otherwise
    /// [`Spec::seed_for`] at the point's `d`.
    ///
    /// # Examples
    ///
    /// ```
    /// use predhead::sweep::Spec;
    ///
    /// let text = "seeds = 2\nseed_streams = \"per-cell\"\n[axes]\nalpha_ratio = [2.0, 10.0]\n\
    ///             [base.setting]\ndim = 100\npatches = 8\nfeature_patches = 2\n\
    ///             alpha = [4.0, 1.0]\nnoise_std = 1.0\nneurons = 2\n[base.model]\n\
    ///             head = \"identity-offdiag\"\nnormalization = \"batchnorm\"\n\
    ///             stop_gradient = true\n[base.training]\nlr = 1e-3\n";
    /// let spec = Spec::parse(text, "t", std::path::Path::new("."))?;
    /// let tasks = spec.tasks(false)?;
    /// assert_eq!(tasks.len(), 4);
    /// assert_eq!(tasks[2].config.setting.alpha, [4.0, 0.4]);
    /// assert_ne!(tasks[0].seed, tasks[2].seed); // seed 0 in two cells: independent draws
    /// # Ok::<(), predhead::Error>(())
    /// ```
    pub fn seed_for_point(&self, point: &Point, seed: u64) -> u64 {
        match self.seed_streams {
            SeedStreams::PerCell => {
                let cell = serde_json::to_string(point).unwrap_or_default();
                fnv1a(format!("{cell}:{seed}").as_bytes())
            }
            _ => self.seed_for(point.dim.unwrap_or(self.base.setting.dim), seed),
        }
    }

    /// The tasks, in their fixed order: runner, d, m, head, normalization, stop-gradient,
    /// `lr_head/lr`, `lr`, batch, `lr d`, `alpha1/alpha2`, `P0`, then seed innermost. Task
    /// ids are positions.
    pub fn tasks(&self, quick: bool) -> Result<Vec<Task>> {
        let (seeds, a) = self.grid(quick);
        let mut out = Vec::new();
        for point in points(&a, &self.runner) {
            let config = self.config_for(&point)?;
            let text = config.to_toml();
            for &replicate in &seeds {
                let seed = self.seed_for_point(&point, replicate);
                let h = fnv1a(format!("{}\n{seed}\n{text}", point.runner).as_bytes());
                out.push(Task {
                    id: out.len() as u64,
                    point: point.clone(),
                    seed,
                    replicate,
                    config: config.clone(),
                    key: format!("{h:016x}"),
                });
            }
        }
        Ok(out)
    }
}

/// The grid points of `a` in task order (the first axis outermost; `runner`: the spec's
/// runner when the axes have none).
fn points(a: &Axes, runner: &str) -> Vec<Point> {
    let runners = if a.runner.is_empty() {
        vec![runner.to_string()]
    } else {
        a.runner.clone()
    };
    let mut out: Vec<Point> = runners
        .into_iter()
        .map(|runner| Point {
            runner,
            ..Point::default()
        })
        .collect();
    // Each axis splits every point so far into one point per value, in order.
    fn split<T: Clone>(
        pts: Vec<Point>,
        axis: &[T],
        set: impl Fn(&mut Point, T) + Copy,
    ) -> Vec<Point> {
        pts.into_iter()
            .flat_map(|p| {
                each(axis).into_iter().map(move |v| {
                    let mut q = p.clone();
                    if let Some(v) = v {
                        set(&mut q, v);
                    }
                    q
                })
            })
            .collect()
    }
    out = split(out, &a.dim, |p, v| p.dim = Some(v));
    out = split(out, &a.neurons, |p, v| p.neurons = Some(v));
    out = split(out, &a.head, |p, v| p.head = Some(v));
    out = split(out, &a.normalization, |p, v| p.normalization = Some(v));
    out = split(out, &a.stop_gradient, |p, v| p.stop_gradient = Some(v));
    out = split(out, &a.head_ratio, |p, v| p.head_ratio = Some(v));
    out = split(out, &lr_batch_pairs(a), |p, (lr, batch)| {
        p.lr = lr;
        p.batch = batch;
    });
    out = split(out, &a.lr_d, |p, v| p.lr_d = Some(v));
    out = split(out, &a.alpha_ratio, |p, v| p.alpha_ratio = Some(v));
    split(out, &a.feature_patches, |p, v| p.feature_patches = Some(v))
}

/// One record of a results file (the line without its `"sha256"` seal, see [`file`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The task id.
    pub task: u64,
    /// The task key.
    pub key: String,
    /// The seed.
    pub seed: u64,
    /// The grid point.
    pub point: Point,
    /// What the runner returned, or `{"error": message}` when it failed.
    pub result: serde_json::Value,
}

/// What a task computes: a function of the task (configuration, seed, runner name) to a
/// JSON value. It must be deterministic.
pub trait TaskRunner: Sync {
    /// Runs one task.
    fn run(&self, task: &Task) -> Result<serde_json::Value>;

    /// Tasks with the same share key have the same result by construction (the runner
    /// knows its result does not depend on what tells them apart): [`run`] computes the
    /// first of them once and records that result for each. `None` (the default): the
    /// task runs on its own.
    fn share_key(&self, _task: &Task) -> Option<String> {
        None
    }
}

impl<F> TaskRunner for F
where
    F: Fn(&Task) -> Result<serde_json::Value> + Sync,
{
    fn run(&self, task: &Task) -> Result<serde_json::Value> {
        self(task)
    }
}

/// Options of [`run`].
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The results file (created if absent).
    pub results: PathBuf,
    /// The shard to run.
    pub shard: Shard,
    /// Use the `[quick]` grid.
    pub quick: bool,
    /// Run at most this many pending tasks, then stop (an interruption on purpose).
    pub max_tasks: Option<usize>,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
}

/// What [`run`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStats {
    /// Tasks in this shard.
    pub total: usize,
    /// Tasks found finished in the results file.
    pub skipped: usize,
    /// Tasks run now.
    pub ran: usize,
    /// Tasks still pending (non-zero only after `max_tasks`).
    pub remaining: usize,
}

/// A results file read back: its header and the parsed records with their exact line text.
#[derive(Clone, Debug, Default)]
pub struct Results {
    /// The header (`None` only for an absent or empty file).
    pub header: Option<Header>,
    /// `(record, line)` in file order; `line` has no newline.
    pub lines: Vec<(Record, String)>,
}

impl Results {
    /// The records, in file order.
    pub fn records(&self) -> Vec<&Record> {
        self.lines.iter().map(|(r, _)| r).collect()
    }
}

/// Reads a results file and checks every line ([`file::parse`]: header, checksums, schema).
/// An absent file reads as empty. A last line without its newline is a torn write: it is
/// ignored, and with `repair` cut off the file.
///
/// # Errors
/// A line that fails its checksum or its schema, or a file without header, is an error
/// that names the file and the line.
pub fn read_results(path: &Path, repair: bool) -> Result<Results> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Results::default()),
        Err(e) => return Err(Error::io(path, &e)),
    };
    let parsed = file::parse(path, &bytes)?;
    if parsed.complete < bytes.len() && repair {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, &e))?;
        f.set_len(parsed.complete as u64)
            .map_err(|e| Error::io(path, &e))?;
        f.sync_all().map_err(|e| Error::io(path, &e))?;
    }
    Ok(parsed.results)
}

/// Results of one spec, read and checked against it by [`read_checked`].
#[derive(Clone, Debug, Default)]
pub struct Checked {
    /// The header (`None`: no file yet).
    pub header: Option<Header>,
    /// The records, in task order, one per task.
    pub records: Vec<Record>,
    /// The number of tasks of the spec (its grid for `quick`).
    pub tasks: usize,
}

/// Reads the (unsharded) results file `path` of `spec` and checks it against the spec as
/// [`run`] does: the header names the spec's task list, every line passes its checksum and
/// schema, every record is a task of the spec. What `report` builds from.
///
/// # Errors
/// The first failed check, naming the file (and the line).
pub fn read_checked(spec: &Spec, quick: bool, path: &Path) -> Result<Checked> {
    let all = spec.tasks(quick)?;
    let want = Header::new(&spec.results, &all, Shard::ALL);
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(path, &e)),
    };
    let parsed = file::parse(path, &bytes)?;
    let lines = check(path, &parsed, &want, &all, Shard::ALL)?;
    let by_id: BTreeMap<u64, &Record> = parsed
        .results
        .lines
        .iter()
        .map(|(r, _)| (r.task, r))
        .collect();
    debug_assert_eq!(by_id.len(), lines.len());
    Ok(Checked {
        header: parsed.results.header,
        records: by_id.into_values().cloned().collect(),
        tasks: all.len(),
    })
}

/// Checks parsed results against the header `want` of a spec's shard and its tasks `all`:
/// the same task list and shard, every record a task of the shard with the spec's key, seed
/// and point, a task repeated only with the same line. Returns the lines by task id.
fn check(
    path: &Path,
    parsed: &file::Parsed,
    want: &Header,
    all: &[Task],
    shard: Shard,
) -> Result<BTreeMap<u64, String>> {
    let name = path.display().to_string();
    let mut lines = BTreeMap::new();
    let Some(h) = &parsed.results.header else {
        return Ok(lines);
    };
    if h.spec_sha256 != want.spec_sha256 || h.tasks != want.tasks {
        return Err(Error::parse(
            name,
            format!(
                "holds the results of {}, not of {}; nothing was changed, use another results file",
                h.describe(),
                want.describe()
            ),
        ));
    }
    if h.shard != want.shard {
        return Err(Error::parse(
            name,
            format!(
                "holds shard {} of {}, not shard {}; nothing was changed",
                h.shard,
                h.describe(),
                want.shard
            ),
        ));
    }
    for ((rec, line), n) in parsed.results.lines.iter().zip(&parsed.line_numbers) {
        let at = || format!("{name} line {n}");
        let task = usize::try_from(rec.task)
            .ok()
            .and_then(|k| all.get(k))
            .filter(|t| shard.owns(t.id));
        let Some(task) = task else {
            return Err(Error::parse(
                at(),
                format!(
                    "task {} is not a task of shard {} of this spec",
                    rec.task, want.shard
                ),
            ));
        };
        if task.key != rec.key || task.seed != rec.seed || task.point != rec.point {
            return Err(Error::parse(
                at(),
                format!(
                    "task {}: key, seed or grid point differ from the spec's task {}",
                    rec.task, task.key
                ),
            ));
        }
        if let Some(old) = lines.insert(rec.task, line.clone()) {
            if old != *line {
                return Err(Error::parse(
                    at(),
                    format!("task {} appears twice with different results", rec.task),
                ));
            }
        }
    }
    Ok(lines)
}

/// Writes `text` to `path` through a temporary file of this process in the same directory
/// (`PATH.PID.tmp`) and a rename.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, &e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| Error::io(&tmp, &e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, &e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, &e))
}

/// The text of a results file: the header line, then the record lines by task id.
fn file_text(header: &Header, lines: &BTreeMap<u64, String>) -> Result<String> {
    let mut out = header.line()?;
    out.push('\n');
    for line in lines.values() {
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// The progress bar of a sweep (hidden unless asked for and stderr is a terminal).
fn progress_bar(show: bool, len: usize, name: &str) -> indicatif::ProgressBar {
    if !(show && std::io::stderr().is_terminal()) {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta} left)")
    {
        b.set_style(style);
    }
    b.set_message(name.to_string());
    b
}

/// Runs the pending tasks of `spec` (its shard, its grid) with `runner` in parallel,
/// appending each result to `options.results` as soon as it is done.
///
/// The results file is locked for the whole run (a second sweep on it is refused), and
/// checked before anything is written ([`read_checked`]'s checks: header, checksums,
/// schema, tasks); a file that fails is refused and left as it was. A new file starts with
/// its header. A task whose runner fails is recorded with `{"error": message}`
/// (deterministic, so a re-run would fail the same way). When no task of the shard
/// remains, the file is rewritten sorted by task id (without the `partial` mark).
///
/// # Examples
/// Two seeds at two `d`: the first run runs the four tasks, a second run finds them done,
/// and the file holds each result once, by task id.
/// ```
/// use predhead::sweep::{read_results, run, RunOptions, Shard, Spec};
/// let spec = Spec::parse(
///     "report = \"theorem41\"\nseeds = 2\n[axes]\ndim = [1e2, 1e3]\n\
///      [base.setting]\ndim = 100\npatches = 8\nfeature_patches = 2\n\
///      alpha = [4.0, 1.0]\nnoise_std = 1.0\nneurons = 2\n\
///      [base.model]\nhead = \"identity-offdiag\"\nnormalization = \"batchnorm\"\n\
///      stop_gradient = true\n[base.training]\nlr = 1e-3\n",
///     "doc",
///     std::path::Path::new("."),
/// )?;
/// let dir = std::env::temp_dir().join(format!("predhead-doc-sweep-{}", std::process::id()));
/// let options = RunOptions {
///     results: dir.join("doc.jsonl"),
///     shard: Shard::parse("0/1")?,
///     quick: false,
///     max_tasks: None,
///     progress: false,
/// };
/// // A runner that reports the task's seed and d instead of integrating a flow.
/// let runner = |t: &predhead::sweep::Task| {
///     Ok(serde_json::json!({ "seed": t.seed, "dim": t.config.setting.dim }))
/// };
/// let first = run(&spec, &runner, &options)?;
/// assert_eq!((first.total, first.ran, first.remaining), (4, 4, 0));
/// let again = run(&spec, &runner, &options)?;
/// assert_eq!((again.skipped, again.ran), (4, 0));
/// let results = read_results(&options.results, false)?;
/// let tasks: Vec<u64> = results.records().iter().map(|r| r.task).collect();
/// assert_eq!(tasks, [0, 1, 2, 3]);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), predhead::Error>(())
/// ```
///
/// # Errors
/// A results file of another spec or shard, a line that fails its checks, a file locked by
/// another sweep, an I/O error. A results file of another spec is refused and left as it
/// was:
/// ```
/// # use predhead::sweep::{run, RunOptions, Shard, Spec};
/// # let text = |seeds: u32| format!(
/// #     "report = \"theorem41\"\nseeds = {seeds}\n[base.setting]\ndim = 100\npatches = 8\n\
/// #      feature_patches = 2\nalpha = [4.0, 1.0]\nnoise_std = 1.0\nneurons = 2\n\
/// #      [base.model]\nhead = \"identity-offdiag\"\nnormalization = \"batchnorm\"\n\
/// #      stop_gradient = true\n[base.training]\nlr = 1e-3\n");
/// # let here = std::path::Path::new(".");
/// let (two, three) = (Spec::parse(&text(2), "doc", here)?, Spec::parse(&text(3), "doc", here)?);
/// let dir = std::env::temp_dir().join(format!("predhead-doc-sweep-err-{}", std::process::id()));
/// let options = RunOptions {
///     results: dir.join("doc.jsonl"),
///     shard: Shard::parse("0/1")?,
///     quick: false,
///     max_tasks: None,
///     progress: false,
/// };
/// let runner = |_: &predhead::sweep::Task| Ok(serde_json::json!({}));
/// run(&two, &runner, &options)?;
/// let before = std::fs::read(&options.results).unwrap();
/// assert!(run(&three, &runner, &options).is_err());
/// assert_eq!(std::fs::read(&options.results).unwrap(), before);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), predhead::Error>(())
/// ```
pub fn run(spec: &Spec, runner: &dyn TaskRunner, options: &RunOptions) -> Result<RunStats> {
    let all = spec.tasks(options.quick)?;
    let shard = options.shard;
    let header = Header::new(&spec.results, &all, shard);
    let tasks: Vec<&Task> = all.iter().filter(|t| shard.owns(t.id)).collect();
    let path = &options.results;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
        }
    }
    let mut file = file::lock(path, true)?
        .ok_or_else(|| Error::invalid("results", format!("cannot create {}", path.display())))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| Error::io(path, &e))?;
    let parsed = file::parse(path, &bytes)?;
    let mut done = check(path, &parsed, &header, &all, shard)?;
    // Checked: from here on the file may change.
    if parsed.complete < bytes.len() {
        file.set_len(parsed.complete as u64)
            .map_err(|e| Error::io(path, &e))?;
    }
    if parsed.results.header.is_none() {
        let mut line = header.line()?;
        line.push('\n');
        file.write_all(line.as_bytes())
            .map_err(|e| Error::io(path, &e))?;
    }
    let pending: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| !done.contains_key(&t.id))
        .collect();
    let skipped = tasks.len() - pending.len();
    let budget = options.max_tasks.unwrap_or(usize::MAX).min(pending.len());
    let todo = &pending[..budget];

    let shared = Mutex::new((file, Vec::new()));
    let bar = progress_bar(options.progress, todo.len(), &spec.name);
    share_groups(runner, todo)
        .par_iter()
        .try_for_each(|group| -> Result<()> {
            let result = match runner.run(group[0]) {
                Ok(v) => v,
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            };
            for task in group {
                let rec = Record {
                    task: task.id,
                    key: task.key.clone(),
                    seed: task.seed,
                    point: task.point.clone(),
                    result: result.clone(),
                };
                let body = serde_json::to_string(&rec)
                    .map_err(|e| Error::numerical("result record", e.to_string()))?;
                let line = file::seal(&body);
                let mut g = shared
                    .lock()
                    .map_err(|_| Error::numerical("results file", "lock poisoned"))?;
                let (f, new) = &mut *g;
                f.write_all(format!("{line}\n").as_bytes())
                    .map_err(|e| Error::io(path, &e))?;
                f.flush().map_err(|e| Error::io(path, &e))?;
                new.push((task.id, line));
                bar.inc(1);
            }
            Ok(())
        })?;
    bar.finish_and_clear();
    let (file, new) = shared
        .into_inner()
        .map_err(|_| Error::numerical("results file", "lock poisoned"))?;

    let remaining = pending.len() - todo.len();
    if remaining == 0 {
        done.extend(new);
        write_atomic(path, &file_text(&header, &done)?)?;
    }
    // The lock is released when the (old) file closes, after the rename.
    drop(file);
    Ok(RunStats {
        total: tasks.len(),
        skipped,
        ran: todo.len(),
        remaining,
    })
}

/// `todo` in groups of tasks that share a result ([`TaskRunner::share_key`]), each group in
/// task order and the groups in the order of their first task; a task without a key is a
/// group of its own.
fn share_groups<'a>(runner: &dyn TaskRunner, todo: &[&'a Task]) -> Vec<Vec<&'a Task>> {
    let mut groups: Vec<Vec<&Task>> = Vec::new();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    for &task in todo {
        match runner.share_key(task) {
            Some(key) => match by_key.get(&key) {
                Some(&g) => groups[g].push(task),
                None => {
                    by_key.insert(key, groups.len());
                    groups.push(vec![task]);
                }
            },
            None => groups.push(vec![task]),
        }
    }
    groups
}

/// What [`merge_with`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeStats {
    /// Records written.
    pub records: usize,
    /// Tasks of the spec.
    pub tasks: u64,
    /// The shards (of `n`) that no input held.
    pub missing_shards: Vec<u64>,
    /// `n`, the shard count of the inputs.
    pub shards: u64,
    /// Whether tasks are missing (the output is marked partial).
    pub partial: bool,
}

/// [`merge_with`] of a complete set of shards (an incomplete one is refused).
///
/// # Errors
/// As [`merge_with`] without `allow_partial`.
pub fn merge(files: &[PathBuf], out: &Path) -> Result<usize> {
    Ok(merge_with(files, out, false)?.records)
}

/// An input of [`merge_with`]: its path, header and records.
type Input = (PathBuf, Header, file::Parsed);

/// Reads the inputs of a merge, each file once (the same file named twice counts once).
fn merge_inputs(files: &[PathBuf]) -> Result<Vec<Input>> {
    if files.is_empty() {
        return Err(Error::invalid("files", "no result files to merge"));
    }
    let mut seen = HashSet::new();
    let mut inputs = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| {
            Error::invalid("files", format!("{}: cannot read it: {e}", f.display()))
        })?;
        let canon = std::fs::canonicalize(f).map_err(|e| Error::io(f, &e))?;
        if !seen.insert(canon) {
            continue;
        }
        let parsed = file::parse(f, &bytes)?;
        let Some(h) = parsed.results.header.clone() else {
            return Err(Error::parse(
                f.display().to_string(),
                "empty: no header line, not a results file",
            ));
        };
        inputs.push((f.clone(), h, parsed));
    }
    Ok(inputs)
}

/// Joins the result files of the shards of one sweep into `out` (written atomically):
/// records sorted by task id, under the header of the unsharded sweep, so the merge of a
/// complete set is byte-identical to the unsharded run's file. A torn last line of an
/// input is ignored.
///
/// Refused: inputs of different specs (spec hashes) or shard counts, two files of one
/// shard, a record outside its file's shard, a line that fails its checks, and (unless
/// `allow_partial`) a set that lacks a shard or a task. With `allow_partial` such a set is
/// written with `"partial": true` in its header, and reports built from it say so.
///
/// # Examples
/// ```
/// use predhead::sweep::{self, RunOptions, Shard, Spec, Task};
/// let spec = Spec::parse(
///     "seeds = 4\n[base.setting]\ndim = 10\npatches = 4\nfeature_patches = 2\n\
///      alpha = [4.0, 1.0]\nnoise_std = 1.0\nneurons = 2\n[base.model]\n\
///      head = \"identity-offdiag\"\nnormalization = \"batchnorm\"\nstop_gradient = true\n",
///     "demo",
///     std::path::Path::new("."),
/// )?;
/// let runner = |t: &Task| -> predhead::Result<serde_json::Value> {
///     Ok(serde_json::json!({ "seed": t.seed }))
/// };
/// let dir = tempfile::tempdir().unwrap();
/// let mut shards = Vec::new();
/// for index in 0..2 {
///     let results = dir.path().join(format!("demo.shard-{index}-of-2.jsonl"));
///     let shard = Shard { index, count: 2 };
///     let options = RunOptions { results: results.clone(), shard, quick: false, max_tasks: None, progress: false };
///     sweep::run(&spec, &runner, &options)?;
///     shards.push(results);
/// }
/// let out = dir.path().join("demo.jsonl");
/// // A shard missing: refused, or with `allow_partial` written and marked partial.
/// assert!(sweep::merge_with(&shards[..1], &out, false).is_err());
/// assert!(sweep::merge_with(&shards[..1], &out, true)?.partial);
/// let m = sweep::merge_with(&shards, &out, false)?;
/// assert_eq!((m.records, m.partial), (4, false));
/// # Ok::<(), predhead::Error>(())
/// ```
///
/// # Errors
/// The first refused condition, naming the file (and line).
pub fn merge_with(files: &[PathBuf], out: &Path, allow_partial: bool) -> Result<MergeStats> {
    let inputs = merge_inputs(files)?;
    let (first_path, first, _) = &inputs[0];
    let count = first.shard()?.count;
    let mut by_shard: BTreeMap<u64, &PathBuf> = BTreeMap::new();
    let mut lines: BTreeMap<u64, String> = BTreeMap::new();
    for (p, h, parsed) in &inputs {
        if h.spec_sha256 != first.spec_sha256 || h.tasks != first.tasks {
            return Err(Error::invalid(
                "files",
                format!(
                    "{} holds the results of {}, {} those of {}: results of different specs \
                     are not merged",
                    p.display(),
                    h.describe(),
                    first_path.display(),
                    first.describe()
                ),
            ));
        }
        let sh = h.shard()?;
        if sh.count != count {
            return Err(Error::invalid(
                "files",
                format!(
                    "{} is shard {}, {} is shard {}: shards of different splits",
                    p.display(),
                    h.shard,
                    first_path.display(),
                    first.shard
                ),
            ));
        }
        if let Some(q) = by_shard.insert(sh.index, p) {
            return Err(Error::invalid(
                "files",
                format!(
                    "{} and {} both hold shard {}",
                    q.display(),
                    p.display(),
                    h.shard
                ),
            ));
        }
        for ((rec, line), n) in parsed.results.lines.iter().zip(&parsed.line_numbers) {
            let at = || format!("{} line {n}", p.display());
            if rec.task >= h.tasks || !sh.owns(rec.task) {
                return Err(Error::parse(
                    at(),
                    format!(
                        "task {} is not a task of shard {} of {}",
                        rec.task,
                        h.shard,
                        h.describe()
                    ),
                ));
            }
            if let Some(old) = lines.insert(rec.task, line.clone()) {
                if old != *line {
                    return Err(Error::parse(
                        at(),
                        format!("task {} appears twice with different results", rec.task),
                    ));
                }
            }
        }
    }
    let missing_shards: Vec<u64> = (0..count).filter(|i| !by_shard.contains_key(i)).collect();
    let partial = (lines.len() as u64) < first.tasks;
    if partial && !allow_partial {
        let shards = if missing_shards.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = missing_shards
                .iter()
                .map(|i| format!("{i}/{count}"))
                .collect();
            format!(", shard {} missing", list.join(", "))
        };
        return Err(Error::invalid(
            "files",
            format!(
                "incomplete: {} of the {} tasks of {}{shards}; nothing was written (merge \
                 anyway with --allow-partial: the output and its reports are marked partial)",
                lines.len(),
                first.tasks,
                first.describe()
            ),
        ));
    }
    let header = Header {
        shard: "0/1".into(),
        partial,
        ..first.clone()
    };
    let text = file_text(&header, &lines)?;
    // A sweep writing `out` holds its lock: refused, not overwritten under it.
    let guard = file::lock(out, false)?;
    write_atomic(out, &text)?;
    drop(guard);
    Ok(MergeStats {
        records: lines.len(),
        tasks: first.tasks,
        missing_shards,
        shards: count,
        partial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
seeds = 3
[axes]
dim = [1e2, 1e3]
head = ["identity-offdiag", "frozen"]
[quick]
seeds = [7]
dim = [50]
[base.setting]
dim = 10
patches = 4
feature_patches = 2
alpha = [4.0, 1.0]
noise_std = 1.0
neurons = 2
[base.model]
head = "identity-offdiag"
normalization = "batchnorm"
stop_gradient = true
"#;

    #[test]
    fn tasks_are_ordered_and_keyed() {
        let spec = Spec::parse(SPEC, "t", Path::new(".")).unwrap();
        let tasks = spec.tasks(false).unwrap();
        assert_eq!(tasks.len(), 2 * 2 * 3);
        assert_eq!(tasks[0].point.dim, Some(100));
        assert_eq!(tasks[0].point.head, Some(HeadMode::IdentityOffdiag));
        assert_eq!(tasks[3].point.head, Some(HeadMode::Frozen));
        assert_eq!(tasks[6].config.setting.dim, 1000);
        assert_eq!(tasks[6].config.training.horizon, 1e9);
        let keys: HashSet<&String> = tasks.iter().map(|t| &t.key).collect();
        assert_eq!(keys.len(), tasks.len());
        // Keys are stable across parses.
        let again = Spec::parse(SPEC, "t", Path::new(".")).unwrap();
        assert_eq!(again.tasks(false).unwrap()[5].key, tasks[5].key);
        let q = spec.tasks(true).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!((q[0].seed, q[0].config.setting.dim), (7, 50));
    }

    #[test]
    fn shards_and_bad_specs() {
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        assert!(Shard::parse("3/3").is_err());
        assert!(Shard::parse("1").is_err());
        assert!(Shard::parse("0/0").is_err());
        let bad = SPEC.replace("dim = [1e2, 1e3]", "dim = [2]");
        assert!(Spec::parse(&bad, "t", Path::new(".")).is_err());
        let bad = SPEC.replace("seeds = 3", "seeds = 3\nfoo = 1");
        assert!(Spec::parse(&bad, "t", Path::new(".")).is_err());
        let bad = SPEC.replace("[axes]", "[family]\nname = \"other\"\n[axes]");
        assert!(Spec::parse(&bad, "t", Path::new(".")).is_err());
    }

    /// A runner that counts its runs and keys its tasks by `key`.
    struct Counting {
        key: fn(&Task) -> Option<String>,
        runs: std::sync::atomic::AtomicUsize,
    }

    impl TaskRunner for Counting {
        fn run(&self, task: &Task) -> Result<serde_json::Value> {
            self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(serde_json::json!({ "seed": task.seed }))
        }
        fn share_key(&self, task: &Task) -> Option<String> {
            (self.key)(task)
        }
    }

    /// Tasks shared by seed (the only input of this runner's result) run once per seed and
    /// leave the same file as unshared ones. Falsifier: a key that ignores the seed records
    /// seed 0's result for every task, and the file differs.
    #[test]
    fn shared_tasks_run_once_and_write_the_same_file() {
        let spec = Spec::parse(SPEC, "t", Path::new(".")).unwrap();
        let dir = std::env::temp_dir().join(format!("predhead-share-{}", std::process::id()));
        let file_of = |name: &str, key: fn(&Task) -> Option<String>| {
            let runner = Counting {
                key,
                runs: 0.into(),
            };
            let options = RunOptions {
                results: dir.join(format!("{name}.jsonl")),
                shard: Shard::parse("0/1").unwrap(),
                quick: false,
                max_tasks: None,
                progress: false,
            };
            let stats = run(&spec, &runner, &options).unwrap();
            assert_eq!(stats.ran, 12);
            (
                runner.runs.into_inner(),
                std::fs::read(&options.results).unwrap(),
            )
        };
        let (alone, plain) = file_of("alone", |_| None);
        let (shared, file) = file_of("seed", |t| Some(t.seed.to_string()));
        let (wrong, bad) = file_of("wrong", |_| Some(String::new()));
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!((alone, shared, wrong), (12, 3, 1));
        assert_eq!(plain, file);
        assert_ne!(plain, bad);
    }

    /// The paper family at d = e^4: ln d = 4, ln ln d = ln 4.
    #[test]
    fn paper_family_by_hand() {
        let p = PaperFamily::default();
        let d = 4f64.exp().round() as u64; // 55
        let ld = (d as f64).ln();
        let fp = p.at(d);
        assert_eq!(fp.patches, 2 * (ld).ceil() as usize);
        assert_eq!(fp.feature_patches, (0.5 * ld).round() as usize);
        let a1 = 2f64.powf(ld.ln());
        assert!((fp.alpha[0] - a1).abs() < 1e-12);
        assert!((fp.alpha[1] - a1 / (0.5 * ld)).abs() < 1e-12);
        assert!((fp.head_ratio - 1.0 / ld).abs() < 1e-12);
    }
}
