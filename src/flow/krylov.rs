//! Matrix-free Rosenbrock stages for the trained heads at large `m`
//! (`derivations/numerics.md`, "Flows at large m", eqs. (K5)-(K8)).
//!
//! The stage systems `(I/(gamma h) - J) k = w` of Rodas5 are solved by GMRES with the exact
//! product `J v` (one [`Dual<1>`] pass through the right-hand side, `O(m^3)`, eq. (K6)),
//! left-preconditioned by `P = I/(gamma h) - J_EE`: the head-head part of the exact
//! Jacobian, which is block diagonal by rows of `E` (eq. (K5)) and carries the stiff modes.
//! Its `m` blocks come from `ceil(m / 16)` passes of [`Dual<16>`] that seed every head entry
//! of column `r` along direction `r` (a colouring of the columns that is exact because the
//! blocks do not share rows). GMRES minimises the preconditioned residual in the norm of
//! the error control and stops at [`STAGE_TOL`] of the tolerance (eq. (K7)).
//!
//! Nothing here is `O(n^2)`: the dense Jacobian (`n ~ 1.5 m^2` unknowns, `O(m^5)` to form,
//! `O(m^6)` to factor) is never formed.

use crate::error::{Error, Result};
use crate::flow::control::Tolerance;
use crate::flow::dual::Dual;
use crate::flow::problem::{lift, Coordinates, Problem, Workspace};
use crate::moments::population::Reduced;
use crate::setting::{Config, HeadMode};

/// From this many neurons on, the flow of a trained head (`identity-offdiag`, `linear`)
/// takes the matrix-free Rosenbrock stages of this module. Below, the dense exact Jacobian
/// and its LU, whose outputs the committed reports record bit for bit (they run `m <= 8`).
pub const KRYLOV_FROM: usize = 9;

/// The largest Krylov basis of one stage solve; a stage that needs more fails the attempt
/// (the step is retried smaller, where `P^(-1) A` is closer to the identity).
pub const MAX_ITERATIONS: usize = 60;

/// The stopping threshold of a stage solve (eq. (K7)): the preconditioned residual, in the
/// RMS norm of the error control (units of the local tolerance), at most `1e-6`.
pub const STAGE_TOL: f64 = 1e-6;

/// The rounding floor of a stage solve (eq. (K7)): a preconditioned residual below
/// `1e-13` of the right-hand side's is accepted (the dense LU's own solution carries
/// rounding errors of about that relative order).
pub const STAGE_FLOOR: f64 = 1e-13;

/// Whether the flow of `config` from `x0` takes the matrix-free stages by default: a
/// trained head with at least [`KRYLOV_FROM`] neurons.
pub fn default_on(config: &Config, neurons: usize) -> bool {
    config.model.head != HeadMode::Frozen && neurons >= KRYLOV_FROM
}

/// The matrix-free stage solver: the point `y0` of the step, the head blocks there, their
/// factors for the current `1/(gamma h)`, and the GMRES work space.
pub struct Krylov {
    jv: Problem<Dual<1>>,
    jv_ws: Workspace<Dual<1>>,
    yd: Vec<Dual<1>>,
    fd: Vec<Dual<1>>,
    blk: Problem<Dual<16>>,
    blk_ws: Workspace<Dual<16>>,
    y16: Vec<Dual<16>>,
    f16: Vec<Dual<16>>,
    head_from: usize,
    /// Per head row `j`: the state indices of its trainable entries and their columns.
    rows: Vec<Vec<(usize, usize)>>,
    /// Per head row: the block `d f_(j,r) / d E_(j,s)` (row-major), then the factors of
    /// `I/(gamma h) - block` and their pivots.
    blocks: Vec<Vec<f64>>,
    factors: Vec<Vec<f64>>,
    pivots: Vec<Vec<usize>>,
    y0: Vec<f64>,
    inv_gh: f64,
    /// `1 / (sc_i sqrt(n))`: the weights of the RMS norm of the error control at `y0`.
    weight: Vec<f64>,
    basis: Vec<Vec<f64>>,
    hess: Vec<Vec<f64>>,
    cs: Vec<(f64, f64)>,
    g: Vec<f64>,
    tmp: Vec<f64>,
    tmp2: Vec<f64>,
    row_scratch: Vec<f64>,
    /// Products `J v` (one dual pass each), GMRES iterations and stage solves so far.
    pub products: u64,
    /// GMRES iterations so far (each one product `J v` and one preconditioner solve).
    pub iterations: u64,
    /// Stage solves so far.
    pub solves: u64,
}

