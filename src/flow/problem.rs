//! The gradient flow as an ODE on the reduced state (`derivations/numerics.md`, eq. (F1)).
//!
//! In [`Coordinates::Plain`] the state vector `y` packs, in order: `a_0..a_{m-1}`,
//! `b_0..b_{m-1}`, the upper triangle of the Gram block `G` row by row (`G_00, G_01, ..,
//! G_0(m-1), G_11, ..`), then the trainable entries of `E` row by row (none for `frozen`,
//! the off-diagonal ones for `identity-offdiag`, all for `linear`). Its length
//! `2m + m(m+1)/2 + #trainable` does not depend on `d`. In [`Coordinates::Decay`] the Gram
//! block is stored instead as `z_j = G_jj^(-2)` (`j = 0..m-1`) followed by the noise
//! correlations `r_jk = G_jk / sqrt(G_jj G_kk)` (`j < k`, eq. (F2)): the noise part decays
//! algebraically, `G_jj' ~ -c G_jj^3`, which is exactly linear in `z_j`. The right-hand
//! side is
//!
//! `da/dtau = -dL/da`, `db/dtau = -dL/db`, `dG/dtau = -(Sigma G + G Sigma)`,
//! `dE/dtau = -(lr_head/lr) dL/dE` (trainable entries),
//!
//! with `L`, `dL/da`, `dL/db`, `Sigma` and `dL/dE` from
//! [`crate::moments::population::evaluate`] (`derivations/population.md`, eqs. (P5)-(P10)).

use crate::error::{Error, Result};
use crate::flow::control::Tolerance;
use crate::flow::separable::{diag_rate, pair_rate};
use crate::moments::population::{evaluate_into, Constants, Evaluation, Reduced};
use crate::scalar::Scalar;
use crate::setting::{Config, HeadMode, Model};
use crate::square::Square;

/// How the state is stored in the state vector (`derivations/numerics.md`, (F1)-(F2)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coordinates {
    /// `a, b`, the upper triangle of `G` row by row, the trainable head entries.
    Plain,
    /// `a, b`, then `z_j = G_jj^(-2)`, then the noise correlations
    /// `r_jk = G_jk / sqrt(G_jj G_kk)` (`j < k`, row by row), the head (eq. (F2)); needs
    /// every `G_jj > 0`.
    Decay,
}

/// The flow of one configuration, at the working precision `S`.
#[derive(Clone, Debug)]
pub struct Problem<S: Scalar> {
    /// The setting's constants.
    pub constants: Constants<S>,
    /// Head mode, normalization, stop-gradient.
    pub model: Model,
    /// `lr_head / lr`.
    pub head_ratio: S,
    neurons: usize,
    trainable: Vec<(usize, usize)>,
    /// The fixed head entries (the untrainable ones are read from here).
    fixed_e: Square<S>,
    coordinates: Coordinates,
    /// Whether the right-hand side takes the separable path ([`Problem::separable`]).
    separable: bool,
    ctx: S::Ctx,
}

/// From this many neurons on, the flow of a frozen diagonal head takes the separable path
/// (`derivations/numerics.md`, "Flows at large m"). Below, the general path, whose outputs
/// the committed reports record bit for bit (`reports/theorem43.toml` runs up to `m = 8`)
/// and whose dense solves cost little (state length at most 52).
pub const SEPARABLE_FROM: usize = 9;

/// Whether `e` is diagonal (every off-diagonal entry exactly zero).
fn is_diagonal<S: Scalar>(e: &Square<S>) -> bool {
    let zero = S::zero(e.at(0, 0).ctx());
    (0..e.n()).all(|j| {
        (0..e.n())
            .all(|k| j == k || e.at(j, k).partial_cmp(&zero) == Some(std::cmp::Ordering::Equal))
    })
}

impl<S: Scalar> Problem<S> {
    /// The flow of `config` at context `ctx`, with the untrainable entries of `E` taken from
    /// `x0.e` (the initial head), in plain coordinates ([`Coordinates::Plain`]).
    pub fn new(config: &Config, x0: &Reduced<S>, ctx: S::Ctx) -> Self {
        Self::with_coordinates(config, x0, Coordinates::Plain, ctx)
    }

