//! Dense linear algebra of the Rosenbrock steps (`derivations/numerics.md`, "Linear
//! algebra"): an LU factorization with partial pivoting, generic over [`Scalar`] (so it
//! also runs in MPFR), and the equilibrated factorization of `I/(gamma h) - J`, eq. (L1).
//! The systems are 7 x 7 to 11 x 11 for `m = 2`: a hand-written loop over a flat array
//! beats a call into `faer` at this size and, unlike it, runs in `rug::Float`.

use crate::error::{Error, Result};
use crate::flow::control::Tolerance;
use crate::scalar::Scalar;

/// A dense LU factorization with partial pivoting, `P A = L U` (row-major, flat).
#[derive(Clone, Debug)]
pub struct Lu<S: Scalar> {
    n: usize,
    lu: Vec<S>,
    perm: Vec<usize>,
}

impl<S: Scalar> Lu<S> {
    /// Factors `a` (rows); errors when a pivot is exactly zero.
    pub fn new(a: Vec<Vec<S>>) -> Result<Self> {
        let n = a.len();
        Self::from_flat(n, a.into_iter().flatten().collect())
    }

    /// Factors the `n x n` row-major matrix `a`; errors when a pivot is exactly zero.
    pub fn from_flat(n: usize, a: Vec<S>) -> Result<Self> {
        let mut lu = Lu {
            n,
            lu: a,
            perm: (0..n).collect(),
        };
        lu.factor()?;
        Ok(lu)
    }

    /// Factors the matrix held in `self.lu` in place (partial pivoting, Doolittle).
    fn factor(&mut self) -> Result<()> {
        let n = self.n;
        let (a, perm) = (&mut self.lu, &mut self.perm);
        for (i, p) in perm.iter_mut().enumerate() {
            *p = i;
        }
        for c in 0..n {
            let mut p = c;
            for r in c + 1..n {
                if a[r * n + c].clone().abs() > a[p * n + c].clone().abs() {
                    p = r;
                }
            }
            let zero = S::zero(a[c * n + c].ctx());
            if a[p * n + c].clone().abs().partial_cmp(&zero) != Some(std::cmp::Ordering::Greater) {
                return Err(Error::numerical("Rosenbrock matrix", "singular"));
            }
            if p != c {
                for k in 0..n {
                    a.swap(c * n + k, p * n + k);
                }
                perm.swap(c, p);
            }
            let inv = S::one(zero.ctx()) / a[c * n + c].clone();
            let (top, rest) = a.split_at_mut((c + 1) * n);
            let pivot = &top[c * n + c + 1..(c + 1) * n];
            for row in rest.chunks_exact_mut(n) {
                let l = row[c].clone() * inv.clone();
                for (v, p) in row[c + 1..].iter_mut().zip(pivot) {
                    *v = v.clone() - l.clone() * p.clone();
                }
                row[c] = l;
            }
        }
        Ok(())
    }

    /// Solves `A x = b`.
    pub fn solve(&self, b: &[S]) -> Vec<S> {
        let mut x: Vec<S> = self.perm.iter().map(|&p| b[p].clone()).collect();
        self.substitute(&mut x);
        x
    }

    /// The substitutions on `x` in place, the right-hand side already permuted. Column
    /// by column (`x_r -= L_rc x_c` for all `r > c`, then `x_r -= U_rc x_c` for all
    /// `r < c`): the updates of one column are independent of each other, so the only
    /// serial chain is the one from column to column.
    fn substitute(&self, x: &mut [S]) {
        let n = self.n;
        let lu = &self.lu;
        for c in 0..n {
            let (head, tail) = x.split_at_mut(c + 1);
            let xc = &head[c];
            for (r, xr) in tail.iter_mut().enumerate() {
                *xr = xr.clone() - lu[(c + 1 + r) * n + c].clone() * xc.clone();
            }
        }
        for c in (0..n).rev() {
            let (head, tail) = x.split_at_mut(c);
            let xc = &mut tail[0];
            *xc = xc.clone() / lu[c * n + c].clone();
            for (r, xr) in head.iter_mut().enumerate() {
                *xr = xr.clone() - lu[r * n + c].clone() * xc.clone();
            }
        }
    }
}

