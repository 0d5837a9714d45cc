//! Dense linear algebra of the Rosenbrock steps (`derivations/numerics.md`, "Linear
//! algebra"): an LU factorization with partial pivoting, generic over [`Scalar`] (so it
//! also runs in MPFR), and the equilibrated factorization of `I/(gamma h) - J`, eq. (L1).
//! The systems are 7 x 7 to 11 x 11 for `m = 2`: a hand-written loop over a flat array
//! beats a call into `faer` at this size and, unlike it, runs in `rug::Float`.

use crate::error::{Error, Result};
use crate::flow::control::Tolerance;
use crate::flow::separable::Layout;
use crate::scalar::Scalar;

/// A dense LU factorization with partial pivoting, `P A = L U` (row-major, flat).
#[derive(Clone, Debug)]
pub struct Lu<S: Scalar> {
    n: usize,
    lu: Vec<S>,
    perm: Vec<usize>,
    /// The reciprocals of the pivots `1 / U_cc` (the back substitution multiplies by them).
    inv_pivot: Vec<S>,
}

impl<S: Scalar> Lu<S> {
    /// Factors `a` (rows); errors when a pivot is exactly zero.
    pub fn new(a: Vec<Vec<S>>) -> Result<Self> {
        let n = a.len();
        Self::from_flat(n, a.into_iter().flatten().collect())
    }

    /// Factors the `n x n` row-major matrix `a`; errors when a pivot is exactly zero.
    pub fn from_flat(n: usize, a: Vec<S>) -> Result<Self> {
        let inv_pivot = a.iter().take(n).cloned().collect();
        let mut lu = Lu {
            n,
            lu: a,
            perm: (0..n).collect(),
            inv_pivot,
        };
        lu.factor()?;
        Ok(lu)
    }

    /// Factors the matrix held in `self.lu` in place (partial pivoting, Doolittle).
    fn factor(&mut self) -> Result<()> {
        let n = self.n;
        if let (Some(a), Some(inv)) = (
            S::f64_slice_mut(&mut self.lu),
            S::f64_slice_mut(&mut self.inv_pivot),
        ) {
            macro_rules! sized {
                ($($n:literal)*) => {
                    match n {
                        $($n => return factor_fixed::<$n>(a, &mut self.perm, inv),)*
                        _ => {}
                    }
                };
            }
            sized!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
        }
        let (a, perm, inv_pivot) = (&mut self.lu, &mut self.perm, &mut self.inv_pivot);
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
            inv_pivot[c] = inv.clone();
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
    /// by column (`x_r -= L_rc x_c` for all `r > c`, then `x_c *= 1 / U_cc` and
    /// `x_r -= U_rc x_c` for all `r < c`): the updates of one column are independent of
    /// each other, so the only serial chain is the one from column to column, and it holds
    /// no division.
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
            *xc = xc.clone() * self.inv_pivot[c].clone();
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
    /// The block factorization of the separable flow, which then replaces the dense one.
    separable: Option<SeparableLu<S>>,
    /// `faer`'s blocked LU in `f64` from [`BLOCKED_FROM`] unknowns on, which then replaces
    /// the hand-written one.
    blocked: Option<BlockedLu>,
}

/// From this many unknowns on (the paper's head from `m = 9`), the dense `f64` systems are
/// factored by `faer`'s blocked LU with partial pivoting (sequential, so bit-identical for
/// any thread count) on the same equilibrated matrix (L1): about 5x faster than the
/// hand-written loop at `n = 408` (`m = 16`). Below, the hand-written code, unchanged.
pub const BLOCKED_FROM: usize = 128;

/// The equilibrated matrix of (L1) factored by `faer` (column-major, `L` and `U` in place).
#[derive(Clone, Debug)]
struct BlockedLu {
    a: faer::Mat<f64>,
    perm: Vec<usize>,
    perm_inv: Vec<usize>,
    up: Vec<f64>,
    down: Vec<f64>,
}

impl BlockedLu {
    fn new(n: usize) -> Self {
        BlockedLu {
            a: faer::Mat::zeros(n, n),
            perm: (0..n).collect(),
            perm_inv: (0..n).collect(),
            up: vec![1.0; n],
            down: vec![1.0; n],
        }
    }

