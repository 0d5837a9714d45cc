//! The Dormand-Prince 5(4) embedded Runge-Kutta pair with its fourth-order dense output and
//! Hairer's stiffness detector (Hairer, Norsett and Wanner, Vol. I, II.5-II.6 and the code
//! `dopri5`; `derivations/numerics.md`, Section "Integrators"). Generic over [`Scalar`], so
//! the same code runs in `f64` and in MPFR.

use crate::error::Result;
use crate::flow::control::{error_norm, rational, Tolerance};
use crate::flow::dense::{Dense, Kind};
use crate::flow::Rhs;
use crate::scalar::Scalar;

const A: [&[(f64, f64)]; 6] = [
    &[(1.0, 5.0)],
    &[(3.0, 40.0), (9.0, 40.0)],
    &[(44.0, 45.0), (-56.0, 15.0), (32.0, 9.0)],
    &[
        (19372.0, 6561.0),
        (-25360.0, 2187.0),
        (64448.0, 6561.0),
        (-212.0, 729.0),
    ],
    &[
        (9017.0, 3168.0),
        (-355.0, 33.0),
        (46732.0, 5247.0),
        (49.0, 176.0),
        (-5103.0, 18656.0),
    ],
    &[
        (35.0, 384.0),
        (0.0, 1.0),
        (500.0, 1113.0),
        (125.0, 192.0),
        (-2187.0, 6784.0),
        (11.0, 84.0),
    ],
];
/// `y5 - y4` weights on `k1..k7`.
const E: [(f64, f64); 7] = [
    (71.0, 57600.0),
    (0.0, 1.0),
    (-71.0, 16695.0),
    (71.0, 1920.0),
    (-17253.0, 339200.0),
    (22.0, 525.0),
    (-1.0, 40.0),
];
/// Dense-output weights on `k1..k7` (`d1, d3..d7` of `dopri5`).
const D: [(f64, f64); 7] = [
    (-12715105075.0, 11282082432.0),
    (0.0, 1.0),
    (87487479700.0, 32700410799.0),
    (-10690763975.0, 1880347072.0),
    (701980252875.0, 199316789632.0),
    (-1453857185.0, 822651844.0),
    (69997945.0, 29380423.0),
];

/// The work space of Dormand-Prince steps for states of length `n` (no allocation per
/// step in `f64`).
#[derive(Clone, Debug)]
pub struct Work<S: Scalar> {
    /// `k_1..k_7` (`k_7 = f(y1)`).
    k: [Vec<S>; 7],
    /// The stage argument (after a step: `y6`, the sixth stage's).
    arg: Vec<S>,
    /// The error estimate.
    errv: Vec<S>,
    /// `h w_j` of the current row (`None` for a zero weight).
    coef: [Option<S>; 7],
    /// The fifth-order solution at `h` of the last attempt.
    pub y1: Vec<S>,
    /// Hairer's stiffness estimate `h |lambda| ~ h ||k7 - k6|| / ||y1 - y6||` of the last
    /// attempt.
    pub h_lambda: f64,
}

impl<S: Scalar> Work<S> {
    /// A work space for states of length `n` at context `ctx`.
    pub fn new(n: usize, ctx: S::Ctx) -> Self {
        let z = || vec![S::zero(ctx); n];
        Work {
            k: std::array::from_fn(|_| z()),
            arg: z(),
            errv: z(),
            coef: Default::default(),
            y1: z(),
            h_lambda: 0.0,
        }
    }

    /// `f(y1)` of the last attempt (first-same-as-last: the next step's first stage).
    pub fn f1(&self) -> &[S] {
        &self.k[6]
    }
}

