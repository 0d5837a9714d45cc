//! The streaming SGD gradient (`src/sgd.rs`) equals the reference batch network's
//! (`src/network.rs`) on the same batch, drawn explicitly with `data::batch_views` from the
//! same streams, for every head, normalization and stop-gradient mode and both kernels
//! (`derivations/sgd.md`, Sections 2-3). The two computations share no code beyond the
//! sampler: the network stores the batch and backpropagates through it; the kernels stream
//! it (the fused one through the affine decomposition (G4)). Agreement to 1e-12 relative
//! (in the max norm over all entries) leaves room only for rounding: both sum O(N P d)
//! terms of similar size in different orders, giving relative differences ~1e-15.

use predhead::batch::Batch;
use predhead::data;
use predhead::network::batch_loss_and_gradient;
use predhead::setting::{HeadMode, Model, Normalization, Setting};
use predhead::sgd::{batch_gradient, BatchGradient, Kernel};
use predhead::state::State;

fn setting(d: u64, m: usize) -> Setting {
    Setting {
        dim: d,
        patches: 6,
        feature_patches: 2,
        alpha: [2.0, 1.3],
        noise_std: 0.9,
        neurons: m,
    }
}

/// A generic state: random `W` (so the noise projections are not small) and a non-trivial
/// head, from the auxiliary stream.
fn state(s: &Setting, seed: u64) -> State {
    let d = s.dim as usize;
    let m = s.neurons;
    let z = data::standard_normals(
        &mut data::stream_rng(data::Domain::Aux, seed, 0, 0),
        m * d + m * m,
    );
    let w = (0..m)
        .map(|j| {
            (0..d)
                .map(|i| z[j * d + i] / (d as f64).sqrt() * 2.0)
                .collect()
        })
        .collect();
    let e = (0..m)
        .map(|j| {
            (0..m)
                .map(|r| {
                    if j == r {
                        1.0
                    } else {
                        0.3 * z[m * d + j * m + r]
                    }
                })
                .collect()
        })
        .collect();
    State { w, e }
}

fn max_abs(rows: &[Vec<f64>]) -> f64 {
    rows.iter().flatten().fold(0.0f64, |a, x| a.max(x.abs()))
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .fold(0.0f64, |acc, (x, y)| acc.max((x - y).abs()))
}

fn compare(
    label: &str,
    got: &BatchGradient,
    want_loss: f64,
    want_w: &[Vec<f64>],
    want_e: &[Vec<f64>],
) {
    let tol = 1e-12;
    let rl = (got.loss - want_loss).abs() / want_loss.abs();
    assert!(
        rl < tol,
        "{label}: loss {} vs {want_loss} (rel {rl:e})",
        got.loss
    );
    let rw = max_diff(&got.grad_w, want_w) / max_abs(want_w);
    assert!(rw < tol, "{label}: grad_w rel diff {rw:e}");
    let scale_e = max_abs(want_e).max(max_abs(want_w));
    let re = max_diff(&got.grad_e, want_e) / scale_e;
    assert!(re < tol, "{label}: grad_e rel diff {re:e}");
    for (j, row) in want_e.iter().enumerate() {
        for (r, x) in row.iter().enumerate() {
            if *x == 0.0 {
                assert_eq!(got.grad_e[j][r], 0.0, "{label}: untrained E[{j}][{r}]");
            }
        }
    }
}

#[test]
fn streaming_gradient_equals_reference_network_in_every_mode() {
    // N = 37 is not a multiple of the block size (16): the last block is partial.
    let n = 37;
    for (d, m) in [(40u64, 2usize), (19, 3)] {
        let s = setting(d, m);
        let st = state(&s, 11 + d);
        for step in [0u64, 5] {
            let seed = 2024;
            let (x1, x2) = data::batch_views(&s, seed, step, n);
            let batch = Batch::new(&s, x1, x2).unwrap();
            for head in HeadMode::ALL {
                for normalization in Normalization::ALL {
                    for stop_gradient in [true, false] {
                        let model = Model {
                            head,
                            normalization,
                            stop_gradient,
                        };
                        let want = batch_loss_and_gradient(&s, &model, &st, &batch).unwrap();
                        for kernel in [Kernel::Fused, Kernel::Regenerate] {
                            let got =
                                batch_gradient(&s, &model, &st, seed, step, n, kernel).unwrap();
                            let label = format!("d={d} m={m} step={step} {model:?} {kernel:?}");
                            compare(&label, &got, want.loss, &want.grad_w, &want.grad_e);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gradient_is_a_finite_difference_of_the_loss() {
    // Independent of network.rs: central differences of the streaming loss itself on a
    // fixed batch, in a few coordinates (noise and feature), step h = 1e-5 (truncation
    // error O(h^2) ~ 1e-10 relative, rounding ~ 1e-16 / 1e-5 = 1e-11).
    let s = setting(12, 2);
    let st = state(&s, 3);
    let n = 24;
    for stop_gradient in [true, false] {
        let model = Model {
            head: HeadMode::Linear,
            normalization: Normalization::Batchnorm,
            stop_gradient,
        };
        let g = batch_gradient(&s, &model, &st, 9, 1, n, Kernel::Fused).unwrap();
        let loss_at = |st: &State| {
            batch_gradient(&s, &model, st, 9, 1, n, Kernel::Fused)
                .unwrap()
                .loss
        };
        let h = 1e-5;
        // With stop-gradient the loss's derivative also has the target branch, which the
        // update leaves out: only the full gradient (stop_gradient = false) is d(loss)/dW.
        let coords: &[(usize, usize)] = if stop_gradient {
            &[]
        } else {
            &[(0, 0), (1, 1), (0, 5), (1, 11)]
        };
        for &(j, i) in coords {
            let mut plus = st.clone();
            plus.w[j][i] += h;
            let mut minus = st.clone();
            minus.w[j][i] -= h;
            let fd = (loss_at(&plus) - loss_at(&minus)) / (2.0 * h);
            let rel = (fd - g.grad_w[j][i]).abs() / max_abs(&g.grad_w);
            assert!(
                rel < 1e-8,
                "w[{j}][{i}]: fd {fd} vs {} (rel {rel:e})",
                g.grad_w[j][i]
            );
        }
        for (j, r) in [(0usize, 1usize), (1, 1)] {
            let mut plus = st.clone();
            plus.e[j][r] += h;
            let mut minus = st.clone();
            minus.e[j][r] -= h;
            let fd = (loss_at(&plus) - loss_at(&minus)) / (2.0 * h);
            let rel = (fd - g.grad_e[j][r]).abs() / max_abs(&g.grad_e);
            // E only enters the online branch, so stop-gradient does not change grad_E.
            assert!(
                rel < 1e-8,
                "E[{j}][{r}]: fd {fd} vs {} (rel {rel:e})",
                g.grad_e[j][r]
            );
        }
    }
}

#[test]
fn zero_variance_batch_is_an_error_not_a_panic() {
    let s = setting(8, 2);
    let mut st = state(&s, 1);
    st.w[0].iter_mut().for_each(|x| *x = 0.0);
    let model = Model {
        head: HeadMode::Frozen,
        normalization: Normalization::Batchnorm,
        stop_gradient: true,
    };
    for kernel in [Kernel::Fused, Kernel::Regenerate] {
        let err = batch_gradient(&s, &model, &st, 1, 0, 8, kernel).unwrap_err();
        assert!(err.to_string().contains("variance"), "{err}");
    }
}