    /// Factors `D^(-1) (I inv_gh - jac) D` (eq. (L1)); errors on an exactly zero pivot.
    fn factor(&mut self, jac: &[f64], inv_gh: f64, y0: &[f64], tol: Tolerance) -> Result<()> {
        use faer::linalg::lu::partial_pivoting::factor::{lu_in_place, lu_in_place_scratch};
        let n = y0.len();
        for (i, (u, d)) in self.up.iter_mut().zip(self.down.iter_mut()).enumerate() {
            let s = nearest_power_of_two(tol.scale_at(i, y0[i].abs()));
            *u = s;
            *d = 1.0 / s;
        }
        let (up, down) = (&self.up, &self.down);
        for c in 0..n {
            let col = self.a.col_mut(c).try_as_col_major_mut();
            let col = col.map(|c| c.as_slice_mut());
            let Some(col) = col else {
                return Err(Error::numerical("Rosenbrock matrix", "layout"));
            };
            for (r, v) in col.iter_mut().enumerate() {
                let jrc = jac[r * n + c];
                let a = if r == c { inv_gh - jrc } else { -jrc };
                *v = a * down[r] * up[c];
            }
        }
        let par = faer::Par::Seq;
        let mut buf = faer::dyn_stack::MemBuffer::new(lu_in_place_scratch::<usize, f64>(
            n,
            n,
            par,
            Default::default(),
        ));
        let stack = faer::dyn_stack::MemStack::new(&mut buf);
        lu_in_place(
            self.a.as_mut(),
            &mut self.perm,
            &mut self.perm_inv,
            par,
            stack,
            Default::default(),
        );
        if (0..n)
            .any(|i| self.a[(i, i)].abs().partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
        {
            return Err(Error::numerical("Rosenbrock matrix", "singular"));
        }
        Ok(())
    }

    /// Solves `(I inv_gh - J) g = w` with the factors.
    fn solve_into(&self, w: &[f64], g: &mut [f64]) {
        use faer::linalg::lu::partial_pivoting::solve::{
            solve_in_place_scratch, solve_in_place_with_conj,
        };
        let n = w.len();
        let mut x = faer::Mat::from_fn(n, 1, |i, _| w[i] * self.down[i]);
        let par = faer::Par::Seq;
        let mut buf =
            faer::dyn_stack::MemBuffer::new(solve_in_place_scratch::<usize, f64>(n, 1, par));
        let perm = faer::perm::PermRef::new_checked(&self.perm, &self.perm_inv, n);
        solve_in_place_with_conj(
            self.a.as_ref(),
            self.a.as_ref(),
            perm,
            faer::Conj::No,
            x.as_mut(),
            par,
            faer::dyn_stack::MemStack::new(&mut buf),
        );
        for (i, gi) in g.iter_mut().enumerate() {
            *gi = x[(i, 0)] * self.up[i];
        }
    }
}

impl<S: Scalar> ScaledLu<S> {
    /// Buffers for `n x n` systems at context `ctx` (factor before solving).
    pub fn with_size(n: usize, ctx: S::Ctx) -> Self {
        Self::with_layout(n, ctx, None)
    }

    /// [`ScaledLu::with_size`], or with `layout` the block factorization of the separable
    /// flow ([`SeparableLu`]; no `n x n` buffer), whose Jacobians come in that layout.
    pub fn with_layout(n: usize, ctx: S::Ctx, layout: Option<&Layout>) -> Self {
        let f64_ctx = S::f64_slice(&[S::zero(ctx)]).is_some();
        let blocked = layout.is_none() && n >= BLOCKED_FROM && f64_ctx;
        let dense = if layout.is_some() || blocked { 0 } else { n };
        ScaledLu {
            lu: Lu {
                n: dense,
                lu: vec![S::zero(ctx); dense * dense],
                perm: (0..dense).collect(),
                inv_pivot: vec![S::one(ctx); dense],
            },
            up: vec![S::one(ctx); n],
            down: vec![S::one(ctx); n],
            separable: layout.map(|l| SeparableLu::new(l.clone(), ctx)),
            blocked: blocked.then(|| BlockedLu::new(n)),
        }
    }

