//! The data distribution (Definition 3.1) and the augmentation (3.2), on counter-based
//! random streams.
//!
//! # Stream layout
//! Every random number is a pure function of `(seed, step, sample)`: the ChaCha8 key is
//! `(seed, step, DOMAIN)` and the 64-bit stream id is `sample * 2^20 + slot`, where slot 0
//! holds the discrete draws of the sample (label, sign, feature set `S`, view set `A`) and
//! slot `p + 1` holds the `d - 2` standard normals of the noise patch `p`. A batch is
//! therefore identical whatever the thread count and whatever order the samples are drawn
//! in, and the SGD driver can regenerate one patch's noise in its backward pass without
//! storing it.
//!
//! The noise is exactly orthogonal to `v1 = e_1` and `v2 = e_2`: coordinates 0 and 1 of a
//! noise patch are exactly zero, the others are `s * N(0, 1)`, so `xi_p ~ N(0, s^2 Pi)`.

use crate::setting::Setting;
use rand::distr::Distribution;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// Patch slots per sample in the stream id (`sample * SLOTS + slot`).
pub const SLOTS: u64 = 1 << 20;

/// Which view of an augmented sample: `X^(1)` (patches in `A`) or `X^(2)` (the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// `X^(1)`, the online view.
    First,
    /// `X^(2)`, the target view.
    Second,
}

/// Purpose tags that separate the key spaces of the different random draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Domain {
    /// Data samples (Definition 3.1 and (3.2)).
    Data = 0x6461_7461,
    /// The explicit initialization `W(0)` entries `~ N(0, 1/d)`.
    InitExplicit = 0x696e_6974,
    /// The exact reduced initialization (Bartlett decomposition).
    InitReduced = 0x7265_6475,
    /// The reduced SGD engine's projections and Wishart draws (`derivations/sgd_reduced.md`,
    /// Section 5).
    ReducedSgd = 0x7267_6473,
    /// Anything a test or report draws for itself.
    Aux = 0x6175_7800,
}

/// The ChaCha8 generator of `(seed, step, stream)` in the given domain.
pub fn stream_rng(domain: Domain, seed: u64, step: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&step.to_le_bytes());
    key[16..24].copy_from_slice(&(domain as u64).to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

/// The discrete part of one augmented sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draw {
    /// The label `l`: 0 for `v1`, 1 for `v2`.
    pub label: usize,
    /// The sign `eps`, `+1` or `-1`.
    pub sign: i8,
    /// `features[p]`: whether `p in S` (exactly `P0` true).
    pub features: Vec<bool>,
    /// `first_view[p]`: whether `p in A` (exactly `P/2` true).
    pub first_view: Vec<bool>,
}

impl Draw {
    /// The overlap `K = |S ∩ A|`.
    pub fn overlap(&self) -> usize {
        self.features
            .iter()
            .zip(&self.first_view)
            .filter(|(s, a)| **s && **a)
            .count()
    }

    /// Whether patch `p` is present in `view`.
    pub fn in_view(&self, p: usize, view: View) -> bool {
        match view {
            View::First => self.first_view[p],
            View::Second => !self.first_view[p],
        }
    }
}

/// A uniformly random subset of `[n]` of size `k`, as a membership mask (partial
/// Fisher-Yates).
pub fn random_subset<R: Rng + ?Sized>(rng: &mut R, n: usize, k: usize) -> Vec<bool> {
    let mut idx = vec![0; n];
    let mut mask = vec![false; n];
    random_subset_into(rng, k, &mut idx, &mut mask);
    mask
}

/// [`random_subset`] of `[n]`, `n = mask.len()`, written into `mask` with the work space
/// `idx` (length at least `n`): the same draws, without allocating.
pub fn random_subset_into<R: Rng + ?Sized>(
    rng: &mut R,
    k: usize,
    idx: &mut [usize],
    mask: &mut [bool],
) {
    let n = mask.len();
    let idx = &mut idx[..n];
    for (i, x) in idx.iter_mut().enumerate() {
        *x = i;
    }
    for i in 0..k {
        let j = rng.random_range(i..n);
        idx.swap(i, j);
    }
    // `idx` is a permutation of `[n]`: every entry of `mask` is written once, no zeroing.
    for (pos, &i) in idx.iter().enumerate() {
        if let Some(x) = mask.get_mut(i) {
            *x = pos < k;
        }
    }
}

