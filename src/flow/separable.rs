//! The separable flow of a frozen diagonal head (`derivations/numerics.md`, "Flows at large
//! m", eqs. (K1)-(K3)): its Jacobian in a compact layout, and the rates shared by the
//! right-hand side ([`crate::flow::Problem::rhs_into`]) and that Jacobian.
//!
//! With `E` frozen and diagonal the loss is `sum_j L_j(a_j, b_j, G_jj)`, `Sigma` is diagonal,
//! and the flow separates: each neuron's `(a_j, b_j, G_jj)` (or `z_j`) follows its own
//! `m = 1` flow, and each off-diagonal Gram coordinate `(j, k)` follows neurons `j`, `k` and
//! itself (eq. (K2)). The Jacobian is block lower triangular: `m` blocks of 3 x 3 and one
//! row of 7 entries per pair `j < k`. [`Layout`] stores it in `9 m + 7 m (m - 1) / 2`
//! numbers; [`crate::flow::linear::SeparableLu`] factors `I/(gamma h) - J` block by block.

use crate::error::Result;
use crate::flow::dual::Dual;
use crate::flow::jacobian::ExactJacobian;
use crate::flow::problem::{lift, Coordinates, Problem, Workspace};
use crate::moments::population::{evaluate_into, Constants, Evaluation, Reduced};
use crate::scalar::Scalar;
use crate::setting::Config;
use crate::square::Square;

/// The rate of the diagonal Gram coordinate of neuron `j` (eq. (K2)): `G_jj' = -(s g + s g)`
/// with `s = Sigma_jj`, `g = G_jj` (plain), `z_j' = -2 G_jj' / G_jj^3` (decay); the
/// operations of the general right-hand side in the same order.
#[inline]
pub(crate) fn diag_rate<S: Scalar>(coordinates: Coordinates, s: &S, g: &S) -> S {
    let sg = s.clone() * g.clone();
    let dg = -(sg.clone() + sg);
    match coordinates {
        Coordinates::Plain => dg,
        Coordinates::Decay => -(s.cst(2.0) * dg) / (g.sq() * g.clone()),
    }
}

/// The rate of the off-diagonal Gram coordinate `y` of the pair `j < k` (eq. (K2)):
/// `G_jk' = -(Sigma_jj G_jk + Sigma_kk G_jk)` (plain), and in decay coordinates
/// `r_jk' = G_jk' / root - (r_jk / 2) (G_jj' / G_jj + G_kk' / G_kk)` with
/// `root = sqrt(G_jj G_kk)`; the operations of the general right-hand side in the same order.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn pair_rate<S: Scalar>(
    coordinates: Coordinates,
    y: &S,
    g_jk: &S,
    (s_j, g_j): (&S, &S),
    (s_k, g_k): (&S, &S),
    root: &S,
) -> S {
    let djk = -(s_j.clone() * g_jk.clone() + s_k.clone() * g_jk.clone());
    match coordinates {
        Coordinates::Plain => djk,
        Coordinates::Decay => {
            let sg_j = s_j.clone() * g_j.clone();
            let sg_k = s_k.clone() * g_k.clone();
            let (dj, dk) = (-(sg_j.clone() + sg_j), -(sg_k.clone() + sg_k));
            djk / root.clone() - y.clone() * y.cst(0.5) * (dj / g_j.clone() + dk / g_k.clone())
        }
    }
}

/// Where the entries of the separable Jacobian sit, in the state vector and in the compact
/// layout: block `j` (row-major 3 x 3 over `a_j, b_j` and the diagonal Gram coordinate `j`)
/// at `9 j`; pair `p` (the `p`-th pair `j < k`, row by row) at `9 m + 7 p`, its derivatives
/// by `a_j, b_j, diag_j, a_k, b_k, diag_k` and its own coordinate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Neurons.
    pub m: usize,
    /// State length `2m + m(m+1)/2`.
    pub n: usize,
    /// The state index of the diagonal Gram coordinate of each neuron.
    pub diag: Vec<usize>,
    /// The pairs `(j, k, index of the coordinate (j, k))`, `j < k`, row by row.
    pub pairs: Vec<(usize, usize, usize)>,
}

impl Layout {
    /// The layout of `problem`'s state vector (a problem without head entries).
    pub fn new(problem: &Problem<impl Scalar>) -> Self {
        let m = problem.neurons();
        let pairs = (0..m)
            .flat_map(|j| (j + 1..m).map(move |k| (j, k)))
            .map(|(j, k)| (j, k, problem.gram_index(j, k)))
            .collect();
        Layout {
            m,
            n: problem.len(),
            diag: (0..m).map(|j| problem.gram_index(j, j)).collect(),
            pairs,
        }
    }