    /// The flow in the given coordinates, for trajectories through `x0` (the untrainable
    /// head entries are `x0`'s).
    pub fn with_coordinates(
        config: &Config,
        x0: &Reduced<S>,
        coordinates: Coordinates,
        ctx: S::Ctx,
    ) -> Self {
        let m = config.setting.neurons;
        let trainable = (0..m)
            .flat_map(|j| (0..m).map(move |r| (j, r)))
            .filter(|&(j, r)| config.model.head.trainable(j, r))
            .collect();
        Problem {
            constants: Constants::new(&config.setting, ctx),
            model: config.model,
            head_ratio: S::from_f64(config.training.lr_head, ctx)
                / S::from_f64(config.training.lr, ctx),
            neurons: m,
            trainable,
            fixed_e: x0.e.clone(),
            coordinates,
            separable: config.model.head == HeadMode::Frozen
                && m >= SEPARABLE_FROM
                && is_diagonal(&x0.e),
            ctx,
        }
    }

    /// Whether the right-hand side takes the separable path (eqs. (K1)-(K2) of
    /// `derivations/numerics.md`): a frozen diagonal head and at least [`SEPARABLE_FROM`]
    /// neurons. The loss is then a sum of one-neuron losses, each neuron's coordinates follow
    /// an `m = 1` flow, and the off-diagonal Gram coordinates follow their two neurons.
    pub fn separable(&self) -> bool {
        self.separable
    }

    /// Forces the separable path on or off (tests compare the two paths at small `m`). On,
    /// it is the flow only for a frozen diagonal head.
    pub fn set_separable(&mut self, on: bool) {
        self.separable = on;
    }

    /// The coordinates of the state vector.
    pub fn coordinates(&self) -> Coordinates {
        self.coordinates
    }

    /// The context of the working precision.
    pub fn ctx(&self) -> S::Ctx {
        self.ctx
    }

    /// Number of neurons `m`.
    pub fn neurons(&self) -> usize {
        self.neurons
    }

    /// The trainable head entries `(j, r)` in the order of the state vector (from
    /// [`Problem::head_from`] on).
    pub fn trainable(&self) -> &[(usize, usize)] {
        &self.trainable
    }

    /// Length of the state vector.
    pub fn len(&self) -> usize {
        let m = self.neurons;
        2 * m + m * (m + 1) / 2 + self.trainable.len()
    }

    /// Whether the state vector is empty (never: `m >= 1`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The position of the Gram entry `(j, k)`, `j <= k`, in the state vector (`G_jk`,
    /// `z_j` or `r_jk` by coordinates).
    pub fn gram_index(&self, j: usize, k: usize) -> usize {
        let m = self.neurons;
        match self.coordinates {
            // Rows 0..j of the upper triangle hold m + (m-1) + .. + (m-j+1) entries.
            Coordinates::Plain => 2 * m + j * m - j * j.saturating_sub(1) / 2 + (k - j),
            Coordinates::Decay if j == k => 2 * m + j,
            // The strict upper triangle row by row: rows 0..j hold (m-1) + .. + (m-j).
            Coordinates::Decay => 3 * m + j * (2 * m - j - 1) / 2 + (k - j - 1),
        }
    }

    /// The index of the first noise correlation `r_jk` in the state vector
    /// ([`Coordinates::Decay`]; `usize::MAX` in plain coordinates, which have none). The
    /// correlations run to [`Problem::head_from`].
    pub fn corr_from(&self) -> usize {
        match self.coordinates {
            Coordinates::Plain => usize::MAX,
            Coordinates::Decay => 3 * self.neurons,
        }
    }

    /// The index of the first head entry in the state vector.
    pub fn head_from(&self) -> usize {
        let m = self.neurons;
        2 * m + m * (m + 1) / 2
    }

    /// `tol` with the index ranges of this state vector's correlations and head entries
    /// (the ranges of [`Tolerance::atol_at`]).
    pub fn tolerance(&self, tol: Tolerance) -> Tolerance {
        Tolerance {
            corr_from: self.corr_from(),
            head_from: self.head_from(),
            ..tol
        }
    }

