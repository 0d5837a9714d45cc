//! Monte Carlo SGD on explicit data (paper, Section 3.2; `derivations/sgd.md`).
//!
//! Each step `t` draws a fresh batch of `N` augmented samples from the counter-based
//! streams of [`crate::data`] (stream step = `t`), evaluates the batch loss (3.3) with the
//! configured normalization (batch normalization over the batch, eq. (3.1)) and
//! stop-gradient, and updates `W <- W - lr grad_W`, `E <- E - lr_head grad_E` (trainable
//! entries only).
//!
//! # Streaming
//! The batch is never stored: memory is `O(N P m + d m)` per live block partial sum for the
//! regenerating kernel and `O(N m + m^2 d)` for the fused one, never `O(N P d)`; at most
//! about `threads * log2(MAX_BLOCKS)` partial sums are alive at once. Two kernels compute
//! the same gradient
//! (`derivations/sgd.md`, Sections 2 and 3):
//! - [`Kernel::Regenerate`]: the forward pass generates each noise patch from its stream,
//!   keeps only the `m` projections `y_pj = <w_j, X_p>` (`N P m` numbers), and discards the
//!   patch; the backward pass regenerates the same patch from the same stream and adds
//!   `3 y_pj^2 u_j X_p` to `grad w_j`, with `u_j` the upstream gradient of `f_j`.
//! - [`Kernel::Fused`]: one pass. Given the batch statistics, the upstream gradient of a
//!   sample is an affine function of the `2m` numbers `(f(X^(1)), f(X^(2)))` of that sample
//!   (eq. (G4)), so the pass accumulates `sum_i b(i) S_j(i)` for the `2m + 1` basis values
//!   `b(i) = 1, f_k(X^(i,1)), f_k(X^(i,2))`, with `S_j(i) = sum_p 3 y_pj^2 X_p`, and combines
//!   them with the affine coefficients at the end. Each noise coordinate is generated once.
//!
//! [`Kernel::Auto`] picks the fused kernel unless its `O(m^2 d)` accumulators per sample
//! would cost more than regenerating the noise.
//!
//! # Determinism
//! Samples are cut into blocks of [`block_size`]`(N)` samples (at least [`BLOCK`], at most
//! [`MAX_BLOCKS`] blocks; a function of `N` only, independent of the thread count);
//! each block produces its partial sums sequentially, and the partial sums are combined
//! along a fixed binary tree over the block indices (`rayon::join` at fixed split points).
//! Every floating-point operation and its order is therefore a function of `(N, seed,
//! step)` only: the result is bit-identical for any number of threads
//! (`tests/sgd_determinism.rs`).

use crate::data;
use crate::error::{Error, Result};
use crate::setting::{Config, Model, Normalization, Setting};
use crate::state::State;

/// The smallest number of samples per block of the fixed chunking.
pub const BLOCK: usize = 16;

/// The largest number of blocks: bounds the partial sums alive at once (about
/// `threads * log2(MAX_BLOCKS)` of them, `O(m^2 d)` each for the fused kernel).
pub const MAX_BLOCKS: usize = 64;

/// Samples per block for a batch of `n`: `max(BLOCK, ceil(n / MAX_BLOCKS))`, a function of
/// `n` only (never of the thread count), so the reduction tree is fixed.
pub fn block_size(n: usize) -> usize {
    BLOCK.max(n.div_ceil(MAX_BLOCKS))
}

/// Which streaming kernel computes the batch gradient (both give the same gradient up to
/// rounding; `derivations/sgd.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernel {
    /// [`Kernel::Fused`] when it is cheaper, else [`Kernel::Regenerate`].
    #[default]
    Auto,
    /// One pass; affine decomposition of the upstream gradient (eq. (G4)).
    Fused,
    /// Forward pass, then a backward pass that regenerates each noise patch.
    Regenerate,
}

impl Kernel {
    /// The kernel actually used for `m` neurons, `P` patches, stop-gradient `sg`: the fused
    /// kernel does `V m (2m + 1)` extra `d`-vector updates per sample (`V` = 1 with
    /// stop-gradient, else 2), the regenerating one `P` extra noise patches (about 16
    /// multiply-adds per coordinate each, a rough cost model from `benches/sgd.rs`); the
    /// cheaper one wins.
    pub fn resolve(self, neurons: usize, patches: usize, stop_gradient: bool) -> Kernel {
        match self {
            Kernel::Auto => {
                let views: u128 = if stop_gradient { 1 } else { 2 };
                let (m, p) = (neurons as u128, patches as u128);
                // In u128, saturating: sizes from the input cannot overflow the comparison.
                let fused = views
                    .saturating_mul(m)
                    .saturating_mul(m.saturating_mul(2) + 1);
                if fused <= 16 * p {
                    Kernel::Fused
                } else {
                    Kernel::Regenerate
                }
            }
            k => k,
        }
    }
}

/// The batch loss (3.3) and its gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchGradient {
    /// `L_S`, eq. (3.3).
    pub loss: f64,
    /// `grad_w[j]`: the gradient with respect to `w_j` (`d` numbers).
    pub grad_w: Vec<Vec<f64>>,
    /// `grad_e[j][r]`: the gradient with respect to `E[j][r]`, 0 where not trainable.
    pub grad_e: Vec<Vec<f64>>,
}

/// The batch statistics of one normalized output: `mean`, `sd`, and the two means of the
/// batch-norm backward pass (eq. (G2)). For `Norm = none`: mean 0, sd 1, and the backward
/// means are 0 (the identity's backward).
#[derive(Clone, Copy, Debug)]
struct Stat {
    mean: f64,
    sd: f64,
}