/// `out = base + h sum_i w_i k_i` over the non-zero weights, the coefficients rounded once.
fn apply<S: Scalar>(
    out: &mut [S],
    base: Option<&[S]>,
    w: &[(f64, f64)],
    k: &[Vec<S>],
    hs: &S,
    coef: &mut [Option<S>; 7],
) {
    let ctx = hs.ctx();
    for c in coef.iter_mut() {
        *c = None;
    }
    for (c, &(num, den)) in coef.iter_mut().zip(w).take(k.len()) {
        if num != 0.0 {
            *c = Some(hs.clone() * rational::<S>(num, den, ctx));
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        let mut acc = match base {
            Some(b) => b[i].clone(),
            None => S::zero(ctx),
        };
        for (c, kk) in coef.iter().zip(k) {
            if let Some(c) = c {
                acc = acc + c.clone() * kk[i].clone();
            }
        }
        *o = acc;
    }
}

/// One Dormand-Prince step of size `h` from `y0` with `f0 = f(y0)`: six evaluations (the
/// last, `f(y1)`, is the next step's first). Leaves `y1` and `f(y1)` in `w` and returns the
/// scaled error norm (accept when `<= 1`).
pub fn step<S: Scalar>(
    f: &mut Rhs<'_, S>,
    y0: &[S],
    f0: &[S],
    h: f64,
    tol: Tolerance,
    w: &mut Work<S>,
) -> Result<f64> {
    let ctx = y0[0].ctx();
    let n = y0.len();
    let hs = S::from_f64(h, ctx);
    let Work {
        k,
        arg,
        errv,
        coef,
        y1,
        h_lambda,
    } = w;
    k[0].clone_from_slice(f0);
    for (s, row) in A.iter().take(5).enumerate() {
        apply(arg, Some(y0), row, &k[..s + 1], &hs, coef);
        f(arg, &mut k[s + 1])?;
    }
    // The sixth row gives the fifth-order solution y1; k7 = f(y1) (first same as last).
    apply(y1, Some(y0), A[5], &k[..6], &hs, coef);
    f(y1, &mut k[6])?;
    apply(errv, None, &E, &k[..], &hs, coef);
    let err = error_norm(errv, y0, y1, tol);
    // Stiffness estimate with k6 = f(y6), k7 = f(y1).
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..n {
        num += (k[6][i].to_f64() - k[5][i].to_f64()).powi(2);
        den += (y1[i].to_f64() - arg[i].to_f64()).powi(2);
    }
    *h_lambda = if den > 0.0 {
        h.abs() * (num / den).sqrt()
    } else {
        0.0
    };
    Ok(err)
}

/// The fourth-order continuous extension of the step just taken by [`step`] from `y0` with
/// size `h` (its stages still in `w`), written into `out` (no evaluation).
pub fn dense<S: Scalar>(y0: &[S], h: f64, w: &mut Work<S>, out: &mut Dense<S>) {
    let ctx = y0[0].ctx();
    let hs = S::from_f64(h, ctx);
    let Work { k, y1, coef, .. } = w;
    let c = out.begin(Kind::Dopri, h, y0);
    for i in 0..y0.len() {
        let r1 = y1[i].clone() - y0[i].clone();
        let r2 = hs.clone() * k[0][i].clone() - r1.clone();
        c[2][i] = r1.clone() - hs.clone() * k[6][i].clone() - r2.clone();
        c[1][i] = r2;
        c[0][i] = r1;
    }
    apply(&mut c[3], None, &D, &k[..], &hs, coef);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::convergence::{errors, f};

    fn error_after(n: usize) -> (f64, f64) {
        let tol = Tolerance::uniform(1.0, 1.0);
        let mut w = Work::new(3, ());
        let mut d = Dense::new(3, ());
        let mut step = |y: &[f64], f0: &[f64], h: f64| {
            step(&mut f, y, f0, h, tol, &mut w).unwrap();
            dense(y, h, &mut w, &mut d);
            (w.y1.clone(), d.clone())
        };
        errors(&mut step, n, 1.0, &[0.5])
    }

    /// Fifth order at the step ends (error ratio ~2^5 under step halving; measured 2^5.9 at
    /// these coarse steps) and a dense output of at least fourth order.
    #[test]
    fn fifth_order_steps_and_fourth_order_dense_output() {
        let (e1, d1) = error_after(10);
        let (e2, d2) = error_after(20);
        let order = (e1 / e2).log2();
        let dense_order = (d1 / d2).log2();
        assert!(order > 4.7 && order < 6.5, "order {order}");
        assert!(dense_order > 3.7, "dense order {dense_order}");
    }
}
