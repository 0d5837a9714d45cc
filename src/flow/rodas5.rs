//! Rodas5: the stiffly accurate, L-stable Rosenbrock method of order 5 with an embedded
//! method of order 4 and a fourth-order dense output (Di Marzo, *Rodas5(4) -- Méthodes de
//! Rosenbrock d'ordre 5(4) adaptées aux problèmes différentiels-algébriques*, Geneva, 1993;
//! the coefficients in the `W`-transformed form of Hairer and Wanner, Vol. II, VI.3, eq.
//! (3.20)-(3.22), with the dense output matrix `H` of Steinebach's Rodas5P work;
//! `derivations/numerics.md`, "Integrators"). Eight stages, one LU per step; the last two
//! stages make both the solution and the embedded solution stiffly accurate, so the error
//! estimate of a relaxed stiff mode vanishes instead of limiting the step.
//!
//! With `A = I/(gamma h) - J` (equilibrated, [`ScaledLu`]) the stages are
//! `A k_i = f(u_i) + sum_(j<i) (C_ij / h) k_j`, `u_i = y0 + sum_(j<i) a_ij k_j`,
//! `y1 = u_8 + k_8`; the embedded solution is `u_8`, so the local error estimate is `k_8`.
//! The dense output is
//! `y(t0 + theta h) = (1 - theta) y0 + theta (y1 + (1 - theta) (h_1 + theta (h_2 + theta
//! h_3)))` with `h_r = sum_i H_ri k_i`.
//!
//! The coefficients are 16-digit decimals: in MPFR the order conditions hold to about
//! 1e-16, so the MPFR reference uses the rational Shampine method ([`super::rosenbrock`]).

use crate::error::Result;
use crate::flow::control::{error_norm, Tolerance};
use crate::flow::dense::Dense;
use crate::flow::linear::ScaledLu;
use crate::scalar::Scalar;

/// `gamma`.
const GAMMA: f64 = 0.19;

/// `a_ij` of stages 2..6 (stages 7 and 8 add `k_6` and `k_7` to `u_6`).
const A: [&[f64]; 5] = [
    &[2.0],
    &[3.040894194418781, 1.041747909077569],
    &[2.576417536461461, 1.62208306077664, -0.9089668560264532],
    &[
        2.760842080225597,
        1.446624659844071,
        -0.3036980084553738,
        0.2877498600325443,
    ],
    &[
        -14.09640773051259,
        6.925207756232704,
        -41.47510893210728,
        2.343771018586405,
        24.13215229196062,
    ],
];

/// `C_ij` of stages 2..8.
const C: [&[f64]; 7] = [
    &[-10.31323885133993],
    &[-21.04823117650003, -7.234992135176716],
    &[32.22751541853323, -4.943732386540191, 19.44922031041879],
    &[
        -20.69865579590063,
        -8.816374604402768,
        1.260436877740897,
        -0.7495647613787146,
    ],
    &[
        -46.22004352711257,
        -17.49534862857472,
        -289.6389582892057,
        93.60855400400906,
        318.3822534212147,
    ],
    &[
        34.20013733472935,
        -14.1553540271769,
        57.823356409884,
        25.83362985412365,
        1.408950972071624,
        -6.551835421242162,
    ],
    &[
        42.57076742291101,
        -13.80770672017997,
        93.98938432427124,
        18.77919633714503,
        -31.5835918722337,
        -6.685968952921985,
        -5.810979938412932,
    ],
];

/// The dense output matrix `H` (3 x 8).
const H: [[f64; 8]; 3] = [
    [
        27.354592673333357,
        -6.925207756232857,
        26.40037733258859,
        0.5635230501052979,
        -4.699151156849391,
        -1.6008677469422725,
        -1.5306074446748028,
        -1.3929872940716344,
    ],
    [
        44.19024239501722,
        1.3677947663381929e-13,
        202.93261852171622,
        -35.5669339789154,
        -181.91095152160645,
        3.4116351403665033,
        2.5793540257308067,
        2.2435122582734066,
    ],
    [
        -44.0988150021747,
        -5.755396159656812e-13,
        -181.26175034586677,
        56.99302194811676,
        183.21182741427398,
        -7.480257918273637,
        -5.792426076169686,
        -5.32503859794143,
    ],
];

/// One attempted step.
#[derive(Clone, Debug)]
pub struct Attempt<S: Scalar> {
    /// The fifth-order solution at `t0 + h`.
    pub y1: Vec<S>,
    /// The scaled error norm of `k_8` (accept when `<= 1`).
    pub err: f64,
    /// The dense output (`t0 = 0`).
    pub dense: Dense<S>,
}

