//! Butcher tableaus as data: coefficients, rows of non-zero weights, and the explicit
//! family's tableau ([`ExplicitTableau`]) with its error estimate and dense output; and the
//! one linear combination of stages every step uses ([`combine`]). A tableau's weights are
//! [`Coef`]s (decimals or exact rationals) or plain `f64` decimals ([`Weight`]): DOP853's
//! are `f64`, so that a step specialised on its constant tableau
//! ([`crate::ode::dop853::Dop853`]) reads them as constants.

use crate::ode::control::rational;
use crate::scalar::Scalar;

/// A coefficient of a tableau.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Coef {
    /// A decimal, rounded to the nearest `f64` (then exact in any wider precision).
    Decimal(f64),
    /// The exact rational `num / den` (integers exact in `f64`), rounded once in the working
    /// precision.
    Ratio(f64, f64),
}

impl Coef {
    /// The coefficient at context `ctx`.
    pub fn value<S: Scalar>(self, ctx: S::Ctx) -> S {
        match self {
            Coef::Decimal(v) => S::from_f64(v, ctx),
            Coef::Ratio(num, den) => rational::<S>(num, den, ctx),
        }
    }

    /// The coefficient in `f64`.
    pub fn to_f64(self) -> f64 {
        self.value::<f64>(())
    }
}

/// A weight of a tableau row: a [`Coef`], or an `f64` decimal (the same value as
/// `Coef::Decimal` of it, in any precision).
pub trait Weight: Copy + std::fmt::Debug + PartialEq + 'static {
    /// The weight at context `ctx`.
    fn value<S: Scalar>(self, ctx: S::Ctx) -> S;
}

impl Weight for Coef {
    #[inline]
    fn value<S: Scalar>(self, ctx: S::Ctx) -> S {
        Coef::value(self, ctx)
    }
}

impl Weight for f64 {
    #[inline]
    fn value<S: Scalar>(self, ctx: S::Ctx) -> S {
        S::from_f64(self, ctx)
    }
}

/// A row of weights: the non-zero entries `(j, w_j)` on the stages `k_j`, in the order they
/// are summed.
pub type Row<W = Coef> = &'static [(usize, W)];

/// The error estimate of an explicit pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ErrorWeights<W: Weight = Coef> {
    /// `y1 - yhat1 = h sum_j e_j k_j`, measured by [`crate::ode::control::error_norm`].
    Embedded(Row<W>),
    /// Hairer's DOP853 norm: with `e5` and `e3` the scaled RMS norms of the fifth-order
    /// estimate `sum_j e5_j k_j` and the third-order one `sum_j (b_j - bhat_j) k_j`
    /// (`bhh`: the non-zero `bhat_j` subtracted from the solution weights `b_j`),
    /// `err = h e5^2 / sqrt(e5^2 + 0.01 e3^2)`.
    Hairer {
        /// Fifth-order error weights.
        e5: Row<W>,
        /// The non-zero weights `bhat_j` of the third-order solution.
        bhh: Row<W>,
    },
}

/// The continuous extension of an explicit pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DenseForm<W: Weight = Coef> {
    /// Dormand-Prince's fourth-order extension ([`crate::ode::dense::Kind::Dopri`]) with
    /// the weights of its last coefficient on `k_0..`; no evaluation.
    Dopri(Row<W>),
    /// DOP853's seventh-order extension ([`crate::ode::dense::Kind::Dop853`]): `stages`
    /// more stages (their `a_sj` rows, `k_s = f(y1)` first), and the `rows` of the
    /// coefficients `c_3..`.
    Dop853 {
        /// `a_sj` of the extra stages.
        stages: &'static [Row<W>],
        /// The weights of the coefficients `c_3..` on all stages.
        rows: &'static [Row<W>],
    },
}

