//! SGD in reduced coordinates, exact in law, at a cost free of `d`
//! (`derivations/sgd_reduced.md`).
//!
//! The reduced coordinates `(a, b, G, E)` of explicit SGD ([`crate::sgd`]) form a Markov
//! chain (eq. (R4)). One step of [`ReducedSgd`] samples its transition exactly:
//! a factor `R` (`rho x m`, `rho = min(m, d - 2)`) of the Gram block `G` (eq. (R10)); per
//! noise patch `g ~ N(0, I_rho)` and the projections `h = s R^T g` (eq. (R5)); the head's
//! statistics and upstream gradients shared with the explicit engine (eqs. (G1)-(G3)); the
//! per-patch coefficients `c_qj = 3 y_qj^2 u_{v,j}` (eq. (R2)); then
//! `G' = Rt^T Rt + B^T B` with `Rt = R - lr s sum_q g_q c_q^T` and `B^T B` the Wishart term
//! `Wishart_m(d - 2 - rho, lr^2 s^2 C^T C)` drawn by Bartlett's decomposition
//! (eqs. (R6)-(R9)). Cost `O(N P m rho + m^3)` per step whatever `d` is (up to `1e12` and
//! beyond).
//!
//! # Determinism
//! Sample `i` at step `t` reads its discrete draws (`data::draw_from`, the explicit
//! engine's code) and then its `g`'s, in patch order, from one stream,
//! `data::stream_rng(Domain::ReducedSgd, seed, t, i)`; the Bartlett factor comes from stream
//! `u64::MAX` of that domain. Samples are cut into blocks of `sgd::block_size(N)`
//! consecutive samples (a function of `N` only); each block is projected and summed
//! sequentially, in parallel with the others, and the block sums are added in block order.
//! The chain is bit-identical for any thread count.

use crate::data::{self, Domain};
use crate::error::{Error, Result};
use crate::moments::population::{Constants, Reduced};
use crate::observe::{
    CadencedRecorder, Event, EventTracker, Summary, Termination, TrajectoryRecorder,
};
use crate::setting::Config;
use crate::sgd::RunOptions;
use crate::sized::{width, with_neurons};
use crate::square::Square;
use crate::state::State;
use rand::distr::Distribution;
use rand::RngExt;
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// The largest number of neurons of the reduced engine: its factors and eigen-decompositions
/// are `m x m`, `O(m^3)` per step (about `1e10` operations at this bound), and the reduced
/// initialization accepts up to the separable flow's memory bound (2,363).
pub const MAX_NEURONS: usize = 2048;

/// The largest number of `f64` entries of the per-step projection arrays, `N P (m + rho)`
/// (2 GiB).
pub const MAX_ENTRIES: u128 = 1 << 28;

/// Test-only variants of the transition, for the planted-bug checks of
/// `tests/sgd_reduced_law.rs`. Only [`Variant::Exact`] is the SGD of the paper.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Variant {
    /// The exact transition (eqs. (R5)-(R9)).
    #[default]
    Exact,
    /// Planted bug: the Wishart term `Z^T Z` is dropped.
    NoWishart,
    /// Planted bug: the Wishart term has `d` degrees of freedom instead of `d - 2 - rho`.
    FullDof,
}

/// Reduced SGD: the state `(a, b, G, E)`, the step count and the data seed.
///
/// # Examples
/// ```
/// use predhead::config::parse_config;
/// use predhead::sgd_reduced::ReducedSgd;
/// let config = parse_config(
///     "[setting]\ndim = 1000000000000\npatches = 4\nfeature_patches = 2\n\
///      alpha = [4.0, 1.0]\nnoise_std = 1.0\nneurons = 2\n[model]\nhead = \"linear\"\n\
///      normalization = \"batchnorm\"\nstop_gradient = false\n\
///      [training]\nlr = 1e-13\nbatch = 64\nsteps = 3\n",
/// )
/// .unwrap();
/// let mut sgd = ReducedSgd::from_seed(&config, 7, 7).unwrap();
/// sgd.step().unwrap();
/// assert_eq!(sgd.step, 1);
/// assert!(*sgd.state.gram.at(0, 0) > 0.0);
/// ```
#[derive(Clone, Debug)]
pub struct ReducedSgd {
    /// The configuration (setting, model, `[training]`).
    pub config: Config,
    /// The current reduced state.
    pub state: Reduced<f64>,
    /// Steps taken so far; the next step draws its batch from stream step `step`.
    pub step: u64,
    /// The data seed of the streams.
    pub seed: u64,
    /// Which transition is sampled (tests only; [`Variant::Exact`] by default).
    #[doc(hidden)]
    pub variant: Variant,
    /// The work space of [`ReducedSgd::step`], reused from step to step.
    scratch: Scratch,
}