/// One Rodas5 step of size `h` from `y0` with `f0 = f(y0)` and the Jacobian `jac` at `y0`
/// (8 evaluations: `f0` is stage 1's).
pub fn step<S: Scalar>(
    f: &mut dyn FnMut(&[S]) -> Result<Vec<S>>,
    y0: &[S],
    f0: &[S],
    jac: &[Vec<S>],
    h: f64,
    tol: Tolerance,
) -> Result<Attempt<S>> {
    let n = y0.len();
    let ctx = y0[0].ctx();
    let c = |v: f64| S::from_f64(v, ctx);
    let inv_h = S::one(ctx) / c(h);
    let lu = ScaledLu::new(jac, S::one(ctx) / (c(GAMMA) * c(h)), y0, tol)?;
    let mut k: Vec<Vec<S>> = Vec::with_capacity(8);
    k.push(lu.solve(f0));
    let mut u = y0.to_vec();
    for stage in 1..8 {
        // u_i: a fresh combination for stages 2..6, then u_7 = u_6 + k_6, u_8 = u_7 + k_7.
        if stage <= 5 {
            for (i, ui) in u.iter_mut().enumerate() {
                let mut acc = y0[i].clone();
                for (a, kj) in A[stage - 1].iter().zip(&k) {
                    acc = acc + c(*a) * kj[i].clone();
                }
                *ui = acc;
            }
        } else {
            let last = &k[stage - 1];
            for (ui, kl) in u.iter_mut().zip(last) {
                *ui = ui.clone() + kl.clone();
            }
        }
        let mut w = f(&u)?;
        for (i, wi) in w.iter_mut().enumerate() {
            let mut acc = S::zero(ctx);
            for (cc, kj) in C[stage - 1].iter().zip(&k) {
                acc = acc + c(*cc) * kj[i].clone();
            }
            *wi = wi.clone() + acc * inv_h.clone();
        }
        k.push(lu.solve(&w));
    }
    let y1: Vec<S> = u
        .iter()
        .zip(&k[7])
        .map(|(a, b)| a.clone() + b.clone())
        .collect();
    let err = error_norm(&k[7], y0, &y1, tol);
    let hr: [Vec<S>; 3] = std::array::from_fn(|r| {
        (0..n)
            .map(|i| {
                let mut acc = S::zero(ctx);
                for (hc, kj) in H[r].iter().zip(&k) {
                    acc = acc + c(*hc) * kj[i].clone();
                }
                acc
            })
            .collect()
    });
    Ok(Attempt {
        dense: Dense::Rodas {
            t0: 0.0,
            h,
            y0: y0.to_vec(),
            y1: y1.clone(),
            hr,
        },
        y1,
        err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::rosenbrock::{jacobian, sqrt_eps};

    /// The nonlinear test of `rosenbrock::tests` with a stiff coupling.
    fn f(y: &[f64]) -> Result<Vec<f64>> {
        Ok(vec![-y[0] * y[0], -y[2], y[1], -50.0 * (y[3] - y[1])])
    }

    fn run(n: usize, probe: Option<f64>) -> (Vec<f64>, Vec<f64>) {
        let tol = Tolerance::uniform(1.0, 1.0);
        let h = 1.0 / n as f64;
        let mut y = vec![1.0, 1.0, 0.0, 1.0];
        let se = sqrt_eps::<f64>(());
        let mut mid = Vec::new();
        for s in 0..n {
            let f0 = f(&y).unwrap();
            let j = jacobian(&mut f, &y, &f0, &se, &|_| 1e-8).unwrap();
            let a = step(&mut f, &y, &f0, &j, h, tol).unwrap();
            if let Some(theta) = probe {
                if s == n / 2 {
                    mid = a.dense.eval(theta * h);
                }
            }
            y = a.y1;
        }
        (y, mid)
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(u, v)| (u - v).abs())
            .fold(0.0, f64::max)
    }

    /// Fifth order: the differences of successive step halvings shrink by about 32.
    #[test]
    fn fifth_order_under_step_halving() {
        let (a, b, c) = (run(20, None).0, run(40, None).0, run(80, None).0);
        let order = (max_diff(&a, &b) / max_diff(&b, &c)).log2();
        assert!(order > 4.6 && order < 5.6, "order {order}");
    }

    /// The dense output at the middle of a step is the state there to fourth order: against
    /// a run with steps ten times smaller, its error shrinks by about 2^5 per halving of the
    /// step (local error `O(h^5)` of a fourth-order interpolant).
    #[test]
    fn dense_output_is_fourth_order() {
        let err = |n: usize| {
            // The middle of step n/2 is at time (n/2 + 1/2)/n = 0.5 + 0.5/n.
            let (_, mid) = run(n, Some(0.5));
            let t = 0.5 + 0.5 / n as f64;
            let fine = 20 * n;
            let steps = (t * fine as f64).round() as usize;
            let tol = Tolerance::uniform(1.0, 1.0);
            let h = 1.0 / fine as f64;
            let mut y = vec![1.0, 1.0, 0.0, 1.0];
            let se = sqrt_eps::<f64>(());
            for _ in 0..steps {
                let f0 = f(&y).unwrap();
                let j = jacobian(&mut f, &y, &f0, &se, &|_| 1e-8).unwrap();
                y = step(&mut f, &y, &f0, &j, h, tol).unwrap().y1;
            }
            max_diff(&mid, &y)
        };
        let (e1, e2) = (err(10), err(20));
        let order = (e1 / e2).log2();
        assert!(
            order > 4.4 && order < 5.8,
            "local order {order} ({e1:e}, {e2:e})"
        );
    }

    /// L-stability and a stiffly accurate error estimate: one step of `y' = -lambda y`,
    /// `y0 = 1`, `h lambda = 1e8` returns `R(-1e8) = -1.5e-7` (measured) with an error norm
    /// of 87 at rtol 1e-9 (the step changes `y` by 1, to a relative 1.5e-7). Shampine's
    /// A-stable method ([`crate::flow::rosenbrock`]) returns 1/3 with an error norm of
    /// 6.7e8: its embedded method does not damp stiff modes, which is what limits its steps
    /// in the stiff phase.
    #[test]
    fn stiff_decay_is_damped_in_one_step() {
        let lambda = 1e8;
        let mut g = |y: &[f64]| Ok(vec![-lambda * y[0]]);
        let y0 = [1.0];
        let f0 = g(&y0).unwrap();
        let a = step(
            &mut g,
            &y0,
            &f0,
            &[vec![-lambda]],
            1.0,
            Tolerance::uniform(1e-9, 1e-12),
        )
        .unwrap();
        assert!(a.y1[0].abs() < 1e-6, "{}", a.y1[0]);
        assert!(a.err < 1e3, "{}", a.err);
    }
}
