//! Flows at large m (`derivations/numerics.md`, "Flows at large m", eqs. (K1)-(K4)): the
//! separable path of a frozen diagonal head against the general one (right-hand side,
//! Jacobian, block factorization), with planted errors that the comparisons reject; flows
//! at m = 16 and 64 that finish; the memory budget that replaces the cap of 32 neurons.

use predhead::config::parse_config;
use predhead::flow::control::Tolerance;
use predhead::flow::integrate::{check_memory, flow_memory, FLOW_MEMORY_BUDGET};
use predhead::flow::jacobian::{DualJacobian, ExactJacobian};
use predhead::flow::linear::ScaledLu;
use predhead::flow::problem::{Coordinates, Problem, SEPARABLE_FROM};
use predhead::flow::separable::{Layout, SeparableJacobian};
use predhead::flow::{integrate, Method, Options};
use predhead::moments::population::Reduced;
use predhead::setting::Config;
use predhead::square::Square;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn config(head: &str, norm: &str, sg: bool, m: usize, dim: u64) -> Config {
    parse_config(&format!(
        r#"
[setting]
dim = {dim}
patches = 4
feature_patches = 2
alpha = [4.0, 1.0]
noise_std = 1.0
neurons = {m}

[model]
head = "{head}"
normalization = "{norm}"
stop_gradient = {sg}
"#
    ))
    .unwrap()
}

/// A random state: `a, b ~ N(0, 0.3^2)`, `G = L L^T / 7` for a Gaussian `7 x m` factor, the
/// head `diag` on the diagonal and `off` times a Gaussian off it.
fn random_state(m: usize, seed: u64, diag: &[f64], off: f64) -> Reduced<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = || -> f64 { StandardNormal.sample(&mut rng) };
    let a = (0..m).map(|_| 0.3 * n()).collect();
    let b = (0..m).map(|_| 0.3 * n()).collect();
    let l: Vec<Vec<f64>> = (0..m).map(|_| (0..7).map(|_| n()).collect()).collect();
    let gram = Square::from_fn(m, |j, k| {
        (0..7).map(|i| l[j][i] * l[k][i]).sum::<f64>() / 7.0
    });
    let e = Square::from_fn(m, |j, k| if j == k { diag[j] } else { off * n() });
    Reduced { a, b, gram, e }
}

/// The compact Jacobian (as dense) and `f` of the separable path, forced on at this `m`.
fn separable(
    c: &Config,
    x0: &Reduced<f64>,
    coords: Coordinates,
    y: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let mut p = Problem::with_coordinates(c, x0, coords, ());
    p.set_separable(true);
    let mut jac = SeparableJacobian::for_problem(c, p, x0);
    let layout = jac.layout().clone();
    let mut f = vec![0.0; y.len()];
    let mut compact = vec![0.0; layout.len()];
    jac.eval(y, &mut f, &mut compact).unwrap();
    (layout.to_dense(&compact, &0.0), f)
}

/// The dense dual-number Jacobian and `f` of the general path.
fn dense(c: &Config, x0: &Reduced<f64>, coords: Coordinates, y: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = y.len();
    let mut f = vec![0.0; n];
    let mut jac = vec![0.0; n * n];
    DualJacobian::<16>::new(c, x0, coords)
        .eval(y, &mut f, &mut jac)
        .unwrap();
    (jac, f)
}

/// Row `i`'s scale of a Jacobian in the units of the state: the largest `|J_ik y_k|`, at
/// least `1e-10` times the matrix's (rows whose exact value vanishes, the decay
/// coordinates' `r_jk'`, hold rounding only and are compared at that floor).
fn row_scales(j: &[f64], y: &[f64]) -> Vec<f64> {
    let n = y.len();
    let rows: Vec<f64> = (0..n)
        .map(|i| {
            (0..n)
                .map(|k| (j[i * n + k] * y[k]).abs())
                .fold(0.0, f64::max)
        })
        .collect();
    let top = rows.iter().copied().fold(0.0, f64::max);
    rows.iter().map(|r| r.max(1e-10 * top)).collect()
}

/// The largest difference of two Jacobians, entry `(i, k)` weighted by `|y_k|` over row
/// `i`'s scale of `b` ([`row_scales`]). Rounding gives `~1e-16`; a missing entry gives its
/// own weight.
fn weighted_difference(a: &[f64], b: &[f64], y: &[f64]) -> f64 {
    let n = y.len();
    let scale = row_scales(b, y);
    (0..n * n)
        .map(|ik| (a[ik] - b[ik]).abs() * y[ik % n].abs() / scale[ik / n])
        .fold(0.0, f64::max)
}

