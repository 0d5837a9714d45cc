//! Matrix-free Rodas5 stages for the trained heads at large m (`derivations/numerics.md`,
//! "Flows at large m", eqs. (K5)-(K8)): the head blocks against the dense exact Jacobian,
//! the stage solves against the dense LU, and whole flows at m = 4..8 against the dense
//! path, each with a planted error that the comparison rejects.

use predhead::config::parse_config;
use predhead::flow::control::Tolerance;
use predhead::flow::jacobian::{DualJacobian, ExactJacobian};
use predhead::flow::krylov::{self, Krylov};
use predhead::flow::linear::ScaledLu;
use predhead::flow::problem::{Coordinates, Problem};
use predhead::flow::{integrate, Options, Run};
use predhead::moments::population::Reduced;
use predhead::setting::Config;
use predhead::square::Square;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn config(head: &str, norm: &str, sg: bool, m: usize, horizon: Option<f64>) -> Config {
    let training = horizon.map_or(String::new(), |h| format!("[training]\nhorizon = {h:e}\n"));
    parse_config(&format!(
        r#"
[setting]
dim = 1000
patches = 4
feature_patches = 2
alpha = [4.0, 1.0]
noise_std = 1.0
neurons = {m}

[model]
head = "{head}"
normalization = "{norm}"
stop_gradient = {sg}
{training}"#
    ))
    .unwrap()
}

/// A random state: `a, b ~ N(0, 0.3^2)`, `G = L L^T / 7` for a Gaussian `7 x m` factor,
/// `E = I + 0.1 N(0, 1)` off the diagonal.
fn random_state(m: usize, seed: u64) -> Reduced<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = || -> f64 { StandardNormal.sample(&mut rng) };
    let a = (0..m).map(|_| 0.3 * n()).collect();
    let b = (0..m).map(|_| 0.3 * n()).collect();
    let l: Vec<Vec<f64>> = (0..m).map(|_| (0..7).map(|_| n()).collect()).collect();
    let gram = Square::from_fn(m, |j, k| {
        (0..7).map(|i| l[j][i] * l[k][i]).sum::<f64>() / 7.0
    });
    let e = Square::from_fn(m, |j, k| if j == k { 1.0 } else { 0.1 * n() });
    Reduced { a, b, gram, e }
}

/// The dense dual-number Jacobian (row-major) and `f` at `y`.
fn dense(c: &Config, x0: &Reduced<f64>, y: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = y.len();
    let (mut f, mut jac) = (vec![0.0; n], vec![0.0; n * n]);
    DualJacobian::<16>::new(c, x0, Coordinates::Decay)
        .eval(y, &mut f, &mut jac)
        .unwrap();
    (jac, f)
}

/// Whether the rows from `rows_from` on, restricted to the columns from `cols_from` on, of
/// the row-major `jac` vanish exactly outside the blocks of equal head row (`owner(i)`).
fn block_diagonal(
    jac: &[f64],
    n: usize,
    rows_from: usize,
    cols_from: usize,
    owner: &dyn Fn(usize) -> usize,
) -> bool {
    (rows_from..n).all(|i| (cols_from..n).all(|k| owner(i) == owner(k) || jac[i * n + k] == 0.0))
}