/// The per-step arrays of [`ReducedSgd::step`], kept between steps so that a step neither
/// allocates nor zeroes them (`benches/README.md`, "Reduced SGD step cost"). Their contents
/// between steps are meaningless: a clone starts empty.
#[derive(Debug, Default)]
struct Scratch {
    /// The blocks of the batch, in block order.
    blocks: Vec<Block>,
    /// `f1[i m + j] = f_j(X^(i,1))`, `f2[i m + j] = f_j(X^(i,2))`.
    f1: Vec<f64>,
    f2: Vec<f64>,
    /// The work space of [`crate::sgd::upstream`].
    upstream: crate::sgd::UpstreamScratch,
}

impl Clone for Scratch {
    fn clone(&self) -> Self {
        Scratch::default()
    }
}

/// Validates the sizes of the reduced engine: `3 <= d`, `m <= MAX_NEURONS`, and the
/// per-step arrays `N P (m + rho)` within [`MAX_ENTRIES`].
///
/// # Errors
/// [`Error::Invalid`] naming `setting.neurons` or `training.batch`.
pub fn check_size(config: &Config) -> Result<()> {
    let s = &config.setting;
    if s.neurons > MAX_NEURONS {
        return Err(Error::invalid(
            "setting.neurons",
            format!("at most {MAX_NEURONS} for reduced SGD, got {}", s.neurons),
        ));
    }
    let rho = rank(config) as u128;
    let entries = config.training.batch as u128 * s.patches as u128 * (s.neurons as u128 + rho);
    if entries > MAX_ENTRIES {
        return Err(Error::invalid(
            "training.batch",
            format!(
                "{} samples of {} patches need {entries} projections per step, more than \
                 {MAX_ENTRIES} (2 GiB)",
                config.training.batch, s.patches
            ),
        ));
    }
    Ok(())
}

/// `rho = min(m, d - 2)`, the number of rows of the factor of `G` (eq. (R5)).
///
/// # Examples
/// ```
/// let text = "[setting]\ndim = 4\npatches = 4\nfeature_patches = 2\nalpha = [3.0, 2.0]\n\
///             noise_std = 1.0\nneurons = 3\n[model]\nhead = \"linear\"\n\
///             normalization = \"none\"\nstop_gradient = true\n";
/// let config = predhead::config::parse_config(text).unwrap();
/// assert_eq!(predhead::sgd_reduced::rank(&config), 2);
/// ```
pub fn rank(config: &Config) -> usize {
    let noise_dim = config.setting.dim.saturating_sub(2);
    usize::try_from(noise_dim).map_or(config.setting.neurons, |k| k.min(config.setting.neurons))
}

impl ReducedSgd {
    /// Starts reduced SGD at `state` with data seed `seed`.
    ///
    /// # Errors
    /// A state whose shape does not match the setting or with a non-finite entry, or sizes
    /// that [`check_size`] refuses.
    pub fn new(config: &Config, state: Reduced<f64>, seed: u64) -> Result<Self> {
        check_size(config)?;
        let m = config.setting.neurons;
        if state.a.len() != m || state.b.len() != m || state.gram.n() != m || state.e.n() != m {
            return Err(Error::invalid(
                "state",
                format!("shape does not match the setting (neurons = {m})"),
            ));
        }
        let finite = state.a.iter().chain(&state.b).all(|x| x.is_finite())
            && state.gram.entries().iter().all(|x| x.is_finite())
            && state.e.entries().iter().all(|x| x.is_finite());
        if !finite {
            return Err(Error::invalid("state", "has a non-finite entry"));
        }
        Ok(ReducedSgd {
            config: config.clone(),
            state,
            step: 0,
            seed,
            variant: Variant::Exact,
            scratch: Scratch::default(),
        })
    }

    /// Starts at the reduced coordinates of the explicit `state`
    /// ([`crate::reduced::reduce`]).
    ///
    /// # Errors
    /// As [`ReducedSgd::new`]; also a state whose dimension is not `setting.dim`.
    pub fn from_explicit(config: &Config, state: &State, seed: u64) -> Result<Self> {
        if state.dim() as u64 != config.setting.dim || state.neurons() != config.setting.neurons {
            return Err(Error::invalid(
                "state",
                format!(
                    "shape {} x {} does not match the setting (neurons = {}, dim = {})",
                    state.neurons(),
                    state.dim(),
                    config.setting.neurons,
                    config.setting.dim
                ),
            ));
        }
        Self::new(config, crate::reduced::reduce::<f64>(state, ()), seed)
    }

    /// Starts at the exact reduced initialization `init::reduced(setting, init_seed)` (the
    /// one `predhead flow --seed` uses) with data seed `seed`.
    ///
    /// # Errors
    /// As [`ReducedSgd::new`] and [`crate::init::reduced`].
    pub fn from_seed(config: &Config, init_seed: u64, seed: u64) -> Result<Self> {
        check_size(config)?;
        Self::new(
            config,
            crate::init::reduced(&config.setting, init_seed)?,
            seed,
        )
    }