impl Krylov {
    /// The solver for the flow of `config` through `x0` in `coordinates` (the problem of
    /// [`Problem::with_coordinates`]).
    pub fn new(config: &Config, x0: &Reduced<f64>, coordinates: Coordinates) -> Self {
        let jv = Problem::with_coordinates(config, &lift(x0, ()), coordinates, ());
        let blk = Problem::with_coordinates(config, &lift(x0, ()), coordinates, ());
        let n = jv.len();
        let m = jv.neurons();
        let head_from = jv.head_from();
        let mut rows = vec![Vec::new(); m];
        for (i, &(j, r)) in jv.trainable().iter().enumerate() {
            rows[j].push((head_from + i, r));
        }
        let sizes: Vec<usize> = rows.iter().map(Vec::len).collect();
        Krylov {
            jv_ws: jv.workspace(),
            yd: vec![Dual::constant(0.0); n],
            fd: vec![Dual::constant(0.0); n],
            jv,
            blk_ws: blk.workspace(),
            y16: vec![Dual::constant(0.0); n],
            f16: vec![Dual::constant(0.0); n],
            blk,
            head_from,
            rows,
            blocks: sizes.iter().map(|&t| vec![0.0; t * t]).collect(),
            factors: sizes.iter().map(|&t| vec![0.0; t * t]).collect(),
            pivots: sizes.iter().map(|&t| vec![0; t]).collect(),
            y0: vec![0.0; n],
            inv_gh: 1.0,
            weight: vec![0.0; n],
            basis: Vec::new(),
            hess: Vec::new(),
            cs: Vec::new(),
            g: Vec::new(),
            tmp: vec![0.0; n],
            tmp2: vec![0.0; n],
            row_scratch: vec![0.0; m],
            products: 0,
            iterations: 0,
            solves: 0,
        }
    }

    /// Head row `j`'s block of the Jacobian at the last point (row-major, `t x t`) and the
    /// state indices of its `t` trainable entries (eq. (K5)).
    pub fn head_block(&self, j: usize) -> (&[f64], Vec<usize>) {
        (
            &self.blocks[j],
            self.rows[j].iter().map(|&(i, _)| i).collect(),
        )
    }

    /// The head blocks of the Jacobian at `y0` (eq. (K5)), and `f(y0)` into `f`
    /// (bit-identical to the `f64` right-hand side).
    pub fn set_point(&mut self, y0: &[f64], f: &mut [f64]) -> Result<()> {
        self.y0.copy_from_slice(y0);
        let m = self.rows.len();
        for from in (0..m).step_by(16) {
            for (yd, &v) in self.y16.iter_mut().zip(y0) {
                *yd = Dual::constant(v);
            }
            for row in &self.rows {
                for &(i, r) in row {
                    // Column r seeds direction r - from (none outside this pass's columns).
                    self.y16[i] = Dual::variable(y0[i], r.wrapping_sub(from));
                }
            }
            self.blk
                .rhs_into(&self.y16, &mut self.blk_ws, &mut self.f16)?;
            for (row, block) in self.rows.iter().zip(&mut self.blocks) {
                let t = row.len();
                for (a, &(i, _)) in row.iter().enumerate() {
                    for (b, &(_, s)) in row.iter().enumerate() {
                        if (from..from + 16).contains(&s) {
                            block[a * t + b] = self.f16[i].d[s - from];
                        }
                    }
                }
            }
        }
        for (fi, d) in f.iter_mut().zip(&self.f16) {
            *fi = d.v;
        }
        Ok(())
    }

    /// Factors `I/(gamma h) - J_EE` with `inv_gh = 1/(gamma h)` (partial pivoting per block)
    /// and sets the weights of the error control at `y0` (eq. (K7)).
    pub fn factor(&mut self, inv_gh: f64, tol: Tolerance) -> Result<()> {
        self.inv_gh = inv_gh;
        let n = self.y0.len();
        let root = (n as f64).sqrt();
        for (i, (w, y)) in self.weight.iter_mut().zip(&self.y0).enumerate() {
            *w = 1.0 / (tol.scale_at(i, y.abs()) * root);
        }
        for ((block, lu), piv) in self
            .blocks
            .iter()
            .zip(&mut self.factors)
            .zip(&mut self.pivots)
        {
            let t = piv.len();
            for (a, (l, b)) in lu.iter_mut().zip(block.iter()).enumerate() {
                *l = if a / t == a % t { inv_gh - b } else { -b };
            }
            lu_in_place(lu, piv, t)?;
        }
        Ok(())
    }