    /// Half the rate of `||E - diag(E)||_F^2` along the flow at the state vector `y` with
    /// right-hand side `f = f(y)`: `sum_(j != r, trainable) E_jr dE_jr/dtau`, in `f64`
    /// (the untrainable entries are constant). Its sign change inside a step brackets the
    /// peak of the off-diagonal norm (`derivations/phases.md`, eq. (E6)).
    pub fn offdiag_rate(&self, y: &[S], f: &[S]) -> f64 {
        let from = self.head_from();
        self.trainable
            .iter()
            .enumerate()
            .filter(|(_, &(j, r))| j != r)
            .map(|(i, _)| y[from + i].to_f64() * f[from + i].to_f64())
            .sum()
    }

    /// Packs a reduced state into the state vector.
    pub fn pack(&self, x: &Reduced<S>) -> Vec<S> {
        let m = self.neurons;
        let mut y = vec![S::zero(self.ctx); self.len()];
        for (yi, c) in y.iter_mut().zip(x.a.iter().chain(&x.b)) {
            *yi = c.clone();
        }
        for j in 0..m {
            for k in j..m {
                let g = x.gram.at(j, k).clone();
                y[self.gram_index(j, k)] = match self.coordinates {
                    Coordinates::Plain => g,
                    Coordinates::Decay if j == k => S::one(self.ctx) / g.sq(),
                    Coordinates::Decay => {
                        g / (x.gram.at(j, j).clone() * x.gram.at(k, k).clone()).sqrt()
                    }
                };
            }
        }
        for (i, &(j, r)) in self.trainable.iter().enumerate() {
            y[self.head_from() + i] = x.e.at(j, r).clone();
        }
        y
    }

    /// Unpacks a state vector into reduced coordinates (the Gram block symmetric, the
    /// untrainable head entries fixed).
    pub fn unpack(&self, y: &[S]) -> Reduced<S> {
        let m = self.neurons;
        let mut x = Reduced {
            a: y[..m].to_vec(),
            b: y[m..2 * m].to_vec(),
            gram: Square::zeros(m, self.ctx),
            e: self.fixed_e.clone(),
        };
        self.unpack_into(y, &mut x);
        x
    }

    /// [`Problem::unpack`] into an existing state of the right size (no allocation in
    /// `f64`).
    pub fn unpack_into(&self, y: &[S], x: &mut Reduced<S>) {
        self.unpack_sized(self.neurons, y, x, None);
    }

    /// [`Problem::unpack_into`] for `m = self.neurons`, passed in so that a compile-time `m`
    /// reaches the loops ([`Problem::rhs_into`]). In decay coordinates it also
    /// writes `sqrt(G_jj G_kk)` at `j m + k` (`j < k`) into `roots`, when given: the
    /// right-hand side divides by the same root.
    #[inline(always)]
    fn unpack_sized(&self, m: usize, y: &[S], x: &mut Reduced<S>, mut roots: Option<&mut [S]>) {
        x.a[..m].clone_from_slice(&y[..m]);
        x.b[..m].clone_from_slice(&y[m..2 * m]);
        let gram = &mut x.gram.entries_mut()[..m * m];
        match self.coordinates {
            Coordinates::Plain => {
                let mut i = 2 * m;
                for j in 0..m {
                    for k in j..m {
                        gram[j * m + k] = y[i].clone();
                        gram[k * m + j] = y[i].clone();
                        i += 1;
                    }
                }
            }
            Coordinates::Decay => {
                // The diagonal first, G_jj = z_j^(-1/2), then the off-diagonal entries
                // G_jk = r_jk sqrt(G_jj G_kk) from it.
                for j in 0..m {
                    gram[j * m + j] = S::one(self.ctx) / y[2 * m + j].clone().sqrt();
                }
                let mut i = 3 * m;
                for j in 0..m {
                    for k in j + 1..m {
                        let root = (gram[j * m + j].clone() * gram[k * m + k].clone()).sqrt();
                        if let Some(roots) = roots.as_deref_mut() {
                            roots[j * m + k] = root.clone();
                        }
                        let g = y[i].clone() * root;
                        gram[j * m + k] = g.clone();
                        gram[k * m + j] = g;
                        i += 1;
                    }
                }
            }
        }
        let e = &mut x.e.entries_mut()[..m * m];
        let head = &y[self.head_from()..];
        for (&(j, r), v) in self.trainable.iter().zip(head) {
            e[j * m + r] = v.clone();
        }
    }