/// An explicit Runge-Kutta pair with first-same-as-last: stage `s >= 1` is
/// `k_s = f(y0 + h sum_j a_sj k_j)` from row `a[s - 1]`, the last row holds the solution
/// weights `b_j`, and `f(y1)` is stage `a.len()` (the next step's `k_0`). The weights are
/// `W` ([`Weight`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExplicitTableau<W: Weight = Coef> {
    /// The method's name.
    pub name: &'static str,
    /// The order of the solution.
    pub order: u32,
    /// The order `q` the step-size control uses (local error `O(h^(q+1))`).
    pub estimate_order: u32,
    /// The stage rows, the solution weights last.
    pub a: &'static [Row<W>],
    /// The error estimate.
    pub error: ErrorWeights<W>,
    /// The continuous extension.
    pub dense: DenseForm<W>,
}

impl<W: Weight> ExplicitTableau<W> {
    /// Stages of a step (`f0` and the evaluations, `f(y1)` included).
    pub fn stages(&self) -> usize {
        self.a.len() + 1
    }

    /// Stages including those of the dense output.
    pub fn all_stages(&self) -> usize {
        match self.dense {
            DenseForm::Dopri(_) => self.stages(),
            DenseForm::Dop853 { stages, .. } => self.stages() + stages.len(),
        }
    }

    /// Whether the dense output costs evaluations.
    pub fn dense_evaluates(&self) -> bool {
        matches!(self.dense, DenseForm::Dop853 { stages, .. } if !stages.is_empty())
    }

    /// The longest row (the size of the coefficient buffer of [`combine`]).
    pub fn widest_row(&self) -> usize {
        let rows = self.a.iter().copied();
        let more: Vec<Row<W>> = match (self.error, self.dense) {
            (ErrorWeights::Embedded(e), DenseForm::Dopri(d)) => vec![e, d],
            (ErrorWeights::Hairer { e5, bhh }, DenseForm::Dopri(d)) => vec![e5, bhh, d],
            (ErrorWeights::Embedded(e), DenseForm::Dop853 { stages, rows }) => [e]
                .into_iter()
                .chain(stages.iter().chain(rows).copied())
                .collect(),
            (ErrorWeights::Hairer { e5, bhh }, DenseForm::Dop853 { stages, rows }) => [e5, bhh]
                .into_iter()
                .chain(stages.iter().chain(rows).copied())
                .collect(),
        };
        rows.chain(more).map(<[_]>::len).max().unwrap_or(0)
    }
}

/// How the `C_ij` terms of a Rosenbrock stage enter its right-hand side (two conventions of
/// the literature, with different roundings; each tableau keeps the one its reference
/// implementation uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CTerms {
    /// `f(u_i) + (sum_j C_ij k_j) / h`: the sum from zero in the row's order, then one
    /// product by `1/h` (Hairer and Wanner's `W`-transformed Rodas form).
    SumThenScale,
    /// `f(u_i) + sum_j (C_ij / h) k_j`: each coefficient divided by `h` first, the sum from
    /// its first term (Numerical Recipes' form).
    Folded,
}

/// How the stages after the last row of `a` form their argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// `u_i = u_(i-1) + k_(i-1)`, evaluated (the last stages of a stiffly accurate method,
    /// whose `a` rows continue those of the stage before with a weight 1 on its `k`).
    Chain,
    /// The argument and the evaluation of the stage before, reused (no evaluation).
    Reuse,
}

/// A Rosenbrock method's coefficients: `gamma`, the rows `a` of the stage arguments
/// (stage `s + 1` from row `s`, on the solved stages; the later stages as `tail` says), the
/// rows `c` of the `C_ij` terms (one per stage after the first: `c.len() + 1` stages) and how
/// they enter (`c_terms`), the solution and error weights `b`, `e` (empty for a stiffly
/// accurate method whose last stage gives both: `y1 = u_s + k_s`, error `k_s`), and the rows
/// of the dense output (empty: cubic Hermite). One generic step reads them
/// ([`crate::ode::rosenbrock::Rosenbrock`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RosenbrockTableau {
    /// The method's name.
    pub name: &'static str,
    /// The order of the solution.
    pub order: u32,
    /// The order `q` the step-size control uses.
    pub estimate_order: u32,
    /// The diagonal `gamma`.
    pub gamma: Coef,
    /// `a_ij` rows.
    pub a: &'static [Row],
    /// The stages after the last `a` row.
    pub tail: Tail,
    /// `C_ij` rows.
    pub c: &'static [Row],
    /// How the `C_ij` terms enter.
    pub c_terms: CTerms,
    /// Solution weights.
    pub b: Row,
    /// Error weights.
    pub e: Row,
    /// Dense-output rows.
    pub dense: &'static [Row],
}