/// The structured Jacobian equals the dense dual-number one exactly (bit for bit but for
/// the sign of the zeros off the pattern: the general path only adds exact zeros to the
/// separable path's operations, eq. (K2)), at m = 5 and 6, both
/// coordinates, both normalizations, with and without stop-gradient, at `E = I` and at a
/// diagonal `E != I`; so does its `f`. Planted
/// errors: one structural entry dropped from the pattern, and the separable path forced on
/// a head with off-diagonal entries; both are rejected.
#[test]
fn separable_jacobian_equals_dense_dual_jacobian() {
    let mut worst = 0.0f64;
    for m in [5usize, 6] {
        for (norm, sg) in [("batchnorm", true), ("batchnorm", false), ("none", true)] {
            let c = config("frozen", norm, sg, m, 1000);
            for (seed, diag) in [
                (1u64, vec![1.0; m]),
                (2, (0..m).map(|j| 0.6 + 0.2 * j as f64).collect()),
            ] {
                let x0 = random_state(m, seed, &diag, 0.0);
                for coords in [Coordinates::Plain, Coordinates::Decay] {
                    let y = Problem::with_coordinates(&c, &x0, coords, ()).pack(&x0);
                    let (js, fs) = separable(&c, &x0, coords, &y);
                    let (jd, fd) = dense(&c, &x0, coords, &y);
                    let d = weighted_difference(&js, &jd, &y);
                    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    // Equal as numbers: bit for bit but for the sign of the zeros off the
                    // pattern (-0 in the dense pass, +0 here).
                    assert!(js == jd, "m {m} {norm} {sg} {coords:?}: {d:e}");
                    assert_eq!(bits(&fs), bits(&fd), "f, m {m} {norm} {sg} {coords:?}");
                    let df = fs
                        .iter()
                        .zip(&fd)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    let fmax = fd.iter().map(|v| v.abs()).fold(0.0, f64::max);
                    assert!(df <= 1e-14 * fmax, "f: {df:e} of {fmax:e}");
                    worst = worst.max(d);
                    // The separable right-hand side equals the general one; its loss is
                    // summed per neuron (to rounding).
                    let general = Problem::with_coordinates(&c, &x0, coords, ());
                    let mut sep = general.clone();
                    sep.set_separable(true);
                    let ((fg, lg), (fsep, lsep)) = (
                        general.rhs_with_loss(&y).unwrap(),
                        sep.rhs_with_loss(&y).unwrap(),
                    );
                    assert!(fg == fsep && fsep == fs);
                    assert!((lg - lsep).abs() <= 1e-14 * lg.abs(), "{lg} {lsep}");

                    // Falsifier 1: drop from the pattern the neuron-block entry with the
                    // largest weight.
                    let layout = Layout::new(&Problem::with_coordinates(&c, &x0, coords, ()));
                    let n = y.len();
                    let at = (0..m)
                        .flat_map(|j| {
                            let b = layout.block(j);
                            (0..9).map(move |i| (b[i / 3], b[i % 3]))
                        })
                        .max_by(|p, q| {
                            let scale = row_scales(&jd, &y);
                            let w =
                                |(r, k): (usize, usize)| (jd[r * n + k] * y[k]).abs() / scale[r];
                            w(*p).total_cmp(&w(*q))
                        })
                        .unwrap();
                    let mut planted = js.clone();
                    planted[at.0 * n + at.1] = 0.0;
                    assert!(weighted_difference(&planted, &jd, &y) > 1e-2, "{at:?}");
                }
            }
        }
    }
    eprintln!("largest weighted difference {worst:e}");
    // Falsifier 2: a frozen head with off-diagonal entries does not separate.
    let c = config("frozen", "batchnorm", true, 6, 1000);
    let x0 = random_state(6, 3, &[1.0; 6], 0.05);
    let y = Problem::with_coordinates(&c, &x0, Coordinates::Plain, ()).pack(&x0);
    let (js, _) = separable(&c, &x0, Coordinates::Plain, &y);
    let (jd, _) = dense(&c, &x0, Coordinates::Plain, &y);
    assert!(weighted_difference(&js, &jd, &y) > 1e-6);
}