    /// The flow time `tau = lr * t` after `t` steps.
    pub fn flow_time(&self) -> f64 {
        self.config.training.lr * self.step as f64
    }

    /// One step of the exact reduced transition (eqs. (R1)-(R11)). Returns the batch loss
    /// before the update.
    ///
    /// # Examples
    /// The batch loss (3.3) is a sum of squares, and a step is a function of the state,
    /// the data seed and the step count alone:
    /// ```
    /// use predhead::config::parse_config;
    /// use predhead::sgd_reduced::ReducedSgd;
    /// let config = parse_config(
    ///     "[setting]\ndim = 100\npatches = 4\nfeature_patches = 2\nalpha = [3.0, 2.0]\n\
    ///      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
    ///      normalization = \"batchnorm\"\nstop_gradient = true\n\
    ///      [training]\nlr = 0.02\nbatch = 64\nsteps = 50\n",
    /// )?;
    /// let mut a = ReducedSgd::from_seed(&config, 4, 1)?;
    /// let mut b = a.clone();
    /// let loss = a.step()?;
    /// assert!(loss >= 0.0 && loss.is_finite());
    /// assert_eq!(loss.to_bits(), b.step()?.to_bits());
    /// assert_eq!(a.state.gram, b.state.gram);
    /// assert_eq!(a.flow_time(), 0.02);
    /// # Ok::<(), predhead::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Numerical`] when a batch-norm variance vanishes or the new state is not
    /// finite; the state is then unchanged. Too large a learning rate overflows:
    /// ```
    /// # use predhead::config::parse_config;
    /// # use predhead::sgd_reduced::ReducedSgd;
    /// let config = parse_config(
    ///     "[setting]\ndim = 100\npatches = 4\nfeature_patches = 2\nalpha = [3.0, 2.0]\n\
    ///      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
    ///      normalization = \"none\"\nstop_gradient = true\n\
    ///      [training]\nlr = 1e300\nbatch = 64\nsteps = 50\n",
    /// )?;
    /// let mut sgd = ReducedSgd::from_seed(&config, 4, 1)?;
    /// let before = sgd.state.clone();
    /// let err = sgd.step().unwrap_err();
    /// assert!(err.to_string().contains("not finite"), "{err}");
    /// assert_eq!(sgd.state, before);
    /// assert_eq!(sgd.step, 0);
    /// # Ok::<(), predhead::Error>(())
    /// ```
    pub fn step(&mut self) -> Result<f64> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.step_with(&mut scratch);
        self.scratch = scratch;
        result
    }

    /// [`ReducedSgd::step`] with the work space `scratch`.
    fn step_with(&mut self, scratch: &mut Scratch) -> Result<f64> {
        let config = &self.config;
        let (s, t) = (&config.setting, &config.training);
        let m = s.neurons;
        let n = t.batch;
        let rho = rank(config);
        let x = &self.state;
        let r = factor(x.gram.entries(), m, rho);
        let size = crate::sgd::block_size(n);
        // Small batches, and one-thread pools, stay on this thread: a hand-off to the pool
        // costs more than the work. The blocks, and the order in which they are summed, are
        // the same either way.
        let parallel = n * s.patches >= PARALLEL_PATCHES && rayon::current_num_threads() > 1;
        let nblocks = n.div_ceil(size);
        let Scratch {
            blocks,
            f1,
            f2,
            upstream,
        } = scratch;
        blocks.resize_with(nblocks, Block::default);
        f1.resize(n * m, 0.0);
        f2.resize(n * m, 0.0);
        let job = Job {
            config,
            x,
            r: &r,
            rho,
            seed: self.seed,
            step: self.step,
        };
        let project_block = |(b, (block, (f1, f2))): BlockJob<'_>| {
            let range = b * size..((b + 1) * size).min(n);
            with_neurons!(m, |M| project::<M>(&job, range, block, f1, f2))
        };
        let chunk = size * m;
        if parallel {
            blocks
                .par_iter_mut()
                .zip(f1.par_chunks_mut(chunk).zip(f2.par_chunks_mut(chunk)))
                .enumerate()
                .for_each(project_block);
        } else {
            blocks
                .iter_mut()
                .zip(f1.chunks_mut(chunk).zip(f2.chunks_mut(chunk)))
                .enumerate()
                .for_each(project_block);
        }
        let blocks = &*blocks;
        let e_rows = x.e.to_rows_f64();
        let up = with_neurons!(m, |M| crate::sgd::upstream::<M>(
            &config.model,
            &e_rows,
            f1,
            f2,
            n,
            upstream
        ))?;
        let u = &upstream.u;
        let accumulate_block =
            |block: &Block| with_neurons!(m, |M| accumulate::<M>(config, block, u, rho));
        let partial: Vec<Accumulated> = if parallel {
            blocks.par_iter().map(accumulate_block).collect()
        } else {
            blocks.iter().map(accumulate_block).collect()
        };
        let acc = partial
            .into_iter()
            .reduce(Accumulated::add)
            .ok_or_else(|| Error::invalid("training.batch", "must be positive, got 0"))?;
        let lr = t.lr;
        let a: Vec<f64> = (0..m).map(|j| x.a[j] - lr * acc.feature[0][j]).collect();
        let b: Vec<f64> = (0..m).map(|j| x.b[j] - lr * acc.feature[1][j]).collect();
        // Rt = R - lr s Gamma C (eq. (R6)).
        let ls = lr * s.noise_std;
        let rt: Vec<f64> = r
            .iter()
            .zip(&acc.gamma_c)
            .map(|(r, gc)| r - ls * gc)
            .collect();
        let wishart = self.wishart(&acc.ctc, rho)?;
        let gram = Square::from_fn(m, |j, k| {
            let (j, k) = (j.min(k), j.max(k));
            let mut g = 0.0;
            for row in rt.chunks_exact(m).chain(wishart.chunks_exact(m)) {
                g += row[j] * row[k];
            }
            g
        });
        let mut e = x.e.clone();
        for j in 0..m {
            for q in 0..m {
                if config.model.head.trainable(j, q) {
                    *e.at_mut(j, q) -= t.lr_head * up.grad_e[j][q];
                }
            }
        }
        let next = Reduced { a, b, gram, e };
        let finite = next.a.iter().chain(&next.b).all(|v| v.is_finite())
            && next.gram.entries().iter().all(|v| v.is_finite())
            && next.e.entries().iter().all(|v| v.is_finite());
        if !finite || !up.loss.is_finite() {
            return Err(Error::numerical(
                "sgd",
                format!(
                    "the state is not finite after step {} (lr = {} too large?)",
                    self.step, lr
                ),
            ));
        }
        self.state = next;
        self.step += 1;
        Ok(up.loss)
    }

    /// The factor `B = lr s L^T F` of the Wishart term `Z^T Z = B^T B` (eqs. (R7)-(R9)),
    /// `min(k, m)` rows of `m`, with `k = d - 2 - rho` and `F^T F = C^T C`; empty when
    /// `k = 0` (or under the planted bug [`Variant::NoWishart`]).
    fn wishart(&self, ctc: &[f64], rho: usize) -> Result<Vec<f64>> {
        let s = &self.config.setting;
        let m = s.neurons;
        let dof = match self.variant {
            Variant::Exact => s.dim - 2 - rho as u64,
            Variant::FullDof => s.dim,
            Variant::NoWishart => 0,
        };
        if dof == 0 {
            return Ok(Vec::new());
        }
        let f = factor(ctc, m, m);
        let mut rng = data::stream_rng(Domain::ReducedSgd, self.seed, self.step, u64::MAX);
        let l = crate::init::bartlett_factor(&mut rng, m, dof)?;
        let cols = l.first().map_or(0, Vec::len);
        let ls = self.config.training.lr * s.noise_std;
        let mut out = vec![0.0; cols * m];
        for c in 0..cols {
            for j in 0..m {
                let mut acc = 0.0;
                for i in c..m {
                    acc += l[i][c] * f[i * m + j];
                }
                out[c * m + j] = ls * acc;
            }
        }
        Ok(out)
    }
}