/// The discrete draws of sample `index` at `step`: label, sign, `S` and `A`.
pub fn draw(setting: &Setting, seed: u64, step: u64, index: u64) -> Draw {
    draw_from(
        setting,
        &mut stream_rng(Domain::Data, seed, step, index * SLOTS),
    )
}

/// The discrete draws of one sample read from `rng`: label, sign, `S`, then `A` (the
/// reduced SGD engine reads them from its own per-sample stream).
pub fn draw_from<R: Rng + ?Sized>(setting: &Setting, rng: &mut R) -> Draw {
    let label = usize::from(rng.random::<bool>());
    let sign = if rng.random::<bool>() { 1 } else { -1 };
    let features = random_subset(rng, setting.patches, setting.feature_patches);
    let first_view = random_subset(rng, setting.patches, setting.half());
    Draw {
        label,
        sign,
        features,
        first_view,
    }
}

/// The generator of the noise of patch `patch` of sample `index` at `step`.
pub fn noise_rng(seed: u64, step: u64, index: u64, patch: usize) -> ChaCha8Rng {
    stream_rng(Domain::Data, seed, step, index * SLOTS + patch as u64 + 1)
}

/// Fills `out` (length `d`) with one noise patch `xi ~ N(0, s^2 Pi)`: `out[0] = out[1] = 0`
/// exactly, `out[i] = s * z_i` for `i >= 2`, the `z_i` read in order from `rng`.
pub fn fill_noise<R: Rng + ?Sized>(rng: &mut R, noise_std: f64, out: &mut [f64]) {
    out[0] = 0.0;
    out[1] = 0.0;
    for x in &mut out[2..] {
        let z: f64 = StandardNormal.sample(rng);
        *x = noise_std * z;
    }
}

/// One sample `X` with its augmentation: the patches `x[p*d .. (p+1)*d]` and the draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The discrete draws.
    pub draw: Draw,
    /// Patch-major `P x d` data: `X_p = eps alpha_l v_l` for `p in S`, `xi_p` otherwise.
    pub x: Vec<f64>,
    /// The dimension `d`.
    pub dim: usize,
}

impl Sample {
    /// Patch `p` of `X`.
    pub fn patch(&self, p: usize) -> &[f64] {
        &self.x[p * self.dim..(p + 1) * self.dim]
    }

    /// The view `X^(1)` or `X^(2)`, patch-major `P x d`, masked patches zero (eq. (3.2)).
    pub fn view(&self, view: View) -> Vec<f64> {
        let mut out = self.x.clone();
        for p in 0..self.draw.features.len() {
            if !self.draw.in_view(p, view) {
                out[p * self.dim..(p + 1) * self.dim].fill(0.0);
            }
        }
        out
    }
}

/// Draws sample `index` of `step` explicitly (needs `d` to fit in memory).
pub fn sample(setting: &Setting, seed: u64, step: u64, index: u64) -> Sample {
    let d = setting.dim as usize;
    let draw = draw(setting, seed, step, index);
    let mut x = vec![0.0; setting.patches * d];
    let feature_value = f64::from(draw.sign) * setting.alpha[draw.label];
    for p in 0..setting.patches {
        let patch = &mut x[p * d..(p + 1) * d];
        if draw.features[p] {
            patch[draw.label] = feature_value;
        } else {
            fill_noise(
                &mut noise_rng(seed, step, index, p),
                setting.noise_std,
                patch,
            );
        }
    }
    Sample { draw, x, dim: d }
}

/// Both views of `n` samples of `step`, drawn in parallel; identical for any thread count.
/// Returns `(x1, x2)`, each `n` patch-major `P x d` arrays.
pub fn batch_views(
    setting: &Setting,
    seed: u64,
    step: u64,
    n: usize,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    (0..n as u64)
        .into_par_iter()
        .map(|i| {
            let s = sample(setting, seed, step, i);
            (s.view(View::First), s.view(View::Second))
        })
        .unzip()
}

/// Definition 3.1 with augmentation (3.2) as a [`Distribution`]: each draw takes one `u64`
/// from the caller's generator as its seed and then follows the stream layout above.
#[derive(Clone, Debug)]
pub struct PatchDistribution {
    /// The setting sampled from.
    pub setting: Setting,
}

impl Distribution<Sample> for PatchDistribution {
    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Sample {
        let seed = rng.next_u64();
        sample(&self.setting, seed, 0, 0)
    }
}

/// `n` standard normals from the generator, in order.
pub fn standard_normals<R: Rng + ?Sized>(rng: &mut R, n: usize) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}