impl RosenbrockTableau {
    /// The number of stages (each one solve).
    pub fn stages(&self) -> usize {
        self.c.len() + 1
    }

    /// Whether the last stage gives the solution and the error estimate (no `b`, `e`).
    pub fn stiffly_accurate(&self) -> bool {
        self.b.is_empty()
    }
}

/// `out = base + sum_j (h w_j) k_j` over the row's non-zero weights `(j, w_j)` in order
/// (`base` absent: zero), the products `h w_j` rounded once into `coef`. Term by term over
/// the whole vector: each component sums `base`, then the terms in the row's order (the same
/// operations as component by component), and the inner loop runs over contiguous slices.
#[inline]
pub fn combine<S: Scalar, W: Weight>(
    out: &mut [S],
    base: Option<&[S]>,
    row: &[(usize, W)],
    k: &[Vec<S>],
    h: &S,
    coef: &mut [S],
) {
    let ctx = h.ctx();
    for (c, &(_, w)) in coef.iter_mut().zip(row) {
        *c = h.clone() * w.value::<S>(ctx);
    }
    match base {
        Some(b) => out.clone_from_slice(&b[..out.len()]),
        None => out.iter_mut().for_each(|o| *o = S::zero(ctx)),
    }
    for (c, &(j, _)) in coef.iter().zip(row) {
        for (o, kj) in out.iter_mut().zip(&k[j]) {
            *o = o.clone() + c.clone() * kj.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ode::{dop853::DOP853, dopri5::DOPRI5};

    /// The solution weights sum to 1 and each stage's `a_sj` to its node `c_s` in
    /// `[0, 1]` (consistency; the transcription as a whole is checked by the order tests of
    /// `tests/ode_conformance.rs`).
    #[test]
    fn solution_weights_sum_to_one() {
        fn check<W: Weight>(t: ExplicitTableau<W>) {
            let v = |w: W| w.value::<f64>(());
            let b: f64 = t.a.last().unwrap().iter().map(|&(_, w)| v(w)).sum();
            assert!((b - 1.0).abs() < 1e-15, "{}: {b}", t.name);
            for row in t.a {
                let c: f64 = row.iter().map(|&(_, w)| v(w)).sum();
                // The rounding of the sum: a few ulps of the sum of magnitudes (DOP853's
                // rows reach 17 in magnitude for nodes <= 1).
                let slack = 4.0 * f64::EPSILON * row.iter().map(|&(_, w)| v(w).abs()).sum::<f64>();
                assert!((-slack..=1.0 + slack).contains(&c), "{}: c = {c}", t.name);
            }
        }
        check(DOP853);
        check(DOPRI5);
    }

    /// [`combine`] skips nothing it should not: one row on unit stages gives `h` times the
    /// weight sum, exactly for dyadic weights.
    #[test]
    fn combine_sums_the_weighted_stages() {
        const ROW: Row = &[(0, Coef::Decimal(0.5)), (2, Coef::Ratio(1.0, 4.0))];
        let k = vec![vec![1.0, 2.0], vec![100.0, 100.0], vec![4.0, 8.0]];
        let mut out = vec![0.0; 2];
        let mut coef = vec![0.0; 2];
        combine(&mut out, Some(&[1.0, 1.0]), ROW, &k, &2.0, &mut coef);
        assert_eq!(out, vec![1.0 + 1.0 + 2.0, 1.0 + 2.0 + 4.0]);
    }
}