    /// Length of the compact Jacobian.
    pub fn len(&self) -> usize {
        9 * self.m + 7 * self.pairs.len()
    }

    /// Whether the compact Jacobian is empty (never: `m >= 1`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state indices of neuron `j`'s block: `a_j, b_j`, its diagonal Gram coordinate.
    pub fn block(&self, j: usize) -> [usize; 3] {
        [j, self.m + j, self.diag[j]]
    }

    /// The state indices of the seven columns of pair `p`'s row.
    pub fn pair_columns(&self, p: usize) -> [usize; 7] {
        let (j, k, own) = self.pairs[p];
        let [a, b, c] = self.block(j);
        let [d, e, f] = self.block(k);
        [a, b, c, d, e, f, own]
    }

    /// The dense row-major `n x n` Jacobian of the compact one (zero off the pattern).
    pub fn to_dense<S: Scalar>(&self, jac: &[S], zero: &S) -> Vec<S> {
        let n = self.n;
        let mut out = vec![zero.clone(); n * n];
        for j in 0..self.m {
            let idx = self.block(j);
            for (r, &row) in idx.iter().enumerate() {
                for (c, &col) in idx.iter().enumerate() {
                    out[row * n + col] = jac[9 * j + 3 * r + c].clone();
                }
            }
        }
        for p in 0..self.pairs.len() {
            let row = self.pairs[p].2;
            for (c, &col) in self.pair_columns(p).iter().enumerate() {
                out[row * n + col] = jac[9 * self.m + 7 * p + c].clone();
            }
        }
        out
    }

    /// The spectral radius estimate of the compact Jacobian: the Jacobian is block lower
    /// triangular, so its eigenvalues are those of the 3 x 3 blocks and the diagonal
    /// entries of the pair rows; the estimate is the largest of
    /// [`crate::ode::spectral::spectral_radius_capped`] on each block and of those
    /// entries' moduli.
    pub fn spectral_radius_capped<S: Scalar>(&self, jac: &[S], cap: f64) -> f64 {
        let mut rho = 0.0f64;
        for j in 0..self.m {
            let b: [f64; 9] = std::array::from_fn(|i| jac[9 * j + i].to_f64());
            rho = max_keep_nan(rho, crate::ode::spectral::spectral_radius_capped(&b, cap));
        }
        for p in 0..self.pairs.len() {
            rho = max_keep_nan(rho, jac[9 * self.m + 7 * p + 6].to_f64().abs());
        }
        rho
    }

    /// A bound on [`Layout::spectral_radius_capped`]: the largest of
    /// `sqrt(||B||_1 ||B||_inf)` over the blocks `B` and of the pair rows' diagonal moduli
    /// (NaN or infinite when an entry is).
    pub fn radius_bound<S: Scalar>(&self, jac: &[S]) -> f64 {
        let mut bound = 0.0f64;
        for j in 0..self.m {
            let b: [f64; 9] = std::array::from_fn(|i| jac[9 * j + i].to_f64().abs());
            let rows = (0..3).map(|r| b[3 * r] + b[3 * r + 1] + b[3 * r + 2]);
            let cols = (0..3).map(|c| b[c] + b[3 + c] + b[6 + c]);
            let row_max = rows.fold(0.0, max_keep_nan);
            let col_max = cols.fold(0.0, max_keep_nan);
            bound = max_keep_nan(bound, (row_max * col_max).sqrt());
        }
        for p in 0..self.pairs.len() {
            bound = max_keep_nan(bound, jac[9 * self.m + 7 * p + 6].to_f64().abs());
        }
        bound
    }
}

/// `max` that keeps a NaN (`f64::max` would drop it).
fn max_keep_nan(m: f64, v: f64) -> f64 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

/// The exact Jacobian of the separable flow in the compact [`Layout`]: one `Dual<3>` pass of
/// the `m = 1` evaluation per neuron and one `Dual<7>` evaluation of eq. (K2) per pair,
/// `O(m^2)` in all (the dense passes cost `O(m^5)`).
pub struct SeparableJacobian {
    problem: Problem<f64>,
    constants: Constants<Dual<3>>,
    ws: Workspace<f64>,
    layout: Layout,
    x: Reduced<f64>,
    one: Reduced<Dual<3>>,
    eval: Evaluation<Dual<3>>,
    /// Per neuron: `Sigma_jj` and `G_jj` with their tangents.
    sigma: Vec<(Dual<3>, Dual<3>)>,
}