/// Everything the per-sample backward needs: the statistics of `F_j` (online) and `f_j`
/// on the second view (target), and the backward means `alpha_j = mean_i g_j(i)`,
/// `beta_j = mean_i g_j(i) Fh_j(i)`, `gamma_j = mean_i g_j(i) Gh_j(i)` with
/// `g_j(i) = (2/N)(Fh_j(i) - Gh_j(i))` (`derivations/sgd.md`, eqs. (G1)-(G3)).
///
/// `M` is the number of neurons when it is a compile-time constant (`1..=4`, the reduced
/// engine's [`crate::sized::with_neurons`]), or `0` for any `m`: the same operations in the
/// same order either way.
struct Head<'a, const M: usize> {
    e: &'a [Vec<f64>],
    /// `E` row-major (`m x m`).
    e_flat: Vec<f64>,
    /// `F_j(X^(i,1)) = sum_r E[j][r] f_r(X^(i,1))` at `i m + j`, computed once.
    online_values: Vec<f64>,
    n: usize,
    batchnorm: bool,
    stop_gradient: bool,
    online: Vec<Stat>,
    target: Vec<Stat>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    gamma: Vec<f64>,
}

fn stats(values: impl Fn(usize) -> f64, n: usize, quantity: &str) -> Result<Stat> {
    let mut s1 = 0.0;
    let mut s2 = 0.0;
    for i in 0..n {
        let z = values(i);
        s1 += z;
        s2 += z * z;
    }
    let mean = s1 / n as f64;
    let var = s2 / n as f64 - mean * mean;
    if !var.is_finite() {
        // The outputs overflow: the loss and the gradient become NaN, which the callers
        // report as non-finite (`batch_gradient`: an error; `run`: termination non-finite).
        return Ok(Stat { mean, sd: f64::NAN });
    }
    if var <= 0.0 {
        return Err(Error::numerical(
            quantity,
            format!("batch-norm variance is {var} (must be positive and finite)"),
        ));
    }
    Ok(Stat {
        mean,
        sd: var.sqrt(),
    })
}

impl<'a, const M: usize> Head<'a, M> {
    /// The statistics of the batch from `f1`, `f2` (`N x m`, sample-major).
    fn new(model: &Model, e: &'a [Vec<f64>], f1: &[f64], f2: &[f64], n: usize) -> Result<Self> {
        let m = crate::sized::width::<M>(e.len());
        let batchnorm = model.normalization == Normalization::Batchnorm;
        let e_flat: Vec<f64> = e.iter().flat_map(|row| row[..m].iter().copied()).collect();
        let ef = &e_flat[..m * m];
        let mut online_values = Vec::with_capacity(n * m);
        for f1 in f1[..n * m].chunks_exact(m) {
            for row in ef.chunks_exact(m) {
                let mut z = 0.0;
                for (e, x) in row.iter().zip(f1) {
                    z += e * x;
                }
                online_values.push(z);
            }
        }
        let fo = &online_values[..n * m];
        let f2 = &f2[..n * m];
        let identity = Stat { mean: 0.0, sd: 1.0 };
        let mut online = vec![identity; m];
        let mut target = vec![identity; m];
        if batchnorm {
            for j in 0..m {
                online[j] = stats(|i| fo[i * m + j], n, &format!("F_{j}"))?;
                target[j] = stats(|i| f2[i * m + j], n, &format!("f_{j}(X^(2))"))?;
            }
        }
        let mut alpha = vec![0.0; m];
        let mut beta = vec![0.0; m];
        let mut gamma = vec![0.0; m];
        if batchnorm {
            let two_n = 2.0 / n as f64;
            for j in 0..m {
                let (o, t) = (online[j], target[j]);
                let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
                for (fo, f2) in fo.chunks_exact(m).zip(f2.chunks_exact(m)) {
                    let fh = (fo[j] - o.mean) / o.sd;
                    let gh = (f2[j] - t.mean) / t.sd;
                    let g = two_n * (fh - gh);
                    a += g;
                    b += g * fh;
                    c += g * gh;
                }
                alpha[j] = a / n as f64;
                beta[j] = b / n as f64;
                gamma[j] = c / n as f64;
            }
        }
        Ok(Head {
            e,
            e_flat,
            online_values,
            n,
            batchnorm,
            stop_gradient: model.stop_gradient,
            online,
            target,
            alpha,
            beta,
            gamma,
        })
    }

    fn neurons(&self) -> usize {
        crate::sized::width::<M>(self.e.len())
    }

    /// The loss contribution of sample `i` (target-view outputs `f2`) and its upstream
    /// gradients: `dF[j]` (of `F_j`), `u1[r]` (of `f_r(X^(1))`) and `u2[j]` (of
    /// `f_j(X^(2))`, zero with stop-gradient), eqs. (G2)-(G3), computed directly.
    fn backward(
        &self,
        i: usize,
        f2: &[f64],
        df: &mut [f64],
        u1: &mut [f64],
        u2: &mut [f64],
    ) -> f64 {
        let m = self.neurons();
        let two_n = 2.0 / self.n as f64;
        let fo = &self.online_values[i * m..(i + 1) * m];
        let (f2, df, u1, u2) = (&f2[..m], &mut df[..m], &mut u1[..m], &mut u2[..m]);
        let (online, target) = (&self.online[..m], &self.target[..m]);
        let (alpha, beta, gamma) = (&self.alpha[..m], &self.beta[..m], &self.gamma[..m]);
        let mut loss = 0.0;
        for j in 0..m {
            let (o, t) = (online[j], target[j]);
            let (fh, gh) = ((fo[j] - o.mean) / o.sd, (f2[j] - t.mean) / t.sd);
            let diff = fh - gh;
            loss += diff * diff;
            let g = two_n * diff;
            if self.batchnorm {
                df[j] = (g - alpha[j] - beta[j] * fh) / o.sd;
                u2[j] = if self.stop_gradient {
                    0.0
                } else {
                    (-g + alpha[j] + gamma[j] * gh) / t.sd
                };
            } else {
                df[j] = g;
                u2[j] = if self.stop_gradient { 0.0 } else { -g };
            }
        }
        let ef = &self.e_flat[..m * m];
        for (r, u) in u1.iter_mut().enumerate() {
            let mut acc = 0.0;
            for (row, d) in ef.chunks_exact(m).zip(df.iter()) {
                acc += row[r] * d;
            }
            *u = acc;
        }
        loss
    }