    /// A work space for [`Problem::rhs_with`].
    pub fn workspace(&self) -> Workspace<S> {
        Workspace {
            x: self.unpack(&vec![S::one(self.ctx); self.len()]),
            eval: Evaluation::zeros(self.neurons, self.ctx),
            sigma_g: Square::zeros(self.neurons, self.ctx),
            roots: Square::zeros(self.neurons, self.ctx),
            one: Reduced {
                a: vec![S::zero(self.ctx)],
                b: vec![S::zero(self.ctx)],
                gram: Square::identity(1, self.ctx),
                e: Square::identity(1, self.ctx),
            },
            one_eval: Evaluation::zeros(1, self.ctx),
        }
    }

    /// The right-hand side `dy/dtau` (eq. (F1)) and the loss at `y`. Errors when a
    /// normalization variance vanishes or a value is not finite.
    pub fn rhs_with_loss(&self, y: &[S]) -> Result<(Vec<S>, S)> {
        let mut ws = self.workspace();
        let dy = self.rhs_with(y, &mut ws)?;
        Ok((dy, ws.eval.loss.clone()))
    }

    /// The right-hand side `dy/dtau` (eq. (F1)) with a reused work space (after the call
    /// `ws` holds the evaluation at `y`).
    pub fn rhs_with(&self, y: &[S], ws: &mut Workspace<S>) -> Result<Vec<S>> {
        let mut dy = vec![S::zero(self.ctx); self.len()];
        self.rhs_into(y, ws, &mut dy)?;
        Ok(dy)
    }

    /// The right-hand side `dy/dtau` (eqs. (F1)-(F2)) written into `dy` (of length
    /// [`Problem::len`]), with a reused work space: no allocation in `f64` (nor in
    /// [`crate::flow::dual::Dual`]). After the call `ws` holds the evaluation at `y`.
    pub fn rhs_into(&self, y: &[S], ws: &mut Workspace<S>, dy: &mut [S]) -> Result<()> {
        if self.separable {
            return match self.rhs_separable(y, ws, dy) {
                Ok(()) => Ok(()),
                // The general path names the failing quantity as it always did.
                Err(_) => self.rhs_sized::<0>(y, ws, dy),
            };
        }
        // One code path; for the small m of the flow it is instantiated with m a
        // compile-time constant (as `evaluate_into` is), so that its loops unroll.
        match self.neurons {
            1 => self.rhs_sized::<1>(y, ws, dy),
            2 => self.rhs_sized::<2>(y, ws, dy),
            3 => self.rhs_sized::<3>(y, ws, dy),
            4 => self.rhs_sized::<4>(y, ws, dy),
            _ => self.rhs_sized::<0>(y, ws, dy),
        }
    }