/// Which flows take the separable path: a frozen diagonal head from `SEPARABLE_FROM`
/// neurons on, nothing else (the trained heads, `identity-offdiag` and `linear`, couple
/// the neurons through `E`, and keep the dense exact Jacobian).
#[test]
fn only_frozen_diagonal_heads_separate() {
    for head in ["identity-offdiag", "frozen", "linear"] {
        for m in [SEPARABLE_FROM - 1, SEPARABLE_FROM] {
            let c = config(head, "batchnorm", true, m, 1000);
            for off in [0.0, 0.05] {
                let x0 = random_state(m, 4, &vec![1.0; m], off);
                let want = head == "frozen" && m >= SEPARABLE_FROM && off == 0.0;
                let p = Problem::with_coordinates(&c, &x0, Coordinates::Decay, ());
                assert_eq!(p.separable(), want, "{head} m {m} off {off}");
                let sep = SeparableJacobian::new(&c, &x0, Coordinates::Decay);
                assert_eq!(sep.is_some(), want);
            }
        }
    }
}

/// The block factorization solves the same system as the dense one (to rounding), and a
/// planted error in one pair row is seen.
#[test]
fn block_factorization_solves_the_dense_system() {
    let m = 6;
    let c = config("frozen", "batchnorm", true, m, 1000);
    let x0 = random_state(m, 5, &[1.0; 6], 0.0);
    for coords in [Coordinates::Plain, Coordinates::Decay] {
        let mut p = Problem::with_coordinates(&c, &x0, coords, ());
        p.set_separable(true);
        let y = p.pack(&x0);
        let layout = Layout::new(&p);
        let mut jac = SeparableJacobian::for_problem(&c, p, &x0);
        let mut f = vec![0.0; y.len()];
        let mut compact = vec![0.0; layout.len()];
        jac.eval(&y, &mut f, &mut compact).unwrap();
        let tol = Tolerance {
            rtol: 1e-9,
            atol: 1e-13,
            atol_corr: 1e-12,
            atol_head: 1e-12,
            corr_from: usize::MAX,
            head_from: usize::MAX,
        };
        let w: Vec<f64> = (0..y.len()).map(|i| 1.0 + 0.1 * i as f64).collect();
        for inv_gh in [1e-6, 1.0, 1e3] {
            let block = ScaledLu::with_layout(y.len(), (), Some(&layout));
            let mut block = block;
            block.factor(&compact, &inv_gh, &y, tol).unwrap();
            let full = ScaledLu::new(&layout.to_dense(&compact, &0.0), inv_gh, &y, tol).unwrap();
            let (gb, gd) = (block.solve(&w), full.solve(&w));
            let rel = |a: &[f64], b: &[f64]| {
                let s = b.iter().map(|v| v.abs()).fold(0.0, f64::max);
                a.iter()
                    .zip(b)
                    .map(|(x, z)| (x - z).abs())
                    .fold(0.0, f64::max)
                    / s
            };
            assert!(
                rel(&gb, &gd) < 1e-12,
                "{coords:?} {inv_gh}: {:e}",
                rel(&gb, &gd)
            );
            // Planted: the last pair row's own derivative off by 1%.
            let mut wrong = compact.clone();
            let last = layout.len() - 1;
            wrong[last] = 1.01 * wrong[last] + 0.01 * inv_gh;
            let mut bad = ScaledLu::with_layout(y.len(), (), Some(&layout));
            bad.factor(&wrong, &inv_gh, &y, tol).unwrap();
            assert!(rel(&bad.solve(&w), &gd) > 1e-5);
        }
    }
}

/// Theorem 4.3's setting (frozen `E = I`) at m = 16 and 64 finishes (0.1 s and 2 s on one
/// core in release): the automatic method, and at m = 16 the Rosenbrock method throughout
/// (every step through the compact Jacobian and the block factorization), whose event
/// times agree with the explicit run's to the tolerance.
#[test]
fn frozen_flows_at_m_16_and_64_finish() {
    for m in [16usize, 64] {
        let c = config("frozen", "batchnorm", true, m, 1000);
        let x0 = predhead::init::reduced(&c.setting, 0).unwrap();
        let opts = Options::new(&c);
        let run = integrate(&c, &x0, &opts, &mut |_, _| Ok(())).unwrap();
        let s = &run.summary;
        assert_eq!(format!("{:?}", s.termination), "Horizon");
        assert!(s.t1.is_some());
        assert!(s.corr_final.unwrap().abs() > 0.999_999);
        if m == 16 {
            let mut ros = opts;
            ros.method = Method::Rosenbrock;
            let r = integrate(&c, &x0, &ros, &mut |_, _| Ok(())).unwrap();
            assert_eq!(r.steps_by_method[0], 0);
            assert!(r.jacobians > 1000);
            for (a, b) in [(s.t1, r.summary.t1), (s.t3, r.summary.t3)] {
                let (a, b) = (a.unwrap(), b.unwrap());
                assert!((a / b - 1.0).abs() < 1e-7, "{a} {b}");
            }
        }
    }
}

