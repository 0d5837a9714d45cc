//! The exact Jacobian of the flow's right-hand side (`derivations/numerics.md`, "Jacobian"):
//! forward-mode dual numbers through the generic right-hand side, against central
//! differences, against its own Taylor remainder (quadratic under halving of a change of
//! state, which no difference quotient passes), and across pass widths.

use predhead::config::parse_config;
use predhead::flow::jacobian::{DualJacobian, ExactJacobian, FlowScalar};
use predhead::flow::problem::{Coordinates, Problem};
use predhead::flow::{integrate, Options};
use predhead::moments::population::Reduced;
use predhead::reduced::reduce;
use predhead::setting::Config;
use predhead::state::State;

fn config(dim: u64, head: &str, norm: &str, sg: bool, m: usize) -> Config {
    parse_config(&format!(
        r#"
[setting]
dim = {dim}
patches = 8
feature_patches = 2
alpha = [2.0, 1.2]
noise_std = 0.8
neurons = {m}

[model]
head = "{head}"
normalization = "{norm}"
stop_gradient = {sg}

[training]
lr = 1e-2
lr_head = 3e-3
"#
    ))
    .unwrap()
}

/// A generic state of dimension 7 with a non-trivial head.
fn generic_state(m: usize) -> Reduced<f64> {
    let w = (0..m)
        .map(|j| {
            (0..7)
                .map(|i| 0.2 + 0.13 * ((3 * i + 5 * j) % 7) as f64 - 0.07 * j as f64)
                .collect()
        })
        .collect();
    let mut s = State::with_identity_head(w);
    for j in 0..m {
        for r in 0..m {
            if j != r {
                s.e[j][r] = 0.04 * (j as f64 + 1.0) - 0.02 * r as f64;
            }
        }
        s.e[j][j] = 1.0 + 0.05 * j as f64;
    }
    reduce::<f64>(&s, ())
}