    /// [`Problem::rhs_into`] for `m = M` neurons (`M = 0`: `self.neurons`).
    fn rhs_sized<const M: usize>(
        &self,
        y: &[S],
        ws: &mut Workspace<S>,
        dy: &mut [S],
    ) -> Result<()> {
        let m = if M == 0 { self.neurons } else { M };
        let mm = m * m;
        let Workspace {
            x,
            eval,
            sigma_g,
            roots,
            ..
        } = ws;
        let roots = &mut roots.entries_mut()[..mm];
        self.unpack_sized(m, y, x, Some(&mut *roots));
        evaluate_into(&self.constants, &self.model, x, eval)?;
        let (x, ev, roots) = (&*x, &*eval, &*roots);
        let (grad_a, grad_b) = (&ev.grad_a[..m], &ev.grad_b[..m]);
        for j in 0..m {
            dy[j] = -grad_a[j].clone();
            dy[m + j] = -grad_b[j].clone();
        }
        let noise = &ev.noise_coef.entries()[..mm];
        let gram = &x.gram.entries()[..mm];
        let sg = &mut sigma_g.entries_mut()[..mm];
        for j in 0..m {
            for k in 0..m {
                let mut acc = S::zero(self.ctx);
                for l in 0..m {
                    acc = acc + noise[j * m + l].clone() * gram[l * m + k].clone();
                }
                sg[j * m + k] = acc;
            }
        }
        let sg = &*sg;
        // (Sigma G + G Sigma)_jk = (Sigma G)_jk + (Sigma G)_kj (both symmetric).
        let dg = |j: usize, k: usize| -(sg[j * m + k].clone() + sg[k * m + j].clone());
        match self.coordinates {
            Coordinates::Plain => {
                let mut i = 2 * m;
                for j in 0..m {
                    for k in j..m {
                        dy[i] = dg(j, k);
                        i += 1;
                    }
                }
            }
            Coordinates::Decay => {
                // (F2): z' = -2 G^(-3) G', r' = G'_jk / sqrt(G_jj G_kk)
                //       - (r/2) (G'_jj / G_jj + G'_kk / G_kk).
                let two = S::from_f64(2.0, self.ctx);
                let half = S::from_f64(0.5, self.ctx);
                for j in 0..m {
                    let gjj = gram[j * m + j].clone();
                    dy[2 * m + j] = -(two.clone() * dg(j, j)) / (gjj.sq() * gjj);
                }
                let mut i = 3 * m;
                for j in 0..m {
                    for k in j + 1..m {
                        let (gjj, gkk) = (gram[j * m + j].clone(), gram[k * m + k].clone());
                        let r = y[i].clone();
                        dy[i] = dg(j, k) / roots[j * m + k].clone()
                            - r * half.clone() * (dg(j, j) / gjj + dg(k, k) / gkk);
                        i += 1;
                    }
                }
            }
        }
        let head = self.head_from();
        let grad_e = &ev.grad_e.entries()[..mm];
        for (i, &(j, r)) in self.trainable.iter().enumerate() {
            dy[head + i] = -(self.head_ratio.clone() * grad_e[j * m + r].clone());
        }
        if !dy.iter().all(Scalar::is_finite) || !ev.loss.is_finite() {
            return Err(Error::numerical("flow right-hand side", "not finite"));
        }
        Ok(())
    }

    /// The separable right-hand side (`derivations/numerics.md`, eqs. (K1)-(K2)): each
    /// neuron's rates from its own `m = 1` evaluation, each pair's from eq. (K2); `O(m^2)`.
    /// The rates are those of the general path to rounding (the same operations where the
    /// general path adds exact zeros); the loss is summed per neuron. `ws.eval` holds the
    /// gradients, the diagonal `Sigma` and the loss (not the moments).
    fn rhs_separable(&self, y: &[S], ws: &mut Workspace<S>, dy: &mut [S]) -> Result<()> {
        let m = self.neurons;
        let Workspace {
            x,
            eval,
            roots,
            one,
            one_eval,
            ..
        } = ws;
        let roots = &mut roots.entries_mut()[..m * m];
        self.unpack_sized(m, y, x, Some(&mut *roots));
        let mut loss = S::zero(self.ctx);
        for v in eval.noise_coef.entries_mut() {
            *v = S::zero(self.ctx);
        }
        for j in 0..m {
            one.a[0] = x.a[j].clone();
            one.b[0] = x.b[j].clone();
            *one.gram.at_mut(0, 0) = x.gram.at(j, j).clone();
            *one.e.at_mut(0, 0) = x.e.at(j, j).clone();
            evaluate_into(&self.constants, &self.model, one, one_eval)?;
            let s = one_eval.noise_coef.at(0, 0).clone();
            dy[j] = -one_eval.grad_a[0].clone();
            dy[m + j] = -one_eval.grad_b[0].clone();
            dy[self.gram_index(j, j)] = diag_rate(self.coordinates, &s, x.gram.at(j, j));
            eval.grad_a[j] = one_eval.grad_a[0].clone();
            eval.grad_b[j] = one_eval.grad_b[0].clone();
            *eval.noise_coef.at_mut(j, j) = s;
            loss = loss + one_eval.loss.clone();
        }
        let one = S::one(self.ctx);
        for j in 0..m {
            for k in j + 1..m {
                let i = self.gram_index(j, k);
                let root = match self.coordinates {
                    Coordinates::Plain => &one,
                    Coordinates::Decay => &roots[j * m + k],
                };
                dy[i] = pair_rate(
                    self.coordinates,
                    &y[i],
                    x.gram.at(j, k),
                    (eval.noise_coef.at(j, j), x.gram.at(j, j)),
                    (eval.noise_coef.at(k, k), x.gram.at(k, k)),
                    root,
                );
            }
        }
        for v in eval.grad_e.entries_mut() {
            *v = S::zero(self.ctx);
        }
        eval.loss = loss;
        if !dy.iter().all(Scalar::is_finite) || !eval.loss.is_finite() {
            return Err(Error::numerical("flow right-hand side", "not finite"));
        }
        Ok(())
    }