/// (K5): the head-head part of the exact Jacobian is block diagonal by rows of `E`, and the
/// coloured `Dual<16>` passes give its blocks exactly (equal to the dense dual-number
/// Jacobian's entries) and `f` bit for bit; at m = 5 and 6 (`linear` and the paper's head),
/// both normalizations, with and without stop-gradient, and at m = 20 (two passes of
/// columns). Planted errors: the same block test on the rows of the head against the
/// columns of the encoder (which couple every row) fails, and a block with one entry
/// changed by 1e-12 relative is told apart.
#[test]
fn head_blocks_equal_the_dense_jacobian() {
    for (m, head, norm, sg) in [
        (5usize, "identity-offdiag", "batchnorm", true),
        (6, "identity-offdiag", "batchnorm", false),
        (5, "linear", "none", true),
        (6, "linear", "batchnorm", true),
        (20, "identity-offdiag", "batchnorm", true),
    ] {
        let c = config(head, norm, sg, m, None);
        let x0 = random_state(m, 7 + m as u64);
        let p = Problem::with_coordinates(&c, &x0, Coordinates::Decay, ());
        let y = p.pack(&x0);
        let n = y.len();
        let from = p.head_from();
        let trainable = p.trainable().to_vec();
        let owner = |i: usize| {
            if i >= from {
                trainable[i - from].0
            } else {
                usize::MAX - i
            }
        };
        let (jac, fd) = dense(&c, &x0, &y);
        assert!(
            block_diagonal(&jac, n, from, from, &owner),
            "m {m} {head}: (K5)"
        );
        // Planted: the head rows against all columns (the encoder's couple every row).
        assert!(
            !block_diagonal(&jac, n, from, 0, &|i| if i >= from {
                owner(i)
            } else {
                usize::MAX
            }),
            "m {m}"
        );
        let mut k = Krylov::new(&c, &x0, Coordinates::Decay);
        let mut f = vec![0.0; n];
        k.set_point(&y, &mut f).unwrap();
        assert_eq!(
            f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            fd.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "f, m {m} {head}"
        );
        for j in 0..m {
            let (block, idx) = k.head_block(j);
            let t = idx.len();
            let want: Vec<f64> = (0..t * t)
                .map(|ab| jac[idx[ab / t] * n + idx[ab % t]])
                .collect();
            assert!(block == &want[..], "m {m} {head} row {j}");
            let mut planted = want.clone();
            planted[t + 1] *= 1.0 + 1e-12;
            assert!(planted[t + 1] == want[t + 1] || block != &planted[..]);
        }
    }
}

/// The weighted RMS norm of `a - b` in the error control's units at `y`.
fn weighted(a: &[f64], b: &[f64], y: &[f64], tol: Tolerance) -> f64 {
    let s: f64 = a
        .iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, z))| ((x - z) / tol.scale_at(i, y[i].abs())).powi(2))
        .sum();
    (s / a.len() as f64).sqrt()
}

/// (K6)-(K7): a matrix-free stage solve equals the dense LU's solution of `(I/(gamma h) -
/// J) k = w` to 1e-5 of the local tolerance (the stopping threshold is 1e-6 of it) or to
/// `1e-11` of the solution's own size in those units (the rounding floor, eq. (K7)), at
/// random states with m = 6 and 8, for `1/(gamma h) = 1e-6, 1e-2, 1, 1e3` and a
/// right-hand side of the size of `f(y)` and one `1e-3` of that. At the long steps
/// (`1/(gamma h) < 1`) of a random state GMRES may not reach the threshold within its
/// basis: the solve then errs (the attempt is rejected), it never returns a worse
/// solution. Planted: the dense solution of a system whose `1/(gamma h)` differs by 1e-4
/// relative is told apart.
#[test]
fn stage_solves_match_the_dense_lu() {
    let mut failed = 0;
    for m in [6usize, 8] {
        let c = config("identity-offdiag", "batchnorm", true, m, None);
        let x0 = random_state(m, 3 + m as u64);
        let p = Problem::with_coordinates(&c, &x0, Coordinates::Decay, ());
        let y = p.pack(&x0);
        let n = y.len();
        let tol = p.tolerance(Options::default_tolerance(1e-9, 1000));
        let (jac, f) = dense(&c, &x0, &y);
        let mut k = Krylov::new(&c, &x0, Coordinates::Decay);
        let mut fk = vec![0.0; n];
        k.set_point(&y, &mut fk).unwrap();
        for inv_gh in [1e-6, 1e-2, 1.0, 1e3] {
            k.factor(inv_gh, tol).unwrap();
            for scale in [1.0, 1e-3] {
                let w: Vec<f64> = f.iter().map(|v| v * scale).collect();
                let mut got = vec![0.0; n];
                if k.solve(&w, &mut got).is_err() {
                    // Not within the basis: the attempt fails (and the flow retries a
                    // smaller step); never at the step sizes of a stiff transition.
                    assert!(inv_gh < 1.0, "m {m} inv_gh {inv_gh:e} scale {scale}");
                    failed += 1;
                    continue;
                }
                let want = ScaledLu::new(&jac, inv_gh, &y, tol).unwrap().solve(&w);
                let d = weighted(&got, &want, &y, tol);
                let zero = vec![0.0; n];
                let bound = 1e-5f64.max(1e-11 * weighted(&want, &zero, &y, tol));
                assert!(d <= bound, "m {m} inv_gh {inv_gh:e} scale {scale}: {d:e}");
                let off = ScaledLu::new(&jac, inv_gh * (1.0 + 1e-4), &y, tol)
                    .unwrap()
                    .solve(&w);
                let planted = weighted(&got, &off, &y, tol);
                assert!(
                    planted > 1e-5,
                    "m {m} inv_gh {inv_gh:e} scale {scale}: planted {planted:e}"
                );
            }
        }
    }
    assert!(failed < 8, "{failed} of 16 solves failed");
}