/// The projections of a block of consecutive samples (eqs. (R1), (R5)).
#[derive(Debug, Default)]
struct Block {
    /// The first sample of the block.
    start: usize,
    /// `value[l] = eps alpha_label` and `label[l]` of the block's sample `l`.
    value: Vec<f64>,
    label: Vec<usize>,
    /// `features[l P + p]`: `p in S`; `second[l P + p]`: `p` is in the second view.
    features: Vec<bool>,
    second: Vec<bool>,
    /// `y[(l P + p) m + j]`, the projection of patch `p` of the block's sample `l` on `w_j`.
    y: Vec<f64>,
    /// `g[(l P + p) rho + k]`, the normals of the noise patches (left as they were for
    /// feature patches: never read there).
    g: Vec<f64>,
    /// The work space of `data::random_subset_into` (length `P`).
    idx: Vec<usize>,
}

impl Block {
    /// Sizes the arrays for `len` samples of `pp` patches, `m` neurons and `rho` normals per
    /// noise patch, without zeroing what is already there (every entry read is written
    /// first by [`project`]).
    fn resize(&mut self, start: usize, len: usize, pp: usize, m: usize, rho: usize) {
        self.start = start;
        self.value.resize(len, 0.0);
        self.label.resize(len, 0);
        self.features.resize(len * pp, false);
        self.second.resize(len * pp, false);
        self.y.resize(len * pp * m, 0.0);
        self.g.resize(len * pp * rho, 0.0);
        self.idx.resize(pp, 0);
    }
}