/// The LU factorization of `A = I/(gamma h) - J` in equilibrated variables (eq. (L1)):
/// `(D^(-1) A D) u = D^(-1) w`, `g = D u`, `D = diag(2^k_i)` with `2^k_i` the power of two
/// nearest to the component's error scale `atol_i + rtol |y0_i|`.
///
/// Powers of two scale exactly, so the solution is unchanged in exact arithmetic and in
/// MPFR; in `f64` partial pivoting then compares entries in the units of the error norm.
/// Without it, pivoting on the raw matrix mixes components whose scales differ by 1e14
/// (`z_j ~ d^2` beside `a_j ~ d^(-1/2)`) and the rounding of the large ones swamps the
/// small ones (`tests/flow_phases.rs::rosenbrock_step_is_accurate_on_badly_scaled_states`).
///
/// The buffers are reused: [`ScaledLu::factor`] refactors in place once per step.
#[derive(Clone, Debug)]
pub struct ScaledLu<S: Scalar> {
    lu: Lu<S>,
    up: Vec<S>,
    down: Vec<S>,
}

impl<S: Scalar> ScaledLu<S> {
    /// Buffers for `n x n` systems at context `ctx` (factor before solving).
    pub fn with_size(n: usize, ctx: S::Ctx) -> Self {
        ScaledLu {
            lu: Lu {
                n,
                lu: vec![S::zero(ctx); n * n],
                perm: (0..n).collect(),
            },
            up: vec![S::one(ctx); n],
            down: vec![S::one(ctx); n],
        }
    }

    /// Factors `I * inv_gh - jac` (`jac` row-major `n x n`) with the scales of `y0` under
    /// `tol`; errors when a pivot is exactly zero.
    pub fn new(jac: &[S], inv_gh: S, y0: &[S], tol: Tolerance) -> Result<Self> {
        let mut lu = Self::with_size(y0.len(), inv_gh.ctx());
        lu.factor(jac, &inv_gh, y0, tol)?;
        Ok(lu)
    }

    /// Refactors in place for `I * inv_gh - jac` at the scales of `y0` under `tol`.
    pub fn factor(&mut self, jac: &[S], inv_gh: &S, y0: &[S], tol: Tolerance) -> Result<()> {
        let n = y0.len();
        let ctx = inv_gh.ctx();
        for (i, (u, d)) in self.up.iter_mut().zip(self.down.iter_mut()).enumerate() {
            let sc = tol.atol_at(i) + tol.rtol * y0[i].to_f64().abs();
            let s = if sc > 0.0 && sc.is_finite() {
                sc.log2().round().clamp(-1000.0, 1000.0).exp2()
            } else {
                1.0
            };
            *u = S::from_f64(s, ctx);
            *d = S::from_f64(1.0 / s, ctx);
        }
        for (i, (row, arow)) in jac
            .chunks_exact(n)
            .zip(self.lu.lu.chunks_exact_mut(n))
            .enumerate()
        {
            for (j, (jij, a)) in row.iter().zip(arow.iter_mut()).enumerate() {
                let aij = if i == j {
                    inv_gh.clone() - jij.clone()
                } else {
                    -jij.clone()
                };
                *a = aij * self.down[i].clone() * self.up[j].clone();
            }
        }
        self.lu.factor()
    }

    /// Solves `(I/(gamma h) - J) g = w` into `g`.
    pub fn solve_into(&self, w: &[S], g: &mut [S]) {
        // Scaled and permuted in one pass (the same products as scaling first).
        for (gi, &p) in g.iter_mut().zip(&self.lu.perm) {
            *gi = w[p].clone() * self.down[p].clone();
        }
        self.lu.substitute(g);
        for (v, s) in g.iter_mut().zip(&self.up) {
            *v = v.clone() * s.clone();
        }
    }

    /// Solves `(I/(gamma h) - J) g = w`.
    pub fn solve(&self, w: &[S]) -> Vec<S> {
        let mut g = w.to_vec();
        self.solve_into(w, &mut g);
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lu_solves_a_pivoting_system() {
        let a = vec![
            vec![0.0, 2.0, 1.0],
            vec![1.0, 1.0, 0.0],
            vec![3.0, 0.0, 1.0],
        ];
        let x = [1.0, -2.0, 0.5];
        let b: Vec<f64> = a
            .iter()
            .map(|r| r.iter().zip(&x).map(|(p, q)| p * q).sum())
            .collect();
        let lu = Lu::new(a).unwrap();
        let got = lu.solve(&b);
        for (g, w) in got.iter().zip(&x) {
            assert!((g - w).abs() < 1e-14);
        }
        assert!(Lu::new(vec![vec![0.0, 0.0], vec![0.0, 1.0]]).is_err());
    }
}