    /// The affine coefficients of eq. (G4): `coef[(v m + j)(2m + 1) + b]` such that the
    /// upstream gradient of `f_j(X^(i,v))` is `sum_b coef[..b] basis_b(i)` with
    /// `basis = (1, f(X^(i,1)), f(X^(i,2)))`.
    fn affine(&self) -> Vec<f64> {
        let m = self.neurons();
        let nb = 2 * m + 1;
        let views = if self.stop_gradient { 1 } else { 2 };
        let two_n = 2.0 / self.n as f64;
        // dF_j = sum_k p_jk f1_k + q_j f2_j + c_j  (eq. (G4a)).
        let mut p = vec![vec![0.0; m]; m];
        let mut q = vec![0.0; m];
        let mut c = vec![0.0; m];
        // u2_j = sum_k pp_jk f1_k + qq_j f2_j + cc_j  (eq. (G4b)).
        let mut pp = vec![vec![0.0; m]; m];
        let mut qq = vec![0.0; m];
        let mut cc = vec![0.0; m];
        for j in 0..m {
            let o = self.online[j];
            let t = self.target[j];
            if self.batchnorm {
                let lam = (two_n - self.beta[j]) / o.sd;
                for k in 0..m {
                    p[j][k] = lam * self.e[j][k] / o.sd;
                }
                q[j] = -two_n / (o.sd * t.sd);
                c[j] = -lam * o.mean / o.sd + two_n * t.mean / (o.sd * t.sd) - self.alpha[j] / o.sd;
                let kap = (two_n + self.gamma[j]) / t.sd;
                for k in 0..m {
                    pp[j][k] = -two_n * self.e[j][k] / (o.sd * t.sd);
                }
                qq[j] = kap / t.sd;
                cc[j] = two_n * o.mean / (o.sd * t.sd) - kap * t.mean / t.sd + self.alpha[j] / t.sd;
            } else {
                for k in 0..m {
                    p[j][k] = two_n * self.e[j][k];
                    pp[j][k] = -two_n * self.e[j][k];
                }
                q[j] = -two_n;
                qq[j] = two_n;
            }
        }
        let mut coef = vec![0.0; views * m * nb];
        for r in 0..m {
            // u1_r = sum_j E[j][r] dF_j.
            let base = r * nb;
            for j in 0..m {
                let ejr = self.e[j][r];
                coef[base] += ejr * c[j];
                for k in 0..m {
                    coef[base + 1 + k] += ejr * p[j][k];
                }
                coef[base + 1 + m + j] += ejr * q[j];
            }
        }
        if views == 2 {
            for j in 0..m {
                let base = (m + j) * nb;
                coef[base] = cc[j];
                for k in 0..m {
                    coef[base + 1 + k] = pp[j][k];
                }
                coef[base + 1 + m + j] = qq[j];
            }
        }
        coef
    }
}