    /// `out = P^(-1) v` with `P = I/(gamma h) - J_EE` (eq. (K5)).
    fn precondition(&mut self, v: &[f64], out: &mut [f64]) {
        for (o, x) in out[..self.head_from].iter_mut().zip(&v[..self.head_from]) {
            *o = x / self.inv_gh;
        }
        let x = &mut self.row_scratch;
        for ((row, lu), piv) in self.rows.iter().zip(&self.factors).zip(&self.pivots) {
            let t = row.len();
            for (xi, &(i, _)) in x.iter_mut().zip(row) {
                *xi = v[i];
            }
            lu_solve(lu, piv, t, &mut x[..t]);
            for (&(i, _), xi) in row.iter().zip(x.iter()) {
                out[i] = *xi;
            }
        }
    }

    /// `out = (I/(gamma h) - J) v` with the exact `J v` at `y0`: one `Dual<1>` pass (eq.
    /// (K6)).
    fn apply(&mut self, v: &[f64], out: &mut [f64]) -> Result<()> {
        for ((yd, &y), &vi) in self.yd.iter_mut().zip(&self.y0).zip(v) {
            *yd = Dual { v: y, d: [vi] };
        }
        self.products += 1;
        self.jv.rhs_into(&self.yd, &mut self.jv_ws, &mut self.fd)?;
        for ((o, d), &vi) in out.iter_mut().zip(&self.fd).zip(v) {
            *o = self.inv_gh * vi - d.d[0];
        }
        Ok(())
    }

    /// The preconditioned operator in weighted coordinates, `z -> W P^(-1) A W^(-1) z`.
    fn operator(&mut self, z: &[f64], out: &mut [f64]) -> Result<()> {
        let mut x = std::mem::take(&mut self.tmp);
        let mut ax = std::mem::take(&mut self.tmp2);
        for ((xi, zi), w) in x.iter_mut().zip(z).zip(&self.weight) {
            *xi = zi / w;
        }
        let r = self.apply(&x, &mut ax);
        if r.is_ok() {
            self.precondition(&ax, out);
            for (o, w) in out.iter_mut().zip(&self.weight) {
                *o *= w;
            }
        }
        self.tmp = x;
        self.tmp2 = ax;
        r
    }

    /// Solves `(I/(gamma h) - J) k = w` at the point and factors set last (eq. (K7)):
    /// GMRES from `k_0 = P^(-1) w`, minimising `||W P^(-1) (w - A k)||_2`, until that is at
    /// most `max(STAGE_TOL, STAGE_FLOOR ||W P^(-1) w||)`. Errors when the basis of
    /// [`MAX_ITERATIONS`] does not reach it, or on a non-finite value.
    pub fn solve(&mut self, w: &[f64], k: &mut [f64]) -> Result<()> {
        self.solves += 1;
        let n = w.len();
        // c = W P^(-1) w and the start z0 = c (k_0 = P^(-1) w).
        let mut c = vec![0.0; n];
        self.precondition(w, &mut c);
        for (ci, wt) in c.iter_mut().zip(&self.weight) {
            *ci *= wt;
        }
        let target = STAGE_TOL.max(STAGE_FLOOR * norm(&c));
        let mut z = c.clone();
        let mut r = vec![0.0; n];
        self.operator(&z, &mut r)?;
        for (ri, ci) in r.iter_mut().zip(&c) {
            *ri = ci - *ri;
        }
        let beta = norm(&r);
        if !beta.is_finite() {
            return Err(Error::numerical(
                "krylov stage solve",
                "non-finite residual",
            ));
        }
        if beta > target {
            self.basis.clear();
            self.hess.clear();
            self.cs.clear();
            self.g.clear();
            self.g.push(beta);
            self.basis.push(r.iter().map(|x| x / beta).collect());
            let mut done = false;
            for it in 0..MAX_ITERATIONS {
                self.iterations += 1;
                let mut v = vec![0.0; n];
                let q = std::mem::take(&mut self.basis[it]);
                let res = self.operator(&q, &mut v);
                self.basis[it] = q;
                res?;
                // Modified Gram-Schmidt.
                let mut col = vec![0.0; it + 2];
                for (i, b) in self.basis.iter().enumerate() {
                    let hij = dot(b, &v);
                    col[i] = hij;
                    for (vi, bi) in v.iter_mut().zip(b) {
                        *vi -= hij * bi;
                    }
                }
                let hnext = norm(&v);
                col[it + 1] = hnext;
                // The Givens rotations so far, then a new one.
                for (i, &(cc, ss)) in self.cs.iter().enumerate() {
                    let (a, b) = (col[i], col[i + 1]);
                    col[i] = cc * a + ss * b;
                    col[i + 1] = -ss * a + cc * b;
                }
                let (a, b) = (col[it], col[it + 1]);
                let rr = a.hypot(b);
                let (cc, ss) = if rr == 0.0 {
                    (1.0, 0.0)
                } else {
                    (a / rr, b / rr)
                };
                col[it] = rr;
                col[it + 1] = 0.0;
                self.cs.push((cc, ss));
                let gi = self.g[it];
                self.g[it] = cc * gi;
                self.g.push(-ss * gi);
                self.hess.push(col);
                let resid = self.g[it + 1].abs();
                if !resid.is_finite() {
                    return Err(Error::numerical(
                        "krylov stage solve",
                        "non-finite residual",
                    ));
                }
                if resid <= target || hnext == 0.0 {
                    done = true;
                    break;
                }
                self.basis.push(v.iter().map(|x| x / hnext).collect());
            }
            if !done {
                return Err(Error::numerical(
                    "krylov stage solve",
                    "no convergence within the basis",
                ));
            }
            // Back substitution of the triangular system, then z += V y.
            let kdim = self.hess.len();
            let mut y = vec![0.0; kdim];
            for i in (0..kdim).rev() {
                let mut s = self.g[i];
                for (jj, yj) in y.iter().enumerate().skip(i + 1) {
                    s -= self.hess[jj][i] * yj;
                }
                y[i] = s / self.hess[i][i];
            }
            for (b, yi) in self.basis.iter().zip(&y) {
                for (zi, bi) in z.iter_mut().zip(b) {
                    *zi += yi * bi;
                }
            }
        }
        for ((ki, zi), wt) in k.iter_mut().zip(&z).zip(&self.weight) {
            *ki = zi / wt;
        }
        if k.iter().all(|x| x.is_finite()) {
            Ok(())
        } else {
            Err(Error::numerical("krylov stage solve", "non-finite stage"))
        }
    }