fn run(c: &Config, matrix_free: bool) -> Run {
    let x0 = predhead::init::reduced(&c.setting, 0).unwrap();
    let mut o = Options::new(c);
    o.matrix_free = Some(matrix_free);
    integrate(c, &x0, &o, &mut |_, _| Ok(())).unwrap()
}

/// The largest relative difference of the final states' coordinates (`a`, `b`, `G`,
/// `E`), each relative to `max(|x|, 1e-3)`.
fn final_difference(a: &Reduced<f64>, b: &Reduced<f64>) -> f64 {
    let flat = |x: &Reduced<f64>| -> Vec<f64> {
        x.a.iter()
            .chain(&x.b)
            .chain(x.gram.entries())
            .chain(x.e.entries())
            .copied()
            .collect()
    };
    flat(a)
        .iter()
        .zip(flat(b))
        .map(|(x, z)| (x - z).abs() / x.abs().max(1e-3))
        .fold(0.0, f64::max)
}

/// The matrix-free path against the dense exact one on the paper's head at m = 4..8 (the
/// README setting at `d = 1000`, seed 0, to `tau = 2e7`, which takes each run through the
/// switch to Rodas5 and the stiff transitions after `t3`): the same event times to
/// `1e-9` relative (here they precede the stiff phase), the final states to `1e-6` relative
/// (measured: at most ~1e-8 at m = 8 to the horizon `1e9`), and at most 5% more accepted
/// steps. Planted: a final state with one coordinate off by `1e-5` relative is rejected.
#[test]
fn matrix_free_flows_agree_with_the_dense_path() {
    for m in [4usize, 6, 8] {
        let c = config("identity-offdiag", "batchnorm", true, m, Some(2e7));
        let d = run(&c, false);
        let k = run(&c, true);
        assert!(!d.matrix_free && k.matrix_free);
        assert!(
            k.steps_by_method[1] > 100 && k.krylov_counts[2] > 0,
            "m {m}: no stiff phase"
        );
        for (te, tk) in [
            (d.summary.t1, k.summary.t1),
            (d.summary.t2, k.summary.t2),
            (d.summary.t3, k.summary.t3),
            (d.summary.t_end, k.summary.t_end),
        ] {
            match (te, tk) {
                (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-9 * a, "m {m}: {a} vs {b}"),
                (a, b) => assert_eq!(a, b, "m {m}"),
            }
        }
        let diff = final_difference(&d.final_state, &k.final_state);
        assert!(diff <= 1e-6, "m {m}: {diff:e}");
        assert!(
            k.summary.steps as f64 <= 1.05 * d.summary.steps as f64,
            "m {m}: {} vs {}",
            k.summary.steps,
            d.summary.steps
        );
        let mut planted = k.final_state.clone();
        planted.b[0] += 1e-5 * planted.b[0].abs().max(1e-3);
        assert!(final_difference(&d.final_state, &planted) > 1e-6, "m {m}");
    }
}

/// The default: matrix-free for the trained heads from `KRYLOV_FROM = 9` neurons on, never
/// for the frozen head (which has the separable path) nor below 9.
#[test]
fn matrix_free_is_the_default_for_trained_heads_from_nine_neurons() {
    for (head, m, want) in [
        ("identity-offdiag", 8usize, false),
        ("identity-offdiag", 9, true),
        ("linear", 9, true),
        ("frozen", 9, false),
        ("frozen", 64, false),
    ] {
        let c = config(head, "batchnorm", true, m, None);
        assert_eq!(krylov::default_on(&c, m), want, "{head} {m}");
    }
}