/// `sum_i a_i b_i` with eight interleaved partial sums (a fixed order, vectorizable).
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y += a x`.
#[inline]
fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Combines the leaves `leaf(lo..hi)` along the fixed binary tree that splits every range
/// at its midpoint: the same operations in the same order whatever the thread count.
fn tree_reduce<T: Send>(
    lo: usize,
    hi: usize,
    leaf: &(impl Fn(usize) -> T + Sync),
    merge: &(impl Fn(T, T) -> T + Sync),
) -> T {
    if hi - lo == 1 {
        leaf(lo)
    } else {
        let mid = lo + (hi - lo) / 2;
        let (a, b) = rayon::join(
            || tree_reduce(lo, mid, leaf, merge),
            || tree_reduce(mid, hi, leaf, merge),
        );
        merge(a, b)
    }
}

/// Adds `b` into `a` entry by entry.
fn add_into(a: &mut [f64], b: &[f64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// The batch problem of one step: the setting, model, state and batch address.
struct Job<'a> {
    setting: &'a Setting,
    model: &'a Model,
    state: &'a State,
    seed: u64,
    step: u64,
    n: usize,
    d: usize,
}

impl Job<'_> {
    fn blocks(&self) -> usize {
        self.n.div_ceil(block_size(self.n))
    }

    fn block_range(&self, b: usize) -> std::ops::Range<usize> {
        let size = block_size(self.n);
        b * size..((b + 1) * size).min(self.n)
    }

    /// Visits the patches of sample `i` in order: `visit(p, view, patch)` where `patch` is
    /// either `Feature(coordinate, value)` or `Noise(buffer)` (coordinates 2..d of the
    /// noise patch, generated into `zbuf` from the patch's own stream).
    fn for_each_patch(
        &self,
        i: usize,
        zbuf: &mut [f64],
        mut visit: impl FnMut(usize, usize, Patch<'_>),
    ) {
        let draw = data::draw(self.setting, self.seed, self.step, i as u64);
        let value = f64::from(draw.sign) * self.setting.alpha[draw.label];
        for p in 0..self.setting.patches {
            let view = usize::from(!draw.first_view[p]);
            if draw.features[p] {
                visit(p, view, Patch::Feature(draw.label, value));
            } else {
                let mut rng = data::noise_rng(self.seed, self.step, i as u64, p);
                data::fill_noise(&mut rng, self.setting.noise_std, zbuf);
                visit(p, view, Patch::Noise(&zbuf[2..]));
            }
        }
    }
}

/// One patch as the kernels see it.
enum Patch<'a> {
    /// `X_p = value e_coordinate`.
    Feature(usize, f64),
    /// Coordinates `2..d` of a noise patch (coordinates 0 and 1 are zero).
    Noise(&'a [f64]),
}

/// The batch loss (3.3) and its gradient at `state`, on the `n` samples of `(seed, step)`
/// of the streams of [`crate::data`], computed by `kernel` without storing the batch.
/// Equal (up to rounding) to the reference batch network on
/// `data::batch_views(setting, seed, step, n)`; bit-identical for any thread count.
/// Errors when a batch-norm variance is zero, or the loss or the gradient is not finite
/// (overflow).
pub fn batch_gradient(
    setting: &Setting,
    model: &Model,
    state: &State,
    seed: u64,
    step: u64,
    n: usize,
    kernel: Kernel,
) -> Result<BatchGradient> {
    let g = batch_gradient_unchecked(setting, model, state, seed, step, n, kernel)?;
    if let Some(what) = g.non_finite() {
        return Err(Error::numerical(
            "batch",
            format!("the {what} is not finite (overflow)"),
        ));
    }
    Ok(g)
}

impl BatchGradient {
    /// What is not finite: `"batch loss"`, `"gradient of W"` or `"gradient of E"`.
    fn non_finite(&self) -> Option<&'static str> {
        if !self.loss.is_finite() {
            Some("batch loss")
        } else if self.grad_w.iter().flatten().any(|g| !g.is_finite()) {
            Some("gradient of W")
        } else if self.grad_e.iter().flatten().any(|g| !g.is_finite()) {
            Some("gradient of E")
        } else {
            None
        }
    }
}

/// [`batch_gradient`] without the finiteness check of its result: overflowing batch
/// outputs give a NaN loss and gradient instead of an error (a zero variance is still one).
fn batch_gradient_unchecked(
    setting: &Setting,
    model: &Model,
    state: &State,
    seed: u64,
    step: u64,
    n: usize,
    kernel: Kernel,
) -> Result<BatchGradient> {
    let m = setting.neurons;
    let d = usize::try_from(setting.dim)
        .map_err(|_| Error::invalid("setting.dim", "too large for explicit SGD"))?;
    if state.neurons() != m || state.dim() != d || state.e.len() != m {
        return Err(Error::invalid(
            "state",
            format!(
                "shape {} x {} does not match the setting (neurons = {m}, dim = {d})",
                state.neurons(),
                state.dim()
            ),
        ));
    }
    if n < 1 {
        return Err(Error::invalid("training.batch", "must be positive, got 0"));
    }
    let job = Job {
        setting,
        model,
        state,
        seed,
        step,
        n,
        d,
    };
    match kernel.resolve(m, setting.patches, model.stop_gradient) {
        Kernel::Regenerate => regenerate(&job),
        _ => fused(&job),
    }
}

/// The loss, `grad_E` and upstream gradients from the per-sample encoder outputs.
struct HeadPass {
    loss: f64,
    grad_e: Vec<Vec<f64>>,
}

fn head_pass(
    job: &Job<'_>,
    head: &Head<'_, 0>,
    f1: &[f64],
    f2: &[f64],
    mut per_sample: impl FnMut(usize, &[f64], &[f64]),
) -> HeadPass {
    let m = head.neurons();
    let mut df = vec![0.0; m];
    let mut u1 = vec![0.0; m];
    let mut u2 = vec![0.0; m];
    let mut loss = 0.0;
    let mut grad_e = vec![vec![0.0; m]; m];
    for i in 0..job.n {
        let a = &f1[i * m..(i + 1) * m];
        let b = &f2[i * m..(i + 1) * m];
        loss += head.backward(i, b, &mut df, &mut u1, &mut u2);
        for j in 0..m {
            for r in 0..m {
                grad_e[j][r] += df[j] * a[r];
            }
        }
        per_sample(i, &u1, &u2);
    }
    for j in 0..m {
        for r in 0..m {
            if !job.model.head.trainable(j, r) {
                grad_e[j][r] = 0.0;
            }
        }
    }
    HeadPass {
        loss: loss / job.n as f64,
        grad_e,
    }
}

/// The head's part of a step from the per-sample encoder outputs alone (the reduced engine
/// shares it: `derivations/sgd_reduced.md`, eq. (R2)).
pub(crate) struct Upstream {
    /// The batch loss (3.3).
    pub(crate) loss: f64,
    /// `dL_S/dE[j][r]`, zero where not trainable.
    pub(crate) grad_e: Vec<Vec<f64>>,
}

/// The per-sample arrays of [`upstream`], kept by the caller from step to step.
#[derive(Clone, Debug, Default)]
pub(crate) struct UpstreamScratch {
    /// `u[i 2m + v m + j]`: the upstream gradient of `f_j(X^(i, v+1))` (eqs. (G1)-(G3)).
    pub(crate) u: Vec<f64>,
}

/// [`Upstream`] of a batch of `n` samples with outputs `f1`, `f2` (`n x m`, sample-major)
/// under `model` and head `e`; the per-sample upstream gradients go to `scratch.u`. Errors
/// when a batch-norm variance is zero or not finite. `M` as in [`Head`].
pub(crate) fn upstream<const M: usize>(
    model: &Model,
    e: &[Vec<f64>],
    f1: &[f64],
    f2: &[f64],
    n: usize,
    scratch: &mut UpstreamScratch,
) -> Result<Upstream> {
    let m = crate::sized::width::<M>(e.len());
    let head = Head::<M>::new(model, e, f1, f2, n)?;
    let mut df = vec![0.0; m];
    // Every entry of `u` is written below.
    let u = &mut scratch.u;
    u.resize(n * 2 * m, 0.0);
    let mut loss = 0.0;
    let mut grad_e = vec![0.0; m * m];
    let samples = f1[..n * m].chunks_exact(m).zip(f2.chunks_exact(m));
    for (i, ((a, b), ui)) in samples.zip(u.chunks_exact_mut(2 * m)).enumerate() {
        let (u1, u2) = ui.split_at_mut(m);
        loss += head.backward(i, b, &mut df, u1, u2);
        for (row, dj) in grad_e[..m * m].chunks_exact_mut(m).zip(&df[..m]) {
            for (g, ar) in row.iter_mut().zip(&a[..m]) {
                *g += dj * ar;
            }
        }
    }
    let grad_e = grad_e
        .chunks_exact(m)
        .enumerate()
        .map(|(j, row)| {
            let keep = |(r, &g): (usize, &f64)| if model.head.trainable(j, r) { g } else { 0.0 };
            row.iter().enumerate().map(keep).collect()
        })
        .collect();
    Ok(Upstream {
        loss: loss / n as f64,
        grad_e,
    })
}

/// The one-pass kernel (`derivations/sgd.md`, Section 3).
fn fused(job: &Job<'_>) -> Result<BatchGradient> {
    let m = job.setting.neurons;
    let d = job.d;
    let nb = 2 * m + 1;
    let views = if job.model.stop_gradient { 1 } else { 2 };
    let w = &job.state.w;
    // Leaf: (accumulators T[v][j][b] (d each), f1 and f2 of the block's samples).
    let leaf = |b: usize| -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let range = job.block_range(b);
        let mut acc = vec![0.0; views * m * nb * d];
        let mut s = vec![0.0; views * m * d];
        let mut zbuf = vec![0.0; d];
        let mut y = vec![0.0; m];
        let mut f1 = Vec::with_capacity(range.len() * m);
        let mut f2 = Vec::with_capacity(range.len() * m);
        let mut f = vec![0.0; 2 * m];
        for i in range {
            s.fill(0.0);
            f.fill(0.0);
            job.for_each_patch(i, &mut zbuf, |_, view, patch| {
                let grad = view < views;
                match patch {
                    Patch::Feature(l, x) => {
                        for j in 0..m {
                            let yj = w[j][l] * x;
                            f[view * m + j] += yj * yj * yj;
                            if grad {
                                s[(view * m + j) * d + l] += 3.0 * yj * yj * x;
                            }
                        }
                    }
                    Patch::Noise(z) => {
                        for j in 0..m {
                            y[j] = dot(&w[j][2..], z);
                        }
                        for j in 0..m {
                            let yj = y[j];
                            f[view * m + j] += yj * yj * yj;
                            if grad {
                                let row = &mut s[(view * m + j) * d + 2..(view * m + j + 1) * d];
                                axpy(row, 3.0 * yj * yj, z);
                            }
                        }
                    }
                }
            });
            f1.extend_from_slice(&f[..m]);
            f2.extend_from_slice(&f[m..]);
            for v in 0..views {
                for j in 0..m {
                    let sv = &s[(v * m + j) * d..(v * m + j + 1) * d];
                    let base = (v * m + j) * nb;
                    axpy(&mut acc[base * d..(base + 1) * d], 1.0, sv);
                    for k in 0..2 * m {
                        let a = &mut acc[(base + 1 + k) * d..(base + 2 + k) * d];
                        axpy(a, f[k], sv);
                    }
                }
            }
        }
        (acc, f1, f2)
    };
    let merge = |mut a: (Vec<f64>, Vec<f64>, Vec<f64>), b: (Vec<f64>, Vec<f64>, Vec<f64>)| {
        add_into(&mut a.0, &b.0);
        a.1.extend_from_slice(&b.1);
        a.2.extend_from_slice(&b.2);
        a
    };
    let (acc, f1, f2) = tree_reduce(0, job.blocks(), &leaf, &merge);
    let head = Head::<0>::new(job.model, &job.state.e, &f1, &f2, job.n)?;
    let hp = head_pass(job, &head, &f1, &f2, |_, _, _| {});
    let coef = head.affine();
    let mut grad_w = vec![vec![0.0; d]; m];
    for v in 0..views {
        for j in 0..m {
            for b in 0..nb {
                let idx = (v * m + j) * nb + b;
                axpy(&mut grad_w[j], coef[idx], &acc[idx * d..(idx + 1) * d]);
            }
        }
    }
    Ok(BatchGradient {
        loss: hp.loss,
        grad_w,
        grad_e: hp.grad_e,
    })
}

/// The two-pass kernel (`derivations/sgd.md`, Section 2).
fn regenerate(job: &Job<'_>) -> Result<BatchGradient> {
    let m = job.setting.neurons;
    let pp = job.setting.patches;
    let d = job.d;
    let w = &job.state.w;
    // Forward leaf: (f1, f2, y) of the block's samples, y[(i P + p) m + j].
    let forward = |b: usize| -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let range = job.block_range(b);
        let mut zbuf = vec![0.0; d];
        let mut f1 = vec![0.0; range.len() * m];
        let mut f2 = vec![0.0; range.len() * m];
        let mut ys = vec![0.0; range.len() * pp * m];
        for (li, i) in range.enumerate() {
            job.for_each_patch(i, &mut zbuf, |p, view, patch| {
                let f = if view == 0 { &mut f1 } else { &mut f2 };
                for j in 0..m {
                    let yj = match patch {
                        Patch::Feature(l, x) => w[j][l] * x,
                        Patch::Noise(z) => dot(&w[j][2..], z),
                    };
                    ys[(li * pp + p) * m + j] = yj;
                    f[li * m + j] += yj * yj * yj;
                }
            });
        }
        (f1, f2, ys)
    };
    let concat = |mut a: (Vec<f64>, Vec<f64>, Vec<f64>), b: (Vec<f64>, Vec<f64>, Vec<f64>)| {
        a.0.extend_from_slice(&b.0);
        a.1.extend_from_slice(&b.1);
        a.2.extend_from_slice(&b.2);
        a
    };
    let (f1, f2, ys) = tree_reduce(0, job.blocks(), &forward, &concat);
    let head = Head::<0>::new(job.model, &job.state.e, &f1, &f2, job.n)?;
    let mut u = vec![0.0; job.n * 2 * m];
    let hp = head_pass(job, &head, &f1, &f2, |i, u1, u2| {
        u[i * 2 * m..i * 2 * m + m].copy_from_slice(u1);
        u[i * 2 * m + m..(i + 1) * 2 * m].copy_from_slice(u2);
    });
    let views = if job.model.stop_gradient { 1 } else { 2 };
    let backward = |b: usize| -> Vec<f64> {
        let mut acc = vec![0.0; m * d];
        let mut zbuf = vec![0.0; d];
        for i in job.block_range(b) {
            let draw = data::draw(job.setting, job.seed, job.step, i as u64);
            let value = f64::from(draw.sign) * job.setting.alpha[draw.label];
            for p in 0..pp {
                let view = usize::from(!draw.first_view[p]);
                if view >= views {
                    continue;
                }
                let coef = |j: usize| {
                    let yj = ys[(i * pp + p) * m + j];
                    3.0 * yj * yj * u[i * 2 * m + view * m + j]
                };
                if draw.features[p] {
                    for j in 0..m {
                        acc[j * d + draw.label] += coef(j) * value;
                    }
                } else {
                    let mut rng = data::noise_rng(job.seed, job.step, i as u64, p);
                    data::fill_noise(&mut rng, job.setting.noise_std, &mut zbuf);
                    for j in 0..m {
                        axpy(&mut acc[j * d + 2..(j + 1) * d], coef(j), &zbuf[2..]);
                    }
                }
            }
        }
        acc
    };
    let add = |mut a: Vec<f64>, b: Vec<f64>| {
        add_into(&mut a, &b);
        a
    };
    let acc = tree_reduce(0, job.blocks(), &backward, &add);
    let grad_w = acc.chunks(d).map(<[f64]>::to_vec).collect();
    Ok(BatchGradient {
        loss: hp.loss,
        grad_w,
        grad_e: hp.grad_e,
    })
}

/// The largest number of `f64` entries of one array that explicit SGD allocates
/// ([`check_size`]): `2^28`, 2 GiB.
pub const MAX_ENTRIES: u128 = 1 << 28;

/// An error when one of explicit SGD's arrays would exceed [`MAX_ENTRIES`]: the encoder
/// (`m d`), the head's `m x m` work matrices, a block's partial sum, `V m (2m + 1) d` for
/// the fused kernel (`V` = 1 with stop-gradient, else 2) or `N P m + m d` for the
/// regenerating one ([`Kernel::resolve`]; about `threads log2(MAX_BLOCKS)` partial sums are
/// alive at once), and the per-sample arrays of a batch, `4 N m` numbers (the outputs
/// `f(X^(1))`, `f(X^(2))` and the upstream gradients) plus `N P m` projections for the
/// regenerating kernel. Sizes are computed in `u128` (no overflow) and refused instead of
/// aborting on allocation, naming `training.batch` when the batch size is what does not
/// fit, else `setting.dim` or `setting.neurons`.
pub fn check_size(config: &Config) -> Result<()> {
    let s = &config.setting;
    let (m, d) = (s.neurons as u128, u128::from(s.dim));
    let (n, p) = (config.training.batch as u128, s.patches as u128);
    let kernel = Kernel::Auto.resolve(s.neurons, s.patches, config.model.stop_gradient);
    // Saturating products: any size beyond u128 is "too large" all the same.
    let mul = |xs: &[u128]| xs.iter().fold(1u128, |a, &b| a.saturating_mul(b));
    let partial = match kernel {
        Kernel::Fused => {
            let views = if config.model.stop_gradient { 1 } else { 2 };
            mul(&[views, m, 2 * m + 1, d])
        }
        _ => mul(&[m, d]),
    };
    let per_sample = match kernel {
        Kernel::Fused => mul(&[4, n, m]),
        _ => mul(&[4, n, m]).saturating_add(mul(&[n, p, m])),
    };
    let largest = mul(&[m, d]).max(mul(&[m, m])).max(partial);
    if largest > MAX_ENTRIES {
        // Name the dimension when it alone is what a handful of neurons cannot afford.
        let field = if m <= 64 {
            "setting.dim"
        } else {
            "setting.neurons"
        };
        return Err(Error::invalid(
            field,
            format!(
                "{} neurons at dim {} need an array of {largest} entries, more than \
                 {MAX_ENTRIES} (2 GiB)",
                s.neurons, s.dim
            ),
        ));
    }
    if per_sample > MAX_ENTRIES {
        return Err(Error::invalid(
            "training.batch",
            format!(
                "a batch of {} samples with {} neurons and {} patches needs arrays of \
                 {per_sample} entries, more than {MAX_ENTRIES} (2 GiB)",
                config.training.batch, s.neurons, s.patches
            ),
        ));
    }
    Ok(())
}

/// Explicit SGD on the paper's objective: the state, the step count and the data seed.
#[derive(Clone, Debug)]
pub struct Sgd {
    /// The configuration (setting, model, `[training]`).
    pub config: Config,
    /// The current `(W, E)`.
    pub state: State,
    /// Steps taken so far; the next step draws its batch from stream step `step`.
    pub step: u64,
    /// The data seed of the streams.
    pub seed: u64,
    /// The streaming kernel.
    pub kernel: Kernel,
}

impl Sgd {
    /// Starts SGD at `state` with data seed `seed`. Errors when the state's shape does not
    /// match the setting or its arrays would not fit in memory ([`check_size`]).
    pub fn new(config: &Config, state: State, seed: u64) -> Result<Self> {
        let d = usize::try_from(config.setting.dim)
            .map_err(|_| Error::invalid("setting.dim", "too large for explicit SGD"))?;
        check_size(config)?;
        let m = config.setting.neurons;
        if state.neurons() != m || state.e.len() != m || state.dim() != d {
            return Err(Error::invalid(
                "state",
                format!("shape does not match the setting (neurons = {m}, dim = {d})"),
            ));
        }
        Ok(Sgd {
            config: config.clone(),
            state,
            step: 0,
            seed,
            kernel: Kernel::Auto,
        })
    }

    /// The flow time `tau = lr * t` after `t` steps.
    pub fn flow_time(&self) -> f64 {
        self.config.training.lr * self.step as f64
    }

    /// One SGD step (paper, Section 3.2): a fresh batch from stream step `self.step`, then
    /// `W -= lr grad_W`, `E -= lr_head grad_E` on the trainable entries. Returns the batch
    /// loss before the update. On error (a vanishing batch variance, a non-finite batch
    /// loss, gradient or new state: [`Sgd::try_step`]) the state is left unchanged.
    pub fn step(&mut self) -> Result<f64> {
        match self.try_step()? {
            Step::Taken(loss) => Ok(loss),
            Step::NonFinite(reason) => Err(Error::numerical("sgd", reason)),
        }
    }

    /// [`Sgd::step`], telling an overflow apart from an error: [`Step::NonFinite`] (state
    /// unchanged) when the batch loss, the gradient or the updated state is not finite,
    /// with the reason naming what overflowed and the rate that drove it (`training.lr` for
    /// `W`, `training.lr_head` for `E`).
    ///
    /// # Errors
    /// A batch-norm variance of zero ([`Error::Numerical`]).
    pub fn try_step(&mut self) -> Result<Step> {
        self.try_step_checked(|_| None)
    }

    /// [`Sgd::try_step`] with one more check of the updated state before it is kept:
    /// `check(candidate)` returns why the candidate is not acceptable (then the step is
    /// [`Step::NonFinite`] with that reason and the state is unchanged), or `None`.
    /// [`run`] checks the population loss this way, without a copy of the state.
    ///
    /// # Errors
    /// A batch-norm variance of zero ([`Error::Numerical`]).
    pub fn try_step_checked(
        &mut self,
        check: impl FnOnce(&State) -> Option<String>,
    ) -> Result<Step> {
        let t = &self.config.training;
        let g = batch_gradient_unchecked(
            &self.config.setting,
            &self.config.model,
            &self.state,
            self.seed,
            self.step,
            t.batch,
            self.kernel,
        )?;
        if let Some(what) = g.non_finite() {
            return Ok(Step::NonFinite(format!(
                "the {what} at step {} is not finite (overflow)",
                self.step + 1
            )));
        }
        let mut w = self.state.w.clone();
        for (wj, gw) in w.iter_mut().zip(&g.grad_w) {
            axpy(wj, -t.lr, gw);
        }
        let mut e = self.state.e.clone();
        let m = e.len();
        for j in 0..m {
            for r in 0..m {
                if self.config.model.head.trainable(j, r) {
                    e[j][r] -= t.lr_head * g.grad_e[j][r];
                }
            }
        }
        let overflow = |what: &str, field: &str, rate: f64| {
            Step::NonFinite(format!(
                "{what} is not finite after step {} (overflow; {field} = {rate:e} too large?)",
                self.step + 1
            ))
        };
        if w.iter().flatten().any(|x| !x.is_finite()) {
            return Ok(overflow("W", "training.lr", t.lr));
        }
        if e.iter().flatten().any(|x| !x.is_finite()) {
            return Ok(overflow("E", "training.lr_head", t.lr_head));
        }
        let candidate = State { w, e };
        if let Some(reason) = check(&candidate) {
            return Ok(Step::NonFinite(reason));
        }
        self.state = candidate;
        self.step += 1;
        Ok(Step::Taken(g.loss))
    }
}

/// What one step of [`Sgd::try_step`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The step was taken; the batch loss before the update.
    Taken(f64),
    /// The step was not taken because something overflowed; why.
    NonFinite(String),
}

/// How a run is observed: CSV cadence and a per-step callback (progress).
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// When to record a trajectory row ([`crate::observe::Cadence`]; always at the first
    /// and the last step).
    pub record: crate::observe::Cadence,
    /// Stop when `t_end` happens (as `predhead flow` does); otherwise run all the steps.
    pub stop_at_t_end: bool,
}

/// Whether the population summary at `x` is finite: `None` when it is, else what overflowed
/// (the reduced state, or the population loss and moments of `derivations/population.md`,
/// eqs. (P3)-(P6)). A finite state with a zero population variance is not an overflow
/// (`None`).
///
/// # Examples
/// ```
/// use predhead::config::parse_config;
/// use predhead::moments::population::Constants;
/// use predhead::reduced::reduce;
/// use predhead::sgd::population_overflow;
/// use predhead::state::State;
/// let config = parse_config("[setting]\ndim = 3\npatches = 2\nfeature_patches = 1\n\
///     alpha = [2.0, 1.0]\nnoise_std = 1.0\nneurons = 1\n[model]\nhead = \"frozen\"\n\
///     normalization = \"none\"\nstop_gradient = true\n").unwrap();
/// let k = Constants::<f64>::new(&config.setting, ());
/// let fine = State::with_identity_head(vec![vec![0.5, 0.1, 0.2]]);
/// assert_eq!(population_overflow(&k, &config.model, &reduce(&fine, ())), None);
/// // |w|^6 beyond the f64 range: the population loss overflows.
/// let huge = State::with_identity_head(vec![vec![1e60, 0.1, 0.2]]);
/// assert!(population_overflow(&k, &config.model, &reduce(&huge, ())).is_some());
/// ```
pub fn population_overflow(
    constants: &crate::moments::population::Constants<f64>,
    model: &Model,
    x: &crate::moments::population::Reduced<f64>,
) -> Option<&'static str> {
    use crate::moments::population::{evaluate, moments};
    let values =
        x.a.iter()
            .chain(&x.b)
            .chain(x.gram.entries())
            .chain(x.e.entries());
    if values.clone().any(|v| !v.is_finite()) {
        return Some("reduced state (a, b, Gram block, E)");
    }
    match evaluate(constants, model, x) {
        Ok(ev) if ev.loss.is_finite() => None,
        Ok(_) => Some("population loss"),
        Err(_) => {
            let mo = moments(constants, x);
            if mo.second.entries().iter().all(|v| v.is_finite()) {
                None
            } else {
                Some("population second moments")
            }
        }
    }
}