    /// Chooses `faer`'s blocked factorization (`true`, `f64` only) or the hand-written one
    /// (`false`) for a dense system, whatever its size (the default: `faer`'s from
    /// [`BLOCKED_FROM`] unknowns on); for the tests that compare the two.
    pub fn set_blocked(&mut self, on: bool) {
        let n = self.up.len();
        if on {
            self.blocked = Some(BlockedLu::new(n));
        } else if let Some(ctx) = self.up.first().map(Scalar::ctx) {
            self.blocked = None;
            self.lu = Lu {
                n,
                lu: vec![S::zero(ctx); n * n],
                perm: (0..n).collect(),
                inv_pivot: vec![S::one(ctx); n],
            };
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
        if let Some(sep) = self.separable.as_mut() {
            return sep.factor(jac, inv_gh, y0, tol);
        }
        if let (Some(b), Some(j), Some(y)) =
            (self.blocked.as_mut(), S::f64_slice(jac), S::f64_slice(y0))
        {
            return b.factor(j, inv_gh.to_f64(), y, tol);
        }
        let n = y0.len();
        let ctx = inv_gh.ctx();
        for (i, (u, d)) in self.up.iter_mut().zip(self.down.iter_mut()).enumerate() {
            let sc = tol.scale_at(i, y0[i].to_f64().abs());
            let s = nearest_power_of_two(sc);
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
        if let Some(sep) = self.separable.as_ref() {
            return sep.solve_into(w, g);
        }
        if let (Some(b), Some(wf)) = (self.blocked.as_ref(), S::f64_slice(w)) {
            if let Some(gf) = S::f64_slice_mut(g) {
                return b.solve_into(wf, gf);
            }
        }
        if let (Some(lu), Some(inv), Some(up), Some(down), Some(w), Some(g)) = (
            S::f64_slice(&self.lu.lu),
            S::f64_slice(&self.lu.inv_pivot),
            S::f64_slice(&self.up),
            S::f64_slice(&self.down),
            S::f64_slice(w),
            S::f64_slice_mut(g),
        ) {
            let f = Fixed {
                lu,
                inv,
                perm: &self.lu.perm,
                up,
                down,
            };
            macro_rules! sized {
                ($($n:literal)*) => {
                    match self.lu.n {
                        $($n => return f.solve::<$n>(w, g),)*
                        _ => {}
                    }
                };
            }
            sized!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
        }
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

/// The factorization of `A = I/(gamma h) - J` for the separable flow
/// (`derivations/numerics.md`, "Flows at large m", eq. (K3)): `J` is block lower triangular
/// in the compact [`Layout`], so `A` is factored block by block, each 3 x 3 neuron block
/// equilibrated as in eq. (L1) and pivoted, and the pair rows solved by substitution after
/// the blocks: `O(m^2)` per factorization and per solve (the dense ones are `O(m^6)` and
/// `O(m^4)`).
#[derive(Clone, Debug)]
pub struct SeparableLu<S: Scalar> {
    layout: Layout,
    /// The factored, equilibrated 3 x 3 blocks and their scales (`up`, `down` of (L1)).
    blocks: Vec<(Lu<S>, [S; 3], [S; 3])>,
    /// Per pair: `J` on the six neuron columns and `1 / (1/(gamma h) - J_own)`.
    pairs: Vec<([S; 6], S)>,
}

impl<S: Scalar> SeparableLu<S> {
    /// Buffers for the flow of `layout` at context `ctx`.
    pub fn new(layout: Layout, ctx: S::Ctx) -> Self {
        let one = || std::array::from_fn(|_| S::one(ctx));
        let lu = Lu {
            n: 3,
            lu: vec![S::zero(ctx); 9],
            perm: vec![0, 1, 2],
            inv_pivot: vec![S::one(ctx); 3],
        };
        SeparableLu {
            blocks: vec![(lu, one(), one()); layout.m],
            pairs: vec![(std::array::from_fn(|_| S::zero(ctx)), S::one(ctx)); layout.pairs.len()],
            layout,
        }
    }

    /// Factors `I * inv_gh - jac` (`jac` in the compact layout) at the scales of `y0`
    /// under `tol`; errors when a pivot is exactly zero.
    pub fn factor(&mut self, jac: &[S], inv_gh: &S, y0: &[S], tol: Tolerance) -> Result<()> {
        let ctx = inv_gh.ctx();
        let zero = S::zero(ctx);
        for (j, (lu, up, down)) in self.blocks.iter_mut().enumerate() {
            let idx = self.layout.block(j);
            for (r, &i) in idx.iter().enumerate() {
                let s = nearest_power_of_two(tol.scale_at(i, y0[i].to_f64().abs()));
                up[r] = S::from_f64(s, ctx);
                down[r] = S::from_f64(1.0 / s, ctx);
            }
            for r in 0..3 {
                for c in 0..3 {
                    let jrc = jac[9 * j + 3 * r + c].clone();
                    let a = if r == c { inv_gh.clone() - jrc } else { -jrc };
                    lu.lu[3 * r + c] = a * down[r].clone() * up[c].clone();
                }
            }
            lu.factor()?;
        }
        let base = 9 * self.layout.m;
        for (p, (cols, inv)) in self.pairs.iter_mut().enumerate() {
            let row = &jac[base + 7 * p..][..7];
            cols.clone_from_slice(&row[..6]);
            let pivot = inv_gh.clone() - row[6].clone();
            if pivot.clone().abs().partial_cmp(&zero) != Some(std::cmp::Ordering::Greater) {
                return Err(Error::numerical("Rosenbrock matrix", "singular"));
            }
            *inv = S::one(ctx) / pivot;
        }
        Ok(())
    }

    /// Solves `(I/(gamma h) - J) g = w` into `g`: the blocks, then the pair rows
    /// `g_own = (w_own + sum_c J_c g_c) / (1/(gamma h) - J_own)`.
    pub fn solve_into(&self, w: &[S], g: &mut [S]) {
        for (j, (lu, up, down)) in self.blocks.iter().enumerate() {
            let idx = self.layout.block(j);
            let mut x: [S; 3] =
                std::array::from_fn(|r| w[idx[lu.perm[r]]].clone() * down[lu.perm[r]].clone());
            lu.substitute(&mut x);
            for r in 0..3 {
                g[idx[r]] = x[r].clone() * up[r].clone();
            }
        }
        for (p, (cols, inv)) in self.pairs.iter().enumerate() {
            let at = self.layout.pair_columns(p);
            let mut acc = w[at[6]].clone();
            for (c, jc) in cols.iter().enumerate() {
                acc = acc + jc.clone() * g[at[c]].clone();
            }
            g[at[6]] = acc * inv.clone();
        }
    }
}

/// The power of two nearest to `sc` in the logarithm, `2^round(log2 sc)` with the exponent
/// clamped to `[-1000, 1000]` (1 for a scale that is not positive and finite), read off the
/// binary exponent and the mantissa (`round` goes up from the mantissa `sqrt(2)`).
fn nearest_power_of_two(sc: f64) -> f64 {
    if !(sc > 0.0 && sc.is_finite()) {
        return 1.0;
    }
    let bits = sc.to_bits();
    let field = (bits >> 52) as i64;
    if field == 0 {
        // Subnormal: far below the clamp.
        return 2f64.powi(-1000);
    }
    const MANTISSA: u64 = (1 << 52) - 1;
    let up = (bits & MANTISSA) >= (std::f64::consts::SQRT_2.to_bits() & MANTISSA);
    let e = (field - 1023 + i64::from(up)).clamp(-1000, 1000);
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// The `f64` path of [`Lu::factor`] for `N x N` matrices (`N <= 16`): the generic code's
/// operations in the same order with the sizes known at compile time. Tested
/// bit-identical to the generic path.
fn factor_fixed<const N: usize>(
    a: &mut [f64],
    perm: &mut [usize],
    inv_pivot: &mut [f64],
) -> Result<()> {
    let a = &mut a[..N * N];
    for (i, p) in perm[..N].iter_mut().enumerate() {
        *p = i;
    }
    for c in 0..N {
        let mut p = c;
        for r in c + 1..N {
            if a[r * N + c].abs() > a[p * N + c].abs() {
                p = r;
            }
        }
        if a[p * N + c].abs().partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(Error::numerical("Rosenbrock matrix", "singular"));
        }
        if p != c {
            for k in 0..N {
                a.swap(c * N + k, p * N + k);
            }
            perm.swap(c, p);
        }
        let inv = 1.0 / a[c * N + c];
        inv_pivot[c] = inv;
        for r in c + 1..N {
            let l = a[r * N + c] * inv;
            for k in c + 1..N {
                a[r * N + k] -= l * a[c * N + k];
            }
            a[r * N + c] = l;
        }
    }
    Ok(())
}

/// The `f64` path of [`ScaledLu::solve_into`] for `N x N` systems (`N <= 16`): the generic
/// code's operations in the same order, on a local array that the compiler keeps in
/// registers (the generic loops over a slice store and reload every update). Tested
/// bit-identical to the generic path.
struct Fixed<'a> {
    lu: &'a [f64],
    inv: &'a [f64],
    perm: &'a [usize],
    up: &'a [f64],
    down: &'a [f64],
}

impl Fixed<'_> {
    #[inline(always)]
    fn solve<const N: usize>(&self, w: &[f64], g: &mut [f64]) {
        let lu = &self.lu[..N * N];
        let mut x = [0.0f64; N];
        for (xi, &p) in x.iter_mut().zip(&self.perm[..N]) {
            *xi = w[p] * self.down[p];
        }
        for c in 0..N {
            let xc = x[c];
            for r in c + 1..N {
                x[r] -= lu[r * N + c] * xc;
            }
        }
        for c in (0..N).rev() {
            x[c] *= self.inv[c];
            let xc = x[c];
            for r in 0..c {
                x[r] -= lu[r * N + c] * xc;
            }
        }
        for ((gi, xi), u) in g[..N].iter_mut().zip(&x).zip(&self.up[..N]) {
            *gi = xi * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::dual::Dual;

    /// The equilibration's powers of two: `2^round(log2 sc)` (clamped), as the logarithm
    /// gives it, on scales from 1e-310 to 1e308.
    #[test]
    fn nearest_power_of_two_rounds_the_logarithm() {
        for k in -3100..3080 {
            let r2 = std::f64::consts::SQRT_2;
            for f in [1.0, 1.2, r2 * (1.0 - 1e-9), r2 * (1.0 + 1e-9), 1.7, 1.99] {
                let sc = f * 10f64.powf(k as f64 / 10.0);
                if sc == 0.0 || !sc.is_finite() {
                    continue;
                }
                let want = sc.log2().round().clamp(-1000.0, 1000.0).exp2();
                assert_eq!(nearest_power_of_two(sc), want, "{sc:e}");
            }
        }
        assert_eq!(nearest_power_of_two(0.0), 1.0);
        assert_eq!(nearest_power_of_two(f64::NAN), 1.0);
    }

    /// The fixed-size `f64` paths of the factorization and the solve (`n <= 16`) against the
    /// generic code: the same code run on `Dual<1>` (whose value part is the `f64`
    /// operation itself, and which has no fixed-size path) gives bit-identical factors,
    /// permutations and solutions, for n = 1..17 (17 is generic for both), on matrices
    /// that need pivoting and have entries spread over 1e-3..1e3.
    #[test]
    fn fixed_size_paths_are_bit_identical_to_the_generic_code() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for n in 1..=17 {
            for _ in 0..20 {
                let jac: Vec<f64> = (0..n * n)
                    .map(|_| (next() - 0.5) * 10f64.powf(6.0 * next() - 3.0))
                    .collect();
                let y0: Vec<f64> = (0..n).map(|_| 10f64.powf(8.0 * next() - 4.0)).collect();
                let w: Vec<f64> = (0..n).map(|_| next() - 0.5).collect();
                let tol = Tolerance::uniform(1e-9, 1e-12);
                let inv_gh = 0.3 + next();
                let lf = ScaledLu::<f64>::new(&jac, inv_gh, &y0, tol).unwrap();
                let d = |v: &f64| Dual::<1>::constant(*v);
                let jd: Vec<Dual<1>> = jac.iter().map(d).collect();
                let yd: Vec<Dual<1>> = y0.iter().map(d).collect();
                let ld = ScaledLu::<Dual<1>>::new(&jd, d(&inv_gh), &yd, tol).unwrap();
                assert_eq!(lf.lu.perm, ld.lu.perm, "n = {n}");
                for (a, b) in lf.lu.lu.iter().zip(&ld.lu.lu) {
                    assert_eq!(a.to_bits(), b.v.to_bits(), "n = {n}: factor");
                }
                let wd: Vec<Dual<1>> = w.iter().map(d).collect();
                for (a, b) in lf.solve(&w).iter().zip(ld.solve(&wd)) {
                    assert_eq!(a.to_bits(), b.v.to_bits(), "n = {n}: solve");
                }
            }
        }
    }

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
