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

/// (F2): the decay-coordinate right-hand side is the derivative of the decay coordinates
/// along the plain flow: central differences of `pack_decay(x + h x')` with `h = 1e-6`
/// (error O(h^2) ~ 1e-12 relative; bound 1e-7), and the coordinates round-trip.
#[test]
fn decay_coordinates_are_the_chain_rule_of_plain_ones() {
    for m in [2usize, 3] {
        let c = config("linear", "batchnorm", true, m);
        let x = reduce::<f64>(&state(m), ());
        let plain = Problem::with_coordinates(&c, &x, Coordinates::Plain, ());
        let decay = Problem::with_coordinates(&c, &x, Coordinates::Decay, ());
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
        for i in 0..dyd.len() {
            let fd = (fwd[i] - bwd[i]) / (2.0 * h);
            assert!(
                (fd - dyd[i]).abs() <= 1e-7 * (1.0 + dyd[i].abs()),
                "m={m} component {i}: fd {fd} vs {}",
                dyd[i]
            );
        }
        // The layout: a, b, z_0..z_{m-1}, then r_jk (j < k) from `corr_from`, the head.
        assert_eq!(decay.corr_from(), 3 * m);
        for j in 0..m {
            assert_eq!(yd[decay.gram_index(j, j)], x.gram.at(j, j).powi(-2));
        }
        // Round trip of the coordinates.
        let back = decay.unpack(&yd);
        for j in 0..m {
            for k in 0..m {
                assert!((back.gram.at(j, k) - x.gram.at(j, k)).abs() < 1e-14);
            }
        }
    }
}