/// Runs SGD from `sgd.state` for at most `config.training.steps` steps, feeding the
/// observers of [`crate::observe`] (the same code the flow uses) with the reduced
/// coordinates of the explicit `W` ([`crate::reduced::reduce`]) after every step, at flow
/// time `tau = lr * t`. Event times are therefore the first step times at which a condition
/// holds (resolution `lr`). The run stops at `t_end` if `options.stop_at_t_end` (as the
/// flow does), when the step budget is used, or at the first step `t` whose batch loss,
/// gradient, new state or population loss is not finite ([`Sgd::try_step`],
/// [`population_overflow`]), or whose batch variance vanishes after the first step: the
/// termination is then `non-finite`, the summary is that of the last finite state (step
/// `t - 1`, which `sgd.state` keeps: the failing step is never applied), and
/// `nonfinite_step = t`, `nonfinite_tau = lr t`, `nonfinite_reason` say where and why. A vanishing batch variance at the first step, or
/// an initial state whose population loss overflows, is an error. `Corr` in the summary is
/// the closed form `population::correlation` at the current `W`, not a batch estimate.
/// `on_step(t)` is called after each step (progress bars).
///
/// # Examples
/// Twenty steps from the paper's initialization: the run uses its step budget, the
/// population loss at the end is at least the optimum `OPT`, and the same seeds give the
/// same summary.
/// ```
/// use predhead::config::parse_config;
/// use predhead::observe::Cadence;
/// use predhead::sgd::{run, RunOptions, Sgd};
/// let config = parse_config(
///     "[setting]\ndim = 6\npatches = 4\nfeature_patches = 2\nalpha = [4.0, 1.0]\n\
///      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
///      normalization = \"batchnorm\"\nstop_gradient = true\n\
///      [training]\nlr = 0.01\nbatch = 64\nsteps = 20\n",
/// )?;
/// let options = RunOptions { record: Cadence::ENDS, stop_at_t_end: false };
/// let summary = |seed| -> predhead::Result<_> {
///     let w0 = predhead::init::explicit(&config.setting, seed)?;
///     let mut sgd = Sgd::new(&config, w0, seed)?;
///     run::<std::io::Sink>(&mut sgd, options, None, |_| {})
/// };
/// let s = summary(3)?;
/// assert_eq!(s.steps, 20);
/// assert!(s.loss_final >= s.opt * (1.0 - 1e-12));
/// assert_eq!(format!("{s:?}"), format!("{:?}", summary(3)?));
/// # Ok::<(), predhead::Error>(())
/// ```
///
/// # Errors
/// A vanishing batch variance at the first step, an initial state whose population loss
/// overflows, or writing the trajectory. A state of the wrong shape is refused before, by
/// [`Sgd::new`]:
/// ```
/// # use predhead::config::parse_config;
/// # use predhead::sgd::Sgd;
/// # let config = parse_config(
/// #     "[setting]\ndim = 6\npatches = 4\nfeature_patches = 2\nalpha = [4.0, 1.0]\n\
/// #      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
/// #      normalization = \"batchnorm\"\nstop_gradient = true\n\
/// #      [training]\nlr = 0.01\nbatch = 64\nsteps = 20\n",
/// # )?;
/// let three_neurons = predhead::state::State::with_identity_head(vec![vec![0.1; 6]; 3]);
/// assert!(Sgd::new(&config, three_neurons, 0).is_err());
/// # Ok::<(), predhead::Error>(())
/// ```
pub fn run<W: std::io::Write>(
    sgd: &mut Sgd,
    options: RunOptions,
    recorder: Option<&mut crate::observe::TrajectoryRecorder<W>>,
    mut on_step: impl FnMut(u64),
) -> Result<crate::observe::Summary> {
    use crate::moments::population::Constants;
    use crate::observe::{CadencedRecorder, Event, EventTracker, Termination};
    use crate::reduced::reduce;
    let config = sgd.config.clone();
    let constants = Constants::<f64>::new(&config.setting, ());
    let mut tracker = EventTracker::new(constants.clone(), config.model, config.phases.clone());
    let mut recorder = CadencedRecorder::new(recorder, options.record);
    let mut x = reduce::<f64>(&sgd.state, ());
    if let Some(what) = population_overflow(&constants, &config.model, &x) {
        return Err(Error::numerical(
            "state",
            format!("the {what} is not finite at the initial state (overflow)"),
        ));
    }
    tracker.observe(sgd.flow_time(), &x);
    recorder.step(sgd.step, sgd.flow_time(), &x, false)?;
    let first_step = sgd.step;
    let mut termination = Termination::Horizon;
    // The step that could not give a finite state, and why.
    let mut nonfinite: Option<(u64, String)> = None;
    while sgd.step < config.training.steps {
        // The population at the candidate state, checked before the step is kept.
        let mut next = None;
        let t = sgd.step + 1;
        let check = |candidate: &State| {
            let x = reduce::<f64>(candidate, ());
            let why = population_overflow(&constants, &config.model, &x)
                .map(|what| format!("the {what} is not finite after step {t} (overflow)"));
            next = Some(x);
            why
        };
        match sgd.try_step_checked(check) {
            Ok(Step::Taken(_)) => {}
            Ok(Step::NonFinite(reason)) => {
                nonfinite = Some((sgd.step + 1, reason));
                break;
            }
            Err(e @ Error::Numerical { .. }) if sgd.step > first_step => {
                nonfinite = Some((sgd.step + 1, e.to_string()));
                break;
            }
            Err(e) => return Err(e),
        }
        x = match next {
            Some(x) => x,
            None => reduce::<f64>(&sgd.state, ()),
        };
        let fired = tracker.observe(sgd.flow_time(), &x);
        on_step(sgd.step);
        let done = options.stop_at_t_end && fired.contains(&Event::TEnd);
        let last = done || sgd.step == config.training.steps;
        recorder.step(sgd.step, sgd.flow_time(), &x, last)?;
        if done {
            termination = Termination::TEnd;
            break;
        }
    }
    if nonfinite.is_some() {
        termination = Termination::NonFinite;
    }
    recorder.finish(sgd.step, sgd.flow_time(), &x)?;
    let mut summary = tracker.finish(sgd.flow_time(), &x, termination, sgd.step, None, None)?;
    if let Some((step, reason)) = nonfinite {
        summary.nonfinite_step = Some(step);
        summary.nonfinite_tau = Some(config.training.lr * step as f64);
        summary.nonfinite_reason = Some(reason);
    }
    Ok(summary)
}
