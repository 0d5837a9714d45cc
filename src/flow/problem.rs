//! The gradient flow as an ODE on the reduced state (`derivations/numerics.md`, eq. (F1)).
//!
//! The state vector `y` packs, in order: `a_0..a_{m-1}`, `b_0..b_{m-1}`, the upper triangle
//! of the Gram block `G` row by row (`G_00, G_01, .., G_0(m-1), G_11, ..`), then the
//! trainable entries of `E` row by row (none for `frozen`, the off-diagonal ones for
//! `identity-offdiag`, all for `linear`). Its length `2m + m(m+1)/2 + #trainable` does not
//! depend on `d`. In [`Coordinates::Decay`] the Gram block is stored instead as
//! `z_j = G_jj^(-2)` on the diagonal and the noise correlations
//! `r_jk = G_jk / sqrt(G_jj G_kk)` off it (eq. (F2)): the noise part decays algebraically,
//! `G_jj' ~ -c G_jj^3`, which is exactly linear in `z_j`. The right-hand side is
//!
//! `da/dtau = -dL/da`, `db/dtau = -dL/db`, `dG/dtau = -(Sigma G + G Sigma)`,
//! `dE/dtau = -(lr_head/lr) dL/dE` (trainable entries),
//!
//! with `L`, `dL/da`, `dL/db`, `Sigma` and `dL/dE` from
//! [`crate::moments::population::evaluate`] (`derivations/population.md`, eqs. (P5)-(P10)).

use crate::error::{Error, Result};
use crate::moments::population::{evaluate_into, Constants, Evaluation, Reduced};
use crate::scalar::Scalar;
use crate::setting::{Config, Model};
use crate::square::Square;

/// How the Gram block is stored in the state vector (`derivations/numerics.md`, (F2)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coordinates {
    /// `G_jk` itself (upper triangle).
    Plain,
    /// `z_j = G_jj^(-2)` and `r_jk = G_jk / sqrt(G_jj G_kk)`; needs every `G_jj > 0`.
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
    ctx: S::Ctx,
}

impl<S: Scalar> Problem<S> {
    /// The flow of `config` at context `ctx`, with the untrainable entries of `E` taken from
    /// `e0` (the initial head).
    /// Plain coordinates ([`Coordinates::Plain`]).
    pub fn new(config: &Config, e0: &Square<S>, ctx: S::Ctx) -> Self {
        Self::with_coordinates(config, e0, Coordinates::Plain, ctx)
    }