impl SeparableJacobian {
    /// The evaluator for the flow of `config` through `x0` in `coordinates`, or `None` when
    /// that flow does not take the separable path ([`Problem::separable`]).
    pub fn new(config: &Config, x0: &Reduced<f64>, coordinates: Coordinates) -> Option<Self> {
        let problem = Problem::with_coordinates(config, x0, coordinates, ());
        problem
            .separable()
            .then(|| Self::for_problem(config, problem, &lift(x0, ())))
    }

    /// The evaluator for `problem` (taken to be separable; tests force it with
    /// [`Problem::set_separable`]), `x0` giving the shapes.
    pub fn for_problem(config: &Config, problem: Problem<f64>, x0: &Reduced<f64>) -> Self {
        let one = Reduced {
            a: vec![Dual::constant(0.0)],
            b: vec![Dual::constant(0.0)],
            gram: Square::from_entries(1, vec![Dual::constant(1.0)]),
            e: Square::from_entries(1, vec![Dual::constant(1.0)]),
        };
        SeparableJacobian {
            ws: problem.workspace(),
            constants: Constants::new(&config.setting, ()),
            layout: Layout::new(&problem),
            x: x0.clone(),
            one,
            eval: Evaluation::zeros(1, ()),
            sigma: vec![(Dual::constant(0.0), Dual::constant(0.0)); problem.neurons()],
            problem,
        }
    }

    /// The layout of the Jacobian this evaluator writes.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Neuron `j`'s block rows into `f` and `jac`; keeps `(Sigma_jj, G_jj)` with tangents.
    fn neuron(&mut self, j: usize, y: &[f64], f: &mut [f64], jac: &mut [f64]) -> Result<()> {
        let coordinates = self.problem.coordinates();
        let [ia, ib, id] = self.layout.block(j);
        let yd = Dual::<3>::variable(y[id], 2);
        let g = match coordinates {
            Coordinates::Plain => yd,
            Coordinates::Decay => Dual::one(()) / yd.sqrt(),
        };
        self.one.a[0] = Dual::variable(y[ia], 0);
        self.one.b[0] = Dual::variable(y[ib], 1);
        *self.one.gram.at_mut(0, 0) = g;
        *self.one.e.at_mut(0, 0) = Dual::constant(*self.x.e.at(j, j));
        evaluate_into(
            &self.constants,
            &self.problem.model,
            &self.one,
            &mut self.eval,
        )?;
        let s = *self.eval.noise_coef.at(0, 0);
        let rows = [
            -self.eval.grad_a[0],
            -self.eval.grad_b[0],
            diag_rate(coordinates, &s, &g),
        ];
        for (r, (row, i)) in rows.iter().zip([ia, ib, id]).enumerate() {
            f[i] = row.v;
            jac[9 * j + 3 * r..][..3].copy_from_slice(&row.d);
        }
        self.sigma[j] = (s, g);
        Ok(())
    }
}

/// `x` (tangents `0..3`) as a `Dual<7>` with its tangents at `offset..offset + 3`.
fn widen(x: &Dual<3>, offset: usize) -> Dual<7> {
    let mut d = [0.0; 7];
    d[offset..offset + 3].copy_from_slice(&x.d);
    Dual { v: x.v, d }
}

impl ExactJacobian<f64> for SeparableJacobian {
    fn eval(&mut self, y: &[f64], f: &mut [f64], jac: &mut [f64]) -> Result<()> {
        let coordinates = self.problem.coordinates();
        for j in 0..self.layout.m {
            if self.neuron(j, y, f, jac).is_err() {
                // The general right-hand side names the failing quantity.
                return self.problem.rhs_into(y, &mut self.ws, f);
            }
        }
        let base = 9 * self.layout.m;
        for (p, &(j, k, own)) in self.layout.pairs.iter().enumerate() {
            let (s_j, g_j) = (widen(&self.sigma[j].0, 0), widen(&self.sigma[j].1, 0));
            let (s_k, g_k) = (widen(&self.sigma[k].0, 3), widen(&self.sigma[k].1, 3));
            let yo = Dual::<7>::variable(y[own], 6);
            let (g_jk, root) = match coordinates {
                Coordinates::Plain => (yo, Dual::one(())),
                Coordinates::Decay => {
                    let root = (g_j * g_k).sqrt();
                    (yo * root, root)
                }
            };
            let rate = pair_rate(coordinates, &yo, &g_jk, (&s_j, &g_j), (&s_k, &g_k), &root);
            f[own] = rate.v;
            jac[base + 7 * p..][..7].copy_from_slice(&rate.d);
        }
        if !f.iter().all(|v| v.is_finite()) {
            return self.problem.rhs_into(y, &mut self.ws, f);
        }
        Ok(())
    }

    fn layout(&self) -> Option<&Layout> {
        Some(&self.layout)
    }
}
