//! The paper's setting (Section 3) and the model choices, as validated types.
//!
//! Notation (paper → field): `d` → [`Setting::dim`], `P` → [`Setting::patches`],
//! `P0` → [`Setting::feature_patches`], `alpha_1, alpha_2` → [`Setting::alpha`],
//! `s` (with the paper's `sigma^6 = 15 s^6`) → [`Setting::noise_std`], `m` → [`Setting::neurons`].

use serde::{Deserialize, Serialize};

/// The data distribution and network width: Definition 3.1 and Section 3.1 of the paper.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// Ambient dimension `d >= 3`. Stored as `u64` so that the flow can run at `d = 10^12`.
    pub dim: u64,
    /// Number of patches `P` (even, `P >= 2`).
    pub patches: usize,
    /// Number of feature patches `P0`, `1 <= P0 <= P`.
    pub feature_patches: usize,
    /// Feature strengths `[alpha_1, alpha_2]`, `alpha_1 >= alpha_2 > 0`.
    pub alpha: [f64; 2],
    /// Noise standard deviation `s`: `xi_p ~ N(0, s^2 Pi)`.
    pub noise_std: f64,
    /// Number of neurons `m`.
    pub neurons: usize,
}

impl Setting {
    /// Half the number of patches, `P/2`: the number of patches in each view.
    pub fn half(&self) -> usize {
        self.patches / 2
    }
}

/// Which entries of the prediction head `E` are trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadMode {
    /// Diagonal fixed at 1, off-diagonal trainable: the paper's head.
    IdentityOffdiag,
    /// `E` fixed, gradient 0 (Theorem 4.3).
    Frozen,
    /// Every entry trainable.
    Linear,
}

impl HeadMode {
    /// All modes, in the order used by tables.
    pub const ALL: [HeadMode; 3] = [
        HeadMode::IdentityOffdiag,
        HeadMode::Frozen,
        HeadMode::Linear,
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            HeadMode::IdentityOffdiag => "identity-offdiag",
            HeadMode::Frozen => "frozen",
            HeadMode::Linear => "linear",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == s)
    }

    /// Whether entry `(j, r)` of `E` is trained under this mode.
    pub fn trainable(self, j: usize, r: usize) -> bool {
        match self {
            HeadMode::IdentityOffdiag => j != r,
            HeadMode::Frozen => false,
            HeadMode::Linear => true,
        }
    }
}

/// The output normalization `Norm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalization {
    /// Batch normalization, eq. (3.1), no epsilon; population statistics in the population.
    Batchnorm,
    /// The identity.
    None,
}

impl Normalization {
    /// Both choices, in the order used by tables.
    pub const ALL: [Normalization; 2] = [Normalization::Batchnorm, Normalization::None];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Normalization::Batchnorm => "batchnorm",
            Normalization::None => "none",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == s)
    }
}

/// The model: head mode, normalization, stop-gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Model {
    /// Which entries of `E` are trained.
    pub head: HeadMode,
    /// Output normalization.
    pub normalization: Normalization,
    /// `true`: the target view's branch (and its statistics) is a constant in the gradient.
    pub stop_gradient: bool,
}

/// Training hyper-parameters, `[training]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Training {
    /// Learning rate `eta` of `W`. Default [`Training::DEFAULT_LR`].
    pub lr: f64,
    /// Learning rate `eta_E` of the head. Default `lr / 10`.
    pub lr_head: f64,
    /// Batch size `N` (sgd only). Default [`Training::DEFAULT_BATCH`].
    pub batch: usize,
    /// Number of SGD steps (sgd only). Default [`Training::DEFAULT_STEPS`].
    pub steps: u64,
    /// End of flow time `tau` (flow only). Default `1e3 * d^2`.
    pub horizon: f64,
}

impl Training {
    /// Default `lr`.
    pub const DEFAULT_LR: f64 = 1e-3;
    /// Default `lr_head / lr`.
    pub const DEFAULT_HEAD_RATIO: f64 = 0.1;
    /// Default `batch`.
    pub const DEFAULT_BATCH: usize = 1024;
    /// Default `steps`.
    pub const DEFAULT_STEPS: u64 = 10_000;
    /// Default horizon factor: `horizon = DEFAULT_HORIZON_FACTOR * d^2`.
    pub const DEFAULT_HORIZON_FACTOR: f64 = 1e3;

    /// The defaults for dimension `d`.
    pub fn defaults(dim: u64) -> Self {
        let d = dim as f64;
        Training {
            lr: Self::DEFAULT_LR,
            lr_head: Self::DEFAULT_LR * Self::DEFAULT_HEAD_RATIO,
            batch: Self::DEFAULT_BATCH,
            steps: Self::DEFAULT_STEPS,
            horizon: Self::DEFAULT_HORIZON_FACTOR * d * d,
        }
    }

    /// The head's speed relative to `W` in flow time: `lr_head / lr`.
    pub fn head_ratio(&self) -> f64 {
        self.lr_head / self.lr
    }
}

/// Thresholds of the phase events, `[phases]` (contract: "Phase events";
/// `derivations/phases.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// `t1`: some neuron reaches `|<w_j, v1>| >= t1`. Default 0.5.
    pub t1: f64,
    /// `t2`: the head's carried strong feature has RMS at least `t2` times the neuron's own.
    /// Default 10.
    pub t2: f64,
    /// `t3`: some neuron other than the strong one has `|<w_k, v2>| >= t3 * ||w_k||`.
    /// Default 0.9.
    pub t3: f64,
    /// `t_end`: `||E - I||_F <= t_end`. Default 1e-3.
    pub t_end: f64,
    /// Cosine with a feature that counts as "learned" in the outcome. Default 0.9.
    pub outcome_cos: f64,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            t1: 0.5,
            t2: 10.0,
            t3: 0.9,
            t_end: 1e-3,
            outcome_cos: 0.9,
        }
    }
}

/// A whole configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// `[setting]`.
    pub setting: Setting,
    /// `[model]`.
    pub model: Model,
    /// `[training]`.
    pub training: Training,
    /// `[phases]`.
    pub phases: Phases,
}