    /// The flow in the given coordinates.
    pub fn with_coordinates(
        config: &Config,
        e0: &Square<S>,
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
            fixed_e: e0.clone(),
            coordinates,
            ctx,
        }
    }

    /// The coordinates of the Gram block.
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

    /// Length of the state vector.
    pub fn len(&self) -> usize {
        let m = self.neurons;
        2 * m + m * (m + 1) / 2 + self.trainable.len()
    }

    /// Whether the state vector is empty (never: `m >= 1`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The position of the Gram entry `(j, k)`, `j <= k`, in the state vector.
    pub fn gram_index(&self, j: usize, k: usize) -> usize {
        let m = self.neurons;
        // Rows 0..j of the upper triangle hold m + (m-1) + .. + (m-j+1) entries.
        2 * m + j * m - j * j.saturating_sub(1) / 2 + (k - j)
    }

    /// The index of the first head entry in the state vector.
    pub fn head_from(&self) -> usize {
        let m = self.neurons;
        2 * m + m * (m + 1) / 2
    }

    /// Packs a reduced state into the state vector.
    pub fn pack(&self, x: &Reduced<S>) -> Vec<S> {
        let m = self.neurons;
        let mut y = Vec::with_capacity(self.len());
        y.extend(x.a.iter().cloned());
        y.extend(x.b.iter().cloned());
        for j in 0..m {
            for k in j..m {
                let g = x.gram.at(j, k).clone();
                y.push(match self.coordinates {
                    Coordinates::Plain => g,
                    Coordinates::Decay if j == k => S::one(self.ctx) / g.sq(),
                    Coordinates::Decay => {
                        g / (x.gram.at(j, j).clone() * x.gram.at(k, k).clone()).sqrt()
                    }
                });
            }
        }
        for &(j, r) in &self.trainable {
            y.push(x.e.at(j, r).clone());
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
    /// plain coordinates).
    pub fn unpack_into(&self, y: &[S], x: &mut Reduced<S>) {
        let m = self.neurons;
        x.a.clone_from_slice(&y[..m]);
        x.b.clone_from_slice(&y[m..2 * m]);
        let gram = &mut x.gram;
        // Decay coordinates: the diagonal first, G_jj = z_j^(-1/2), then the off-diagonal
        // entries G_jk = r_jk sqrt(G_jj G_kk) from it (no buffer, no recomputation).
        if self.coordinates == Coordinates::Decay {
            for j in 0..m {
                let g = S::one(self.ctx) / y[self.gram_index(j, j)].clone().sqrt();
                *gram.at_mut(j, j) = g;
            }
        }
        let mut i = 2 * m;
        for j in 0..m {
            for k in j..m {
                let g = match self.coordinates {
                    Coordinates::Plain => y[i].clone(),
                    Coordinates::Decay if j == k => {
                        i += 1;
                        continue;
                    }
                    Coordinates::Decay => {
                        y[i].clone() * (gram.at(j, j).clone() * gram.at(k, k).clone()).sqrt()
                    }
                };
                *gram.at_mut(j, k) = g.clone();
                *gram.at_mut(k, j) = g;
                i += 1;
            }
        }
        for &(j, r) in &self.trainable {
            *x.e.at_mut(j, r) = y[i].clone();
            i += 1;
        }
    }

    /// A work space for [`Problem::rhs_with`].
    pub fn workspace(&self) -> Workspace<S> {
        Workspace {
            x: self.unpack(&vec![S::one(self.ctx); self.len()]),
            eval: Evaluation::zeros(self.neurons, self.ctx),
            sigma_g: Square::zeros(self.neurons, self.ctx),
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

    /// The right-hand side `dy/dtau` (eq. (F1)) written into `dy` (of length
    /// [`Problem::len`]), with a reused work space: no allocation in `f64` (nor in
    /// [`crate::flow::dual::Dual`]). After the call `ws` holds the evaluation at `y`.
    pub fn rhs_into(&self, y: &[S], ws: &mut Workspace<S>, dy: &mut [S]) -> Result<()> {
        let m = self.neurons;
        self.unpack_into(y, &mut ws.x);
        evaluate_into(&self.constants, &self.model, &ws.x, &mut ws.eval)?;
        let x = &ws.x;
        let ev = &ws.eval;
        for j in 0..m {
            dy[j] = -ev.grad_a[j].clone();
            dy[m + j] = -ev.grad_b[j].clone();
        }
        ws.sigma_g.fill_with(|j, k| {
            let mut acc = S::zero(self.ctx);
            for l in 0..m {
                acc = acc + ev.noise_coef.at(j, l).clone() * x.gram.at(l, k).clone();
            }
            acc
        });
        let sigma_g = &ws.sigma_g;
        // (Sigma G + G Sigma)_jk = (Sigma G)_jk + (Sigma G)_kj (both symmetric).
        let dg = |j: usize, k: usize| -(sigma_g.at(j, k).clone() + sigma_g.at(k, j).clone());
        let mut i = 2 * m;
        for j in 0..m {
            for k in j..m {
                dy[i] = match self.coordinates {
                    Coordinates::Plain => dg(j, k),
                    // (F2): z' = -2 G^(-3) G', r' = G'_jk / sqrt(G_jj G_kk)
                    //       - (r/2) (G'_jj / G_jj + G'_kk / G_kk).
                    Coordinates::Decay if j == k => {
                        let gjj = x.gram.at(j, j).clone();
                        -(S::from_f64(2.0, self.ctx) * dg(j, j)) / (gjj.sq() * gjj)
                    }
                    Coordinates::Decay => {
                        let (gjj, gkk) = (x.gram.at(j, j).clone(), x.gram.at(k, k).clone());
                        let r = y[i].clone();
                        dg(j, k) / (gjj.clone() * gkk.clone()).sqrt()
                            - r * S::from_f64(0.5, self.ctx) * (dg(j, j) / gjj + dg(k, k) / gkk)
                    }
                };
                i += 1;
            }
        }
        for &(j, r) in &self.trainable {
            dy[i] = -(self.head_ratio.clone() * ev.grad_e.at(j, r).clone());
            i += 1;
        }
        if !dy.iter().all(Scalar::is_finite) || !ev.loss.is_finite() {
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
    for (o, v) in out.a.iter_mut().zip(&x.a) {
        *o = v.to_f64();
    }
    for (o, v) in out.b.iter_mut().zip(&x.b) {
        *o = v.to_f64();
    }
    let m = x.neurons();
    for i in 0..m {
        for j in 0..m {
            *out.gram.at_mut(i, j) = x.gram.at(i, j).to_f64();
            *out.e.at_mut(i, j) = x.e.at(i, j).to_f64();
        }
    }
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
