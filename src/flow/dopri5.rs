//! The Dormand-Prince 5(4) embedded Runge-Kutta pair with its fourth-order dense output and
//! Hairer's stiffness detector (Hairer, Norsett and Wanner, Vol. I, II.5-II.6 and the code
//! `dopri5`; `derivations/numerics.md`, Section "Integrators"). Generic over [`Scalar`], so
//! the same code runs in `f64` and in MPFR.

use crate::error::Result;
use crate::flow::control::{error_norm, rational, Tolerance};
use crate::flow::dense::Dense;
use crate::scalar::Scalar;

/// One attempted step.
#[derive(Clone, Debug)]
pub struct Attempt<S: Scalar> {
    /// The fifth-order solution at `t0 + h`.
    pub y1: Vec<S>,
    /// `f(y1)` (first-same-as-last: the next step's first stage).
    pub f1: Vec<S>,
    /// The scaled error norm (accept when `<= 1`).
    pub err: f64,
    /// Dense output (built only when asked).
    pub dense: Option<Dense<S>>,
    /// Hairer's stiffness estimate `h |lambda|`, `h ||k7 - k6|| / ||y1 - y6||`.
    pub h_lambda: f64,
    /// Right-hand-side evaluations used (6).
    pub evals: u64,
}

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

/// One Dormand-Prince step of size `h` from `(t0, y0)` with `f0 = f(y0)`.
pub fn step<S: Scalar>(
    f: &mut dyn FnMut(&[S]) -> Result<Vec<S>>,
    t0: f64,
    y0: &[S],
    f0: &[S],
    h: f64,
    tol: Tolerance,
    want_dense: bool,
) -> Result<Attempt<S>> {
    let ctx = y0[0].ctx();
    let n = y0.len();
    let hs = S::from_f64(h, ctx);
    // `base + h sum_i w_i k_i` over the non-zero weights, the coefficients rounded once.
    let apply = |base: Option<&[S]>, w: &[(f64, f64)], k: &[Vec<S>]| -> Vec<S> {
        let mut coef: [Option<S>; 7] = Default::default();
        for (c, &(num, den)) in coef.iter_mut().zip(w).take(k.len()) {
            if num != 0.0 {
                *c = Some(hs.clone() * rational::<S>(num, den, ctx));
            }
        }
        (0..n)
            .map(|i| {
                let mut acc = match base {
                    Some(b) => b[i].clone(),
                    None => S::zero(ctx),
                };
                for (c, kk) in coef.iter().zip(k) {
                    if let Some(c) = c {
                        acc = acc + c.clone() * kk[i].clone();
                    }
                }
                acc
            })
            .collect()
    };
    let mut k: Vec<Vec<S>> = Vec::with_capacity(7);
    k.push(f0.to_vec());
    let mut y6 = Vec::new();
    for row in A.iter().take(5) {
        let y = apply(Some(y0), row, &k);
        k.push(f(&y)?);
        y6 = y;
    }
    // The sixth row gives the fifth-order solution y1; k7 = f(y1) (first same as last).
    let y1 = apply(Some(y0), A[5], &k);
    let k7 = f(&y1)?;
    k.push(k7.clone());
    let errv = apply(None, &E, &k);
    let err = error_norm(&errv, y0, &y1, tol);
    // Stiffness estimate with k6 = f(y6), k7 = f(y1).
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..n {
        num += (k7[i].to_f64() - k[5][i].to_f64()).powi(2);
        den += (y1[i].to_f64() - y6[i].to_f64()).powi(2);
    }
    let h_lambda = if den > 0.0 {
        h.abs() * (num / den).sqrt()
    } else {
        0.0
    };
    let dense = if want_dense {
        let r1: Vec<S> = y1
            .iter()
            .zip(y0)
            .map(|(a, b)| a.clone() - b.clone())
            .collect();
        let r2: Vec<S> = (0..n)
            .map(|i| hs.clone() * k[0][i].clone() - r1[i].clone())
            .collect();
        let r3: Vec<S> = (0..n)
            .map(|i| r1[i].clone() - hs.clone() * k7[i].clone() - r2[i].clone())
            .collect();
        let r4 = apply(None, &D, &k);
        Some(Dense::Dopri {
            t0,
            h,
            rcont: [y0.to_vec(), r1, r2, r3, r4],
        })
    } else {
        None
    };
    Ok(Attempt {
        y1,
        f1: k7,
        err,
        dense,
        h_lambda,
        evals: 6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::convergence::{errors, f};

    fn error_after(n: usize) -> (f64, f64) {
        let tol = Tolerance::uniform(1.0, 1.0);
        let mut step = |y: &[f64], f0: &[f64], h: f64| {
            let a = step(&mut f, 0.0, y, f0, h, tol, true).unwrap();
            (a.y1, a.dense.unwrap())
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