    /// An estimate of the spectral radius of `J` at `y` by the power iteration of
    /// [`crate::ode::spectral::spectral_radius_capped`] on products `J v` (eq. (K8)).
    pub fn spectral_radius_capped(&mut self, y: &[f64], cap: f64) -> Result<f64> {
        self.y0.copy_from_slice(y);
        self.inv_gh = 0.0;
        let n = y.len();
        let mut v: Vec<f64> = (0..n).map(|i| 1.0 + 0.1 * i as f64).collect();
        let mut w = vec![0.0; n];
        let (mut log_growth, mut growth) = (0.0, 1.0f64);
        for it in 0..24 {
            // (0 - J) v: the sign does not change the growth.
            self.apply(&v, &mut w)?;
            let nv = norm(&v);
            let nw = norm(&w);
            if !(nw > 0.0 && nw.is_finite()) {
                return Ok(if nw == 0.0 { 0.0 } else { f64::INFINITY });
            }
            if it >= 8 {
                growth *= nw / nv;
                if !(1e-150..=1e150).contains(&growth) {
                    log_growth += growth.ln();
                    growth = 1.0;
                }
                let estimate = ((log_growth + growth.ln()) / (it - 7) as f64).exp();
                if cap.is_finite() && estimate > cap {
                    return Ok(estimate);
                }
            }
            for (vi, wi) in v.iter_mut().zip(&w) {
                *vi = wi / nw;
            }
        }
        Ok(((log_growth + growth.ln()) / 16.0).exp())
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// LU with partial pivoting of the row-major `t x t` matrix `a` in place.
fn lu_in_place(a: &mut [f64], piv: &mut [usize], t: usize) -> Result<()> {
    for c in 0..t {
        let p = (c..t)
            .max_by(|&x, &y| a[x * t + c].abs().total_cmp(&a[y * t + c].abs()))
            .unwrap_or(c);
        piv[c] = p;
        if a[p * t + c] == 0.0 || !a[p * t + c].is_finite() {
            return Err(Error::numerical("krylov head block", "singular"));
        }
        if p != c {
            for k in 0..t {
                a.swap(c * t + k, p * t + k);
            }
        }
        let inv = 1.0 / a[c * t + c];
        for r in c + 1..t {
            let l = a[r * t + c] * inv;
            a[r * t + c] = l;
            for k in c + 1..t {
                a[r * t + k] -= l * a[c * t + k];
            }
        }
    }
    Ok(())
}

/// Solves with the factors of [`lu_in_place`].
fn lu_solve(a: &[f64], piv: &[usize], t: usize, x: &mut [f64]) {
    for c in 0..t {
        x.swap(c, piv[c]);
    }
    for r in 0..t {
        let s: f64 = (0..r).map(|k| a[r * t + k] * x[k]).sum();
        x[r] -= s;
    }
    for r in (0..t).rev() {
        let s: f64 = (r + 1..t).map(|k| a[r * t + k] * x[k]).sum();
        x[r] = (x[r] - s) / a[r * t + r];
    }
}