/// One block's share of a step: its index, its arrays and its rows of `f1` and `f2`.
type BlockJob<'a> = (usize, (&'a mut Block, (&'a mut [f64], &'a mut [f64])));

/// What every block of a step reads: the configuration, the state, the factor `R`
/// (`rho x m`) and the stream address `(seed, step)`.
struct Job<'a> {
    config: &'a Config,
    x: &'a Reduced<f64>,
    r: &'a [f64],
    rho: usize,
    seed: u64,
    step: u64,
}

/// Projects the samples `range` of stream step `(seed, step)` into `block`: feature patches
/// `eps alpha_l (a_j or b_j)`, noise patches `h = s R^T g` with `g ~ N(0, I_rho)` read in
/// patch order from the sample's own stream (eq. (R5)); `f1`, `f2` (`range.len() x m`)
/// receive `f_j(X^(i,1))`, `f_j(X^(i,2))`.
///
/// `M` is the number of neurons when it is a compile-time constant (`1..=4`), or `0` for any
/// `m`: the same code, in the same summation order (so bit-identical), with the short loops
/// over neurons unrolled when `M > 0` (a benchmark lever, `benches/README.md`).
fn project<const M: usize>(
    job: &Job<'_>,
    range: std::ops::Range<usize>,
    block: &mut Block,
    f1: &mut [f64],
    f2: &mut [f64],
) {
    let (s, x, r, rho) = (&job.config.setting, job.x, job.r, job.rho);
    let (m, pp) = (width::<M>(s.neurons), s.patches);
    block.resize(range.start, range.len(), pp, m, rho);
    f1.fill(0.0);
    f2.fill(0.0);
    // One generator for the block, moved to each sample's stream at word 0: the same
    // numbers as `data::stream_rng(Domain::ReducedSgd, seed, step, i)`.
    let mut rng = data::stream_rng(Domain::ReducedSgd, job.seed, job.step, range.start as u64);
    let samples = f1.chunks_exact_mut(m).zip(f2.chunks_exact_mut(m));
    for ((l, i), (f1, f2)) in range.enumerate().zip(samples) {
        rng.set_word_pos(0);
        rng.set_stream(i as u64);
        // The discrete draws of `data::draw_from`, in its order, without allocating.
        let label = usize::from(rng.random::<bool>());
        let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
        let value = sign * s.alpha[label];
        let sample = l * pp..(l + 1) * pp;
        let features = &mut block.features[sample.clone()];
        data::random_subset_into(&mut rng, s.feature_patches, &mut block.idx, features);
        let second = &mut block.second[sample.clone()];
        data::random_subset_into(&mut rng, s.half(), &mut block.idx, second);
        for x in second.iter_mut() {
            *x = !*x;
        }
        block.value[l] = value;
        block.label[l] = label;
        let coord = if label == 0 { &x.a[..m] } else { &x.b[..m] };
        let ys = &mut block.y[sample.start * m..sample.end * m];
        let gs = &mut block.g[sample.start * rho..sample.end * rho];
        let features = &block.features[sample.clone()];
        let second = &block.second[sample];
        for p in 0..pp {
            let yp = &mut ys[p * m..(p + 1) * m];
            if features[p] {
                for (y, c) in yp.iter_mut().zip(coord) {
                    *y = value * c;
                }
            } else {
                let gp = &mut gs[p * rho..(p + 1) * rho];
                for gk in gp.iter_mut() {
                    *gk = StandardNormal.sample(&mut rng);
                }
                // h_j = sum_k R[k][j] g_k, summed in k order, then times s.
                yp.fill(0.0);
                for (row, gk) in r.chunks_exact(m).zip(gp.iter()) {
                    for (y, rkj) in yp.iter_mut().zip(row) {
                        *y += rkj * gk;
                    }
                }
                for y in yp.iter_mut() {
                    *y *= s.noise_std;
                }
            }
            let f = if second[p] {
                &mut f2[..m]
            } else {
                &mut f1[..m]
            };
            for (fj, y) in f.iter_mut().zip(yp.iter()) {
                *fj += y * y * y;
            }
        }
    }
}

/// The batches of at least this many patches (`N P`) are spread over the rayon pool; smaller
/// ones run on the calling thread (`benches/README.md`, "Reduced SGD").
const PARALLEL_PATCHES: usize = 4096;

/// The sums of one step over the batch, in sample and patch order.
struct Accumulated {
    /// `feature[l][j] = sum_{q feature, label l} c_qj eps alpha_l`: `dL/da_j`, `dL/db_j`.
    feature: [Vec<f64>; 2],
    /// `Gamma C = sum_q g_q c_q^T` (`rho x m`, row-major).
    gamma_c: Vec<f64>,
    /// `C^T C = sum_q c_q c_q^T` (`m x m`).
    ctc: Vec<f64>,
}