/// States along the paper's default trajectory (`d = 100`, seed 0): the start, and the
/// first samples after flow times 1.45e4 (just after `t1`), 3e4 (phase II) and 4.7e4
/// (after `t3`), where the flow is stiff.
fn trajectory_states(c: &Config) -> Vec<Reduced<f64>> {
    let x0 = predhead::init::reduced(&c.setting, 0).unwrap();
    let mut opts = Options::new(c);
    opts.stop_at_t_end = false;
    opts.horizon = 5e4;
    let mut marks = vec![1.45e4, 3e4, 4.7e4];
    let mut out = vec![x0.clone()];
    integrate(c, &x0, &opts, &mut |t, x| {
        if marks.first().is_some_and(|&m| t >= m) {
            marks.remove(0);
            out.push(x.clone());
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(out.len(), 4);
    out
}

/// The exact Jacobian and `f` at `y`.
fn exact(c: &Config, x0: &Reduced<f64>, coords: Coordinates, y: &[f64]) -> Vec<Vec<f64>> {
    let n = y.len();
    let mut ex = f64::exact_jacobian(c, x0, coords).unwrap();
    let mut jac = vec![0.0; n * n];
    let mut f = vec![0.0; n];
    ex.eval(y, &mut f, &mut jac).unwrap();
    let p = Problem::<f64>::with_coordinates(c, x0, coords, ());
    // The value part is the f64 right-hand side itself, bit for bit.
    assert_eq!(f, p.rhs(y).unwrap());
    jac.chunks_exact(n).map(<[f64]>::to_vec).collect()
}

/// Central differences, step `eps^(1/3) max(|y_j|, floor)` (`floor` 1e-2: every
/// coordinate's natural scale is at least that, and a smaller step on a zero head entry
/// only adds rounding noise) (truncation and rounding both
/// about `eps^(2/3) ~ 4e-11` relative to the column).
fn central(p: &Problem<f64>, y: &[f64], floor: f64) -> Vec<Vec<f64>> {
    let n = y.len();
    let mut jac = vec![vec![0.0; n]; n];
    for j in 0..n {
        let h = f64::EPSILON.cbrt() * y[j].abs().max(floor);
        let (mut yp, mut ym) = (y.to_vec(), y.to_vec());
        yp[j] += h;
        ym[j] -= h;
        let width = yp[j] - ym[j];
        let (fp, fm) = (p.rhs(&yp).unwrap(), p.rhs(&ym).unwrap());
        for i in 0..n {
            jac[i][j] = (fp[i] - fm[i]) / width;
        }
    }
    jac
}

/// Largest entry-wise difference relative to the largest entry of the row (the scale the
/// Rosenbrock matrix `I/(gamma h) - J` sees row by row).
fn rel_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(ra, rb)| {
            let scale = ra.iter().fold(0.0f64, |s, v| s.max(v.abs()));
            let diff = ra
                .iter()
                .zip(rb)
                .fold(0.0f64, |s, (u, v)| s.max((u - v).abs()));
            if scale > 0.0 {
                diff / scale
            } else {
                diff
            }
        })
        .fold(0.0, f64::max)
}

/// Exact against central differences to 1e-7 (row-relative), for every head mode,
/// normalization and stop-gradient at a generic state (m = 2 and 3, both coordinates; m = 3
/// with a linear head has n = 21 > 16, so it also exercises several dual passes).
#[test]
fn exact_jacobian_matches_central_differences() {
    for head in ["identity-offdiag", "frozen", "linear"] {
        for norm in ["batchnorm", "none"] {
            for sg in [true, false] {
                for m in [2, 3] {
                    let c = config(7, head, norm, sg, m);
                    let x = generic_state(m);
                    for coords in [Coordinates::Plain, Coordinates::Decay] {
                        let p = Problem::<f64>::with_coordinates(&c, &x, coords, ());
                        let y = p.pack(&x);
                        let je = exact(&c, &x, coords, &y);
                        let jc = central(&p, &y, 1e-2);
                        let r = rel_diff(&je, &jc);
                        eprintln!("{head} {norm} sg={sg} m={m} {coords:?}: {r:e}");
                        assert!(r < 1e-7, "{head} {norm} sg={sg} m={m} {coords:?}: {r:e}");
                    }
                }
            }
        }
    }
}

/// Along the default trajectory, including the stiff phases where the Jacobian has
/// entries from 1e-9 to 10: exact against central differences to 1e-7 (row-relative).
#[test]
fn exact_jacobian_matches_central_differences_along_the_trajectory() {
    let c = parse_config(
        r#"
[setting]
dim = 100
patches = 8
feature_patches = 2
alpha = [2.0, 1.0]
noise_std = 1.0
neurons = 2

[model]
head = "identity-offdiag"
normalization = "batchnorm"
stop_gradient = true

[training]
lr = 1e-3
lr_head = 2e-4
"#,
    )
    .unwrap();
    let states = trajectory_states(&c);
    for (k, x) in states.iter().enumerate() {
        let p = Problem::<f64>::with_coordinates(&c, &states[0], Coordinates::Decay, ());
        let y = p.pack(x);
        let je = exact(&c, &states[0], Coordinates::Decay, &y);
        let jc = central(&p, &y, 1e-2);
        let r = rel_diff(&je, &jc);
        eprintln!("state {k}: {r:e}");
        assert!(r < 1e-7, "state {k}: {r:e}");
    }
}

/// A change of state `y -> y + delta v`: the remainder `f(y + delta v) - f(y) - delta J v`
/// of the exact Jacobian is second order, so it shrinks by 4 when `delta` halves (measured
/// ratios 3.996-4.0004; any error `E` in `J` would leave a first-order term `delta E v` and a
/// ratio that falls to 2). Every model at the generic state, m = 2.
#[test]
fn taylor_remainder_is_second_order() {
    for head in ["identity-offdiag", "linear"] {
        for norm in ["batchnorm", "none"] {
            for sg in [true, false] {
                let c = config(7, head, norm, sg, 2);
                let x = generic_state(2);
                let coords = Coordinates::Decay;
                let p = Problem::<f64>::with_coordinates(&c, &x, coords, ());
                let y = p.pack(&x);
                let je = exact(&c, &x, coords, &y);
                let f0 = p.rhs(&y).unwrap();
                let v: Vec<f64> = (0..y.len())
                    .map(|i| {
                        (0.3 + 0.1 * i as f64)
                            * y[i].abs().max(0.1)
                            * if i % 2 == 0 { 1.0 } else { -1.0 }
                    })
                    .collect();
                let remainder = |delta: f64| {
                    let yd: Vec<f64> = y.iter().zip(&v).map(|(a, b)| a + delta * b).collect();
                    let fd = p.rhs(&yd).unwrap();
                    (0..y.len())
                        .map(|i| {
                            let jv: f64 = je[i].iter().zip(&v).map(|(a, b)| a * b).sum();
                            (fd[i] - f0[i] - delta * jv).powi(2)
                        })
                        .sum::<f64>()
                        .sqrt()
                };
                let (r1, r2) = (remainder(2e-3), remainder(1e-3));
                let ratio = r1 / r2;
                eprintln!("{head} {norm} sg={sg}: ratio {ratio}");
                assert!(
                    (3.5..4.5).contains(&ratio),
                    "{head} {norm} sg={sg}: remainders {r1:e} {r2:e} ratio {ratio}"
                );
            }
        }
    }
}

/// The pass width does not change the result: 4-wide (three passes for n = 9), 9-wide (one)
/// and 16-wide Jacobians are bit-identical (each tangent is computed independently).
#[test]
fn pass_width_does_not_change_the_jacobian() {
    let c = config(7, "identity-offdiag", "batchnorm", true, 2);
    let x = generic_state(2);
    let coords = Coordinates::Decay;
    let p = Problem::<f64>::with_coordinates(&c, &x, coords, ());
    let y = p.pack(&x);
    let n = y.len();
    let run = |ex: &mut dyn ExactJacobian<f64>| {
        let mut jac = vec![0.0; n * n];
        let mut f = vec![0.0; n];
        ex.eval(&y, &mut f, &mut jac).unwrap();
        jac
    };
    let j4 = run(&mut DualJacobian::<4>::new(&c, &x, coords));
    let j9 = run(&mut DualJacobian::<9>::new(&c, &x, coords));
    let j16 = run(&mut DualJacobian::<16>::new(&c, &x, coords));
    assert_eq!(j4, j9);
    assert_eq!(j9, j16);
}