    /// The right-hand side `dy/dtau` (eq. (F1)).
    pub fn rhs(&self, y: &[S]) -> Result<Vec<S>> {
        self.rhs_with_loss(y).map(|(dy, _)| dy)
    }
}

/// Reused buffers of [`Problem::rhs_with`]: the unpacked state and the evaluation.
#[derive(Clone, Debug)]
pub struct Workspace<S: Scalar> {
    /// The reduced state of the last evaluation.
    pub x: Reduced<S>,
    /// The population evaluation at `x`.
    pub eval: Evaluation<S>,
    /// `Sigma G` at `x` (buffer of [`Problem::rhs_into`]).
    sigma_g: Square<S>,
    /// `sqrt(G_jj G_kk)` (`j < k`) of the decay coordinates at `x`.
    roots: Square<S>,
    /// One neuron's reduced state and evaluation (the separable path).
    one: Reduced<S>,
    one_eval: Evaluation<S>,
}

/// The `f64` copy of a reduced state.
pub fn to_f64<S: Scalar>(x: &Reduced<S>) -> Reduced<f64> {
    let m = x.neurons();
    Reduced {
        a: x.a.iter().map(Scalar::to_f64).collect(),
        b: x.b.iter().map(Scalar::to_f64).collect(),
        gram: Square::from_fn(m, |i, j| x.gram.at(i, j).to_f64()),
        e: Square::from_fn(m, |i, j| x.e.at(i, j).to_f64()),
    }
}

/// [`to_f64`] into an existing state of the same size (no allocation).
pub fn to_f64_into<S: Scalar>(x: &Reduced<S>, out: &mut Reduced<f64>) {
    // Entry by entry in the layouts the two states share (`m` and `m x m` row-major); in
    // `f64` a plain copy.
    fn copy<S: Scalar>(from: &[S], to: &mut [f64]) {
        match S::f64_slice(from) {
            Some(f) if f.len() == to.len() => to.copy_from_slice(f),
            _ => {
                for (o, v) in to.iter_mut().zip(from) {
                    *o = v.to_f64();
                }
            }
        }
    }
    copy(&x.a, &mut out.a);
    copy(&x.b, &mut out.b);
    copy(x.gram.entries(), out.gram.entries_mut());
    copy(x.e.entries(), out.e.entries_mut());
}

/// The reduced state at context `ctx` from an `f64` one (exact for MPFR at >= 53 bits).
pub fn lift<S: Scalar>(x: &Reduced<f64>, ctx: S::Ctx) -> Reduced<S> {
    let m = x.neurons();
    Reduced {
        a: x.a.iter().map(|&v| S::from_f64(v, ctx)).collect(),
        b: x.b.iter().map(|&v| S::from_f64(v, ctx)).collect(),
        gram: Square::from_fn(m, |i, j| S::from_f64(*x.gram.at(i, j), ctx)),
        e: Square::from_fn(m, |i, j| S::from_f64(*x.e.at(i, j), ctx)),
    }
}