impl Accumulated {
    /// The entry-wise sum (blocks are added in block order).
    fn add(mut self, other: Accumulated) -> Accumulated {
        let [f0, f1] = &mut self.feature;
        let pairs = f0
            .iter_mut()
            .zip(&other.feature[0])
            .chain(f1.iter_mut().zip(&other.feature[1]))
            .chain(self.gamma_c.iter_mut().zip(&other.gamma_c))
            .chain(self.ctc.iter_mut().zip(&other.ctc));
        for (a, b) in pairs {
            *a += b;
        }
        self
    }
}

/// The per-patch coefficients `c_qj = 3 y_qj^2 u_{v(q),j}(i)` (eq. (R2)) of a block and
/// their sums, in sample and patch order (`M` as in [`project`]).
fn accumulate<const M: usize>(
    config: &Config,
    block: &Block,
    u: &[f64],
    rho: usize,
) -> Accumulated {
    let s = &config.setting;
    let (m, pp) = (width::<M>(s.neurons), s.patches);
    let mut acc = Accumulated {
        feature: [vec![0.0; m], vec![0.0; m]],
        gamma_c: vec![0.0; rho * m],
        ctc: vec![0.0; m * m],
    };
    let mut c = vec![0.0; m];
    let c = &mut c[..m];
    let len = block.value.len();
    let us = u[block.start * 2 * m..(block.start + len) * 2 * m].chunks_exact(2 * m);
    let samples = block.value.iter().zip(&block.label).zip(us);
    for (l, ((&value, &label), ui)) in samples.enumerate() {
        let patches = l * pp..(l + 1) * pp;
        let ys = &block.y[patches.start * m..patches.end * m];
        let gs = &block.g[patches.start * rho..patches.end * rho];
        let features = &block.features[patches.clone()];
        let second = &block.second[patches];
        for p in 0..pp {
            let yp = &ys[p * m..(p + 1) * m];
            let view = usize::from(second[p]);
            let ui = &ui[view * m..(view + 1) * m];
            for ((cj, y), u) in c.iter_mut().zip(yp).zip(ui) {
                *cj = 3.0 * y * y * u;
            }
            if features[p] {
                for (a, cj) in acc.feature[label][..m].iter_mut().zip(c.iter()) {
                    *a += cj * value;
                }
            } else {
                let gp = &gs[p * rho..(p + 1) * rho];
                for (row, gk) in acc.gamma_c.chunks_exact_mut(m).zip(gp) {
                    for (a, cj) in row[..m].iter_mut().zip(c.iter()) {
                        *a += gk * cj;
                    }
                }
                for (row, cj) in acc.ctc[..m * m].chunks_exact_mut(m).zip(c.iter()) {
                    for (a, ck) in row.iter_mut().zip(c.iter()) {
                        *a += cj * ck;
                    }
                }
            }
        }
    }
    acc
}

/// The eigen-decomposition of the symmetric `n x n` matrix `a` (row-major) by cyclic Jacobi
/// rotations: `(lambda, v)` with `a = v diag(lambda) v^T`, `v` row-major with the
/// eigenvectors as columns, eigenvalues in decreasing order (eq. (R10)).
///
/// # Examples
/// ```
/// let (lambda, v) = predhead::sgd_reduced::sym_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
/// assert!((lambda[0] - 3.0).abs() < 1e-15 && (lambda[1] - 1.0).abs() < 1e-15);
/// assert!((v[0].abs() - 0.5f64.sqrt()).abs() < 1e-15);
/// ```
pub fn sym_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += a[p * n + q] * a[p * n + q];
            }
        }
        if off <= 1e-36 * total || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let lambda = order.iter().map(|&i| a[i * n + i]).collect();
    let v = (0..n * n)
        .map(|idx| v[(idx / n) * n + order[idx % n]])
        .collect();
    (lambda, v)
}

/// A factor `R` (`rows x n`, row-major) of the symmetric positive semi-definite `a`:
/// `R = Lambda^{1/2} V^T` over the `rows` largest eigenvalues, negative (rounding-level)
/// eigenvalues set to 0, so `R^T R = a` when the discarded eigenvalues are zero
/// (eq. (R10)).
///
/// # Examples
/// ```
/// // A rank-one matrix and its one-row factor: R^T R = a.
/// let r = predhead::sgd_reduced::factor(&[1.0, 2.0, 2.0, 4.0], 2, 1);
/// assert!((r[0] * r[0] - 1.0).abs() < 1e-14 && (r[0] * r[1] - 2.0).abs() < 1e-14);
/// ```
pub fn factor(a: &[f64], n: usize, rows: usize) -> Vec<f64> {
    let (lambda, v) = sym_eigen(a, n);
    let mut r = vec![0.0; rows * n];
    for k in 0..rows {
        let root = lambda[k].max(0.0).sqrt();
        for j in 0..n {
            r[k * n + j] = root * v[j * n + k];
        }
    }
    r
}

