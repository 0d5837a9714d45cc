//! The flow's right-hand side (`derivations/numerics.md`, eqs. (F1)-(F2)) against an
//! independent path: the explicit population gradient `reduced::evaluate_explicit` on a
//! `d`-dimensional state, mapped to `(a, b, G, E)` by the chain rule.

use predhead::config::parse_config;
use predhead::flow::problem::{Coordinates, Problem};
use predhead::moments::population::Constants;
use predhead::reduced::{evaluate_explicit, reduce};
use predhead::setting::Config;
use predhead::state::State;

fn config(head: &str, norm: &str, sg: bool, m: usize) -> Config {
    parse_config(&format!(
        r#"
[setting]
dim = 7
patches = 6
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

fn state(m: usize) -> State {
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
    }
    s
}

/// (F1): `a' = -grad_w[0]`, `b' = -grad_w[1]`,
/// `G_jk' = -sum_{i >= 2} (g_j[i] w_k[i] + w_j[i] g_k[i])`, `E' = -(lr_head/lr) grad_E`,
/// for every head mode, normalization and stop-gradient, m = 2 and 3. Agreement to 1e-12
/// relative (both are rounding-level computations of the same numbers in different
/// orders).
#[test]
fn rhs_equals_the_explicit_gradient_flow() {
    for m in [2usize, 3] {
        for head in ["identity-offdiag", "frozen", "linear"] {
            for norm in ["batchnorm", "none"] {
                for sg in [true, false] {
                    let c = config(head, norm, sg, m);
                    let st = state(m);
                    let k = Constants::<f64>::new(&c.setting, ());
                    let ex = evaluate_explicit::<f64>(&k, &c.model, &st, ()).unwrap();
                    let x = reduce::<f64>(&st, ());
                    let p = Problem::with_coordinates(&c, &x, Coordinates::Plain, ());
                    let dy = p.rhs(&p.pack(&x)).unwrap();
                    let mut want = Vec::new();
                    want.extend((0..m).map(|j| -ex.grad_w[j][0]));
                    want.extend((0..m).map(|j| -ex.grad_w[j][1]));
                    for j in 0..m {
                        for kk in j..m {
                            let s: f64 = (2..7)
                                .map(|i| {
                                    ex.grad_w[j][i] * st.w[kk][i] + st.w[j][i] * ex.grad_w[kk][i]
                                })
                                .sum();
                            want.push(-s);
                        }
                    }
                    for j in 0..m {
                        for r in 0..m {
                            if c.model.head.trainable(j, r) {
                                want.push(-0.3 * ex.grad_e[j][r]);
                            }
                        }
                    }
                    assert_eq!(dy.len(), want.len());
                    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
                    for (i, (g, w)) in dy.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-12 * scale,
                            "{head} {norm} sg={sg} m={m} component {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}

/// (F2)-(F3): the decay- and growth-coordinate right-hand sides are the derivatives of
/// those coordinates along the plain flow: central differences of `pack(x + h x')` with
/// `h = 1e-6` (error O(h^2) ~ 1e-12 relative; bound 1e-7), and the coordinates round-trip.
/// Growth coordinates are checked at a state whose feature coordinates are scaled by
/// 1e-4 (below `GROWTH_CEILING`, so that they take the form `u = c^(-4)`); there the
/// features move too slowly for a difference quotient, and their rows are checked against
/// the chain rule `u' = -4 c^(-5) c'` to 1e-13 relative instead.
#[test]
fn decay_and_growth_coordinates_are_the_chain_rule_of_plain_ones() {
    for m in [2usize, 3] {
        let c = config("linear", "batchnorm", true, m);
        for coords in [Coordinates::Decay, Coordinates::Growth] {
            let mut x = reduce::<f64>(&state(m), ());
            if coords == Coordinates::Growth {
                for v in x.a.iter_mut().chain(x.b.iter_mut()) {
                    *v *= 1e-4;
                }
            }
            let plain = Problem::with_coordinates(&c, &x, Coordinates::Plain, ());
            let decay = Problem::with_coordinates(&c, &x, coords, ());
            let yp = plain.pack(&x);
            let dyp = plain.rhs(&yp).unwrap();
            let yd = decay.pack(&x);
            let dyd = decay.rhs(&yd).unwrap();
            let h = 1e-6;
            let moved = |s: f64| {
                let y: Vec<f64> = yp.iter().zip(&dyp).map(|(a, b)| a + s * h * b).collect();
                decay.pack(&plain.unpack(&y))
            };
            let (fwd, bwd) = (moved(1.0), moved(-1.0));
            let features = if coords == Coordinates::Growth {
                2 * m
            } else {
                0
            };
            for i in 0..features {
                let cf = if i < m { x.a[i] } else { x.b[i - m] };
                assert!((yd[i] - cf.powi(-4)).abs() <= 1e-15 * yd[i], "u = c^(-4)");
                let want = -4.0 * cf.powi(-5) * dyp[i];
                assert!(
                    (dyd[i] - want).abs() <= 1e-13 * want.abs(),
                    "{coords:?} m={m} feature {i}: {} vs {want}",
                    dyd[i]
                );
            }
            for i in features..dyd.len() {
                let fd = (fwd[i] - bwd[i]) / (2.0 * h);
                assert!(
                    (fd - dyd[i]).abs() <= 1e-7 * (1.0 + dyd[i].abs()),
                    "{coords:?} m={m} component {i}: fd {fd} vs {}",
                    dyd[i]
                );
            }
            // Round trip of the coordinates.
            let back = decay.unpack(&yd);
            for j in 0..m {
                assert!((back.a[j] - x.a[j]).abs() <= 4e-16 * x.a[j].abs());
                assert!((back.b[j] - x.b[j]).abs() <= 4e-16 * x.b[j].abs());
                for k in 0..m {
                    assert!((back.gram.at(j, k) - x.gram.at(j, k)).abs() < 1e-14);
                }
            }
        }
    }
}

/// Growth coordinates store `u = c^(-4)` only below `GROWTH_CEILING`: a coordinate that
/// grows past it goes back to `c` (`Problem::release_grown`), the same state.
#[test]
fn growth_coordinates_release_grown_features() {
    let c = config("identity-offdiag", "batchnorm", true, 2);
    let mut x = reduce::<f64>(&state(2), ());
    x.a[0] = 5e-4;
    x.b[1] = -2e-3;
    let p = Problem::with_coordinates(&c, &x, Coordinates::Growth, ());
    let mut y = p.pack(&x);
    assert!(
        (y[0] / 5e-4f64.powi(-4) - 1.0).abs() < 1e-15,
        "a_0 below the ceiling: u"
    );
    assert_eq!(y[3], -2e-3, "b_1 above the ceiling: c");
    assert!(!p.release_grown(&mut y), "nothing has grown");
    y[0] = 1.2e-3f64.powi(-4);
    let before = p.unpack(&y);
    assert!(p.release_grown(&mut y));
    assert!(
        (y[0] - 1.2e-3).abs() <= 1e-18,
        "a_0 is stored plain: {}",
        y[0]
    );
    assert!((p.unpack(&y).a[0] - before.a[0]).abs() <= 4e-16 * 1.2e-3);
}

/// In growth coordinates a feature coordinate that is exactly zero keeps the plain form
/// (and stays zero: `c' = -3 c^2 (..)`); the others store `u = c^(-4)` and the sign.
#[test]
fn growth_coordinates_keep_zero_features_plain() {
    let c = config("identity-offdiag", "batchnorm", true, 2);
    let mut x = reduce::<f64>(&state(2), ());
    for v in x.a.iter_mut().chain(x.b.iter_mut()) {
        *v *= 1e-4;
    }
    x.b[1] = 0.0;
    x.a[0] = -x.a[0].abs();
    let p = Problem::with_coordinates(&c, &x, Coordinates::Growth, ());
    let y = p.pack(&x);
    assert_eq!(y[3], 0.0, "b_1 = 0 is stored as is");
    assert!((y[0] - x.a[0].powi(-4)).abs() <= 1e-15 * y[0]);
    let dy = p.rhs(&y).unwrap();
    assert_eq!(dy[3], 0.0, "a zero feature coordinate stays zero");
    let back = p.unpack(&y);
    assert!(back.a[0] < 0.0 && (back.a[0] - x.a[0]).abs() <= 4e-16 * x.a[0].abs());
}