/// The memory budget (eq. (K4)): the dense exact Jacobian fits up to m = 73 for the
/// trained heads, the separable path far beyond; m = 64 runs for every head; one neuron
/// more than the bound is refused, naming `setting.neurons`.
#[test]
fn memory_budget_bounds_the_neurons() {
    let trainable = |m: usize, head: &str| match head {
        "linear" => m * m,
        _ => m * (m - 1),
    };
    for head in ["identity-offdiag", "linear"] {
        assert!(check_memory(73, trainable(73, head), false).is_ok());
        let err = check_memory(74, trainable(74, head), false).unwrap_err();
        assert!(err.to_string().contains("setting.neurons"), "{err}");
        assert!(check_memory(64, trainable(64, head), false).is_ok());
    }
    let top = (1..100_000)
        .take_while(|&m| flow_memory(m, 0, true) <= FLOW_MEMORY_BUDGET)
        .last()
        .unwrap();
    assert!(top > 2000, "{top}");
    assert!(check_memory(top, 0, true).is_ok());
    assert!(check_memory(top + 1, 0, true).is_err());
    eprintln!("separable bound: m = {top}");
}

/// `faer`'s blocked LU (used for dense systems from `BLOCKED_FROM` unknowns on: the
/// paper's head from `m = 9`) solves the Rosenbrock systems as the hand-written one does, to
/// rounding, at `m = 9` (`n = 135`) on the dense exact Jacobian; a planted error in one
/// entry of the matrix is seen.
#[test]
fn blocked_factorization_agrees_with_the_hand_written_one() {
    use predhead::flow::linear::BLOCKED_FROM;
    let m = 9;
    let c = config("identity-offdiag", "batchnorm", true, m, 1000);
    let x0 = random_state(m, 6, &[1.0; 9], 0.05);
    let coords = Coordinates::Decay;
    let y = Problem::with_coordinates(&c, &x0, coords, ()).pack(&x0);
    let n = y.len();
    assert!(n >= BLOCKED_FROM);
    let (jac, _) = dense(&c, &x0, coords, &y);
    let tol = Tolerance {
        rtol: 1e-9,
        atol: 1e-13,
        atol_corr: 1e-12,
        atol_head: 1e-12,
        corr_from: 3 * m,
        head_from: 2 * m + m * (m + 1) / 2,
    };
    let w: Vec<f64> = (0..n).map(|i| 1.0 - 0.01 * i as f64).collect();
    let rel = |a: &[f64], b: &[f64]| {
        let s = b.iter().map(|v| v.abs()).fold(0.0, f64::max);
        a.iter()
            .zip(b)
            .map(|(x, z)| (x - z).abs())
            .fold(0.0, f64::max)
            / s
    };
    for inv_gh in [1e-6, 1e-2, 1.0, 1e3] {
        let mut blocked = ScaledLu::with_size(n, ());
        blocked.factor(&jac, &inv_gh, &y, tol).unwrap();
        let mut plain = ScaledLu::with_size(n, ());
        plain.set_blocked(false);
        plain.factor(&jac, &inv_gh, &y, tol).unwrap();
        let (gb, gp) = (blocked.solve(&w), plain.solve(&w));
        assert!(rel(&gb, &gp) < 1e-10, "{inv_gh}: {:e}", rel(&gb, &gp));
        // Planted: one off-diagonal entry of J changed by 10% of the largest entry of its row.
        let mut wrong = jac.clone();
        let row = 2 * m;
        let big = (0..n).map(|k| jac[row * n + k].abs()).fold(0.0, f64::max);
        wrong[row * n] += 0.1 * big;
        let mut bad = ScaledLu::with_size(n, ());
        bad.factor(&wrong, &inv_gh, &y, tol).unwrap();
        assert!(rel(&bad.solve(&w), &gp) > 1e-8, "{inv_gh}");
    }
}