/// Runs reduced SGD for at most `config.training.steps` steps, feeding the observers of
/// [`crate::observe`] (the ones explicit SGD and the flow use) after every step at flow time
/// `tau = lr * t`, so the summary and the trajectory CSV have the explicit engine's form.
/// Stops at `t_end` if `options.stop_at_t_end`, when the step budget is used, or when a
/// step fails numerically (a vanishing batch variance, a non-finite state, at any step): the
/// summary is then that of the last finite state and its step, termination `non-finite`.
///
/// # Examples
/// ```
/// use predhead::config::parse_config;
/// use predhead::observe::Cadence;
/// use predhead::sgd::RunOptions;
/// use predhead::sgd_reduced::{run, ReducedSgd};
/// let config = parse_config(
///     "[setting]\ndim = 100\npatches = 4\nfeature_patches = 2\nalpha = [3.0, 2.0]\n\
///      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
///      normalization = \"batchnorm\"\nstop_gradient = true\n\
///      [training]\nlr = 0.02\nbatch = 64\nsteps = 50\n",
/// )
/// .unwrap();
/// let mut sgd = ReducedSgd::from_seed(&config, 4, 1).unwrap();
/// let options = RunOptions { record: Cadence::every(10).unwrap(), stop_at_t_end: false };
/// let summary = run::<std::io::Sink>(&mut sgd, options, None, |_| {}).unwrap();
/// assert_eq!(summary.steps, 50);
/// ```
///
/// # Errors
/// Writing the trajectory; a summary that cannot be evaluated at a finite state.
pub fn run<W: std::io::Write>(
    sgd: &mut ReducedSgd,
    options: RunOptions,
    recorder: Option<&mut TrajectoryRecorder<W>>,
    mut on_step: impl FnMut(u64),
) -> Result<Summary> {
    let config = sgd.config.clone();
    let constants = Constants::<f64>::new(&config.setting, ());
    let mut tracker = EventTracker::new(constants, config.model, config.phases.clone());
    let mut recorder = CadencedRecorder::new(recorder, options.record);
    tracker.observe(sgd.flow_time(), &sgd.state);
    recorder.step(sgd.step, sgd.flow_time(), &sgd.state, false)?;
    let mut termination = Termination::Horizon;
    let mut failed = None;
    while sgd.step < config.training.steps {
        match sgd.step() {
            Ok(_) => {}
            Err(e @ Error::Numerical { .. }) => {
                termination = Termination::NonFinite;
                failed = Some((sgd.step + 1, e.to_string()));
                break;
            }
            Err(e) => return Err(e),
        }
        let fired = tracker.observe(sgd.flow_time(), &sgd.state);
        on_step(sgd.step);
        let done = options.stop_at_t_end && fired.contains(&Event::TEnd);
        let last = done || sgd.step == config.training.steps;
        recorder.step(sgd.step, sgd.flow_time(), &sgd.state, last)?;
        if done {
            termination = Termination::TEnd;
            break;
        }
    }
    recorder.finish(sgd.step, sgd.flow_time(), &sgd.state)?;
    let mut summary = tracker.finish(
        sgd.flow_time(),
        &sgd.state,
        termination,
        sgd.step,
        None,
        None,
    )?;
    // The keys of the explicit engine's non-finite end (`docs/cli.md`): the failed step,
    // its flow time, and why.
    if let Some((step, why)) = failed {
        summary.nonfinite_step = Some(step);
        summary.nonfinite_tau = Some(config.training.lr * step as f64);
        summary.nonfinite_reason = Some(why);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dim: u64, m: usize, lr: f64) -> Config {
        crate::config::parse_config(&format!(
            "[setting]\ndim = {dim}\npatches = 4\nfeature_patches = 2\nalpha = [3.0, 2.0]\n\
             noise_std = 1.0\nneurons = {m}\n[model]\nhead = \"identity-offdiag\"\n\
             normalization = \"batchnorm\"\nstop_gradient = true\n[training]\nlr = {lr}\nbatch = 40\nsteps = 5\n"
        ))
        .unwrap()
    }

    /// `factor` reproduces regular and singular matrices: `R^T R = A` to 1e-14 relative
    /// (Jacobi rotations are backward stable); a mutated factor (one entry off by 1e-6)
    /// fails the same comparison.
    #[test]
    fn factor_reproduces_the_matrix() {
        let check = |a: &[f64], n: usize, rows: usize| -> f64 {
            let r = factor(a, n, rows);
            let scale = a.iter().fold(0.0f64, |s, x| s.max(x.abs()));
            let mut err = 0.0f64;
            for j in 0..n {
                for k in 0..n {
                    let rr: f64 = (0..rows).map(|q| r[q * n + j] * r[q * n + k]).sum();
                    err = err.max((rr - a[j * n + k]).abs() / scale);
                }
            }
            err
        };
        // A regular 3x3 matrix, a singular one (rank 1, a zero neuron) and a rank-2 one
        // factored with 2 rows (d - 2 < m).
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, -0.2, 0.5, -0.2, 2.0];
        assert!(check(&a, 3, 3) < 1e-14);
        let b = [1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 4.0];
        assert!(check(&b, 3, 3) < 1e-14);
        let u = [[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]];
        let c: Vec<f64> = (0..9)
            .map(|idx| (0..2).map(|q| u[q][idx / 3] * u[q][idx % 3]).sum())
            .collect();
        assert!(check(&c, 3, 2) < 1e-14);
        // Falsifier: one row too few on a rank-3 matrix fails.
        assert!(check(&a, 3, 2) > 1e-3);
    }

    /// The Wishart term has mean `k lr^2 s^2 C^T C` (eq. (R7)): over 4000 draws at
    /// `k = d - 2 - m = 6`, each entry of the mean of `B^T B` is within 5 standard errors
    /// (a normal approximation of the mean of 4000 draws; fails by chance about 1 in 10^5
    /// per entry). The planted `FullDof` variant (`k = d = 10`) is rejected by the same
    /// check.
    #[test]
    fn wishart_term_has_the_wishart_mean() {
        let cfg = config(10, 2, 0.5);
        let ctc = [2.0, 0.6, 0.6, 1.0];
        let mean_error = |variant: Variant| -> f64 {
            let mut sgd = ReducedSgd::from_seed(&cfg, 1, 3).unwrap();
            sgd.variant = variant;
            let draws = 4000;
            let (mut s1, mut s2) = ([0.0; 4], [0.0; 4]);
            for t in 0..draws {
                sgd.step = t;
                let b = sgd.wishart(&ctc, 2).unwrap();
                for idx in 0..4 {
                    let v: f64 = b.chunks(2).map(|row| row[idx / 2] * row[idx % 2]).sum();
                    s1[idx] += v;
                    s2[idx] += v * v;
                }
            }
            let k = 6.0 * 0.25;
            let mut worst = 0.0f64;
            for idx in 0..4 {
                let mean = s1[idx] / draws as f64;
                let se = ((s2[idx] / draws as f64 - mean * mean) / draws as f64).sqrt();
                worst = worst.max((mean - k * ctc[idx]).abs() / se);
            }
            worst
        };
        assert!(mean_error(Variant::Exact) < 5.0);
        assert!(mean_error(Variant::FullDof) > 5.0);
    }

    /// The same run on 1 and 2 threads is bit-identical (Section 5), at `d = 1e12`.
    #[test]
    fn bit_identical_on_one_and_two_threads() {
        let cfg = config(1_000_000_000_000, 3, 1e-12);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut sgd = ReducedSgd::from_seed(&cfg, 2, 9).unwrap();
                for _ in 0..5 {
                    sgd.step().unwrap();
                }
                sgd.state
            })
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one, two);
        assert!(
            one.gram.at(0, 0)
                != ReducedSgd::from_seed(&cfg, 2, 9)
                    .unwrap()
                    .state
                    .gram
                    .at(0, 0)
        );
    }

    /// A neuron whose noise part is zero keeps it exactly zero (eq. (R5)), and with
    /// `d - 2 < m` the Gram block keeps rank `d - 2` (to rounding).
    #[test]
    fn zero_noise_parts_and_small_d_keep_their_rank() {
        let cfg = config(50, 2, 0.05);
        let mut x = crate::init::reduced(&cfg.setting, 4).unwrap();
        *x.gram.at_mut(1, 1) = 0.0;
        *x.gram.at_mut(0, 1) = 0.0;
        *x.gram.at_mut(1, 0) = 0.0;
        let mut sgd = ReducedSgd::new(&cfg, x, 1).unwrap();
        for _ in 0..5 {
            sgd.step().unwrap();
        }
        assert_eq!(*sgd.state.gram.at(1, 1), 0.0);
        assert!(*sgd.state.gram.at(0, 0) > 0.0);
        let cfg = config(4, 3, 0.05);
        let mut sgd = ReducedSgd::from_seed(&cfg, 4, 1).unwrap();
        for _ in 0..5 {
            sgd.step().unwrap();
        }
        let (lambda, _) = sym_eigen(sgd.state.gram.entries(), 3);
        assert!(lambda[2].abs() <= 1e-12 * lambda[0], "{lambda:?}");
        assert!(lambda[1] > 1e-6 * lambda[0]);
    }
}
