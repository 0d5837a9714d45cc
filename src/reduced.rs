//! Reduced coordinates ↔ explicit `W`, and the population evaluation on explicit states.
//!
//! An explicit state `W in R^{d x m}` maps to `a_j = W[0][j]`, `b_j = W[1][j]` and the
//! Gram block `G_jk = sum_{i >= 2} W[i][j] W[i][k]` of the noise parts; the population
//! gradient maps back by `grad w_j = g_a[j] e_1 + g_b[j] e_2 + sum_k Sigma_jk u_k`
//! (`derivations/population.md`, eq. (P10)).

use crate::error::Result;
use crate::moments::population::{evaluate, Constants, Evaluation, Reduced};
use crate::scalar::Scalar;
use crate::setting::Model;
use crate::square::Square;
use crate::state::State;

/// The reduced coordinates of an explicit state, computed at the context `ctx` (the Gram
/// block is accumulated in `S`, so the MPFR path sees the exact products of the `f64`
/// inputs).
pub fn reduce<S: Scalar>(state: &State, ctx: S::Ctx) -> Reduced<S> {
    let m = state.neurons();
    let lifted: Vec<Vec<S>> = state
        .w
        .iter()
        .map(|w| w.iter().map(|&x| S::from_f64(x, ctx)).collect())
        .collect();
    let gram = Square::from_fn(m, |j, k| {
        let mut acc = S::zero(ctx);
        for (x, y) in lifted[j][2..].iter().zip(&lifted[k][2..]) {
            acc = acc + x.clone() * y.clone();
        }
        acc
    });
    Reduced {
        a: lifted.iter().map(|w| w[0].clone()).collect(),
        b: lifted.iter().map(|w| w[1].clone()).collect(),
        gram,
        e: Square::from_rows_f64(&state.e, ctx),
    }
}

/// Population loss and gradient on an explicit state, in `S`.
#[derive(Clone, Debug)]
pub struct ExplicitEvaluation<S> {
    /// The population loss.
    pub loss: S,
    /// `grad_w[j]`: the gradient with respect to `w_j`, `d` entries.
    pub grad_w: Vec<Vec<S>>,
    /// `grad_e[j][r]`: the gradient with respect to `E[j][r]` (0 where not trainable).
    pub grad_e: Vec<Vec<S>>,
}

/// Evaluates the exact population loss and gradient at an explicit state
/// (`derivations/population.md`, eqs. (P5)-(P10)).
pub fn evaluate_explicit<S: Scalar>(
    k: &Constants<S>,
    model: &Model,
    state: &State,
    ctx: S::Ctx,
) -> Result<ExplicitEvaluation<S>> {
    let x = reduce::<S>(state, ctx);
    let ev = evaluate(k, model, &x)?;
    Ok(explicit_gradient(
        ev,
        state.neurons(),
        state.dim(),
        |kk, i| S::from_f64(state.w[kk][i], ctx),
    ))
}

/// The explicit loss and gradient from the reduced evaluation `ev` of an `m x d` state whose
/// entries `w(k, i)` gives: `grad_w[j] = (dL/da_j, dL/db_j, sum_k noise_coef[j][k] w_k[2..])`
/// (`derivations/population.md`, eq. (P10)), `grad_e` as evaluated.
pub fn explicit_gradient<S: Scalar>(
    ev: Evaluation<S>,
    m: usize,
    d: usize,
    w: impl Fn(usize, usize) -> S,
) -> ExplicitEvaluation<S> {
    let ctx = ev.loss.ctx();
    let grad_w = (0..m)
        .map(|j| {
            let mut g = vec![S::zero(ctx); d];
            g[0] = ev.grad_a[j].clone();
            g[1] = ev.grad_b[j].clone();
            for (i, gi) in g.iter_mut().enumerate().skip(2) {
                let mut acc = S::zero(ctx);
                for kk in 0..m {
                    acc = acc + ev.noise_coef.at(j, kk).clone() * w(kk, i);
                }
                *gi = acc;
            }
            g
        })
        .collect();
    let grad_e = (0..m)
        .map(|j| (0..m).map(|r| ev.grad_e.at(j, r).clone()).collect())
        .collect();
    ExplicitEvaluation {
        loss: ev.loss,
        grad_w,
        grad_e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting::{HeadMode, Normalization, Setting};

    fn setting(d: u64, m: usize) -> Setting {
        Setting {
            dim: d,
            patches: 6,
            feature_patches: 2,
            alpha: [2.0, 1.2],
            noise_std: 0.8,
            neurons: m,
        }
    }

    /// Central differences of the population loss in every coordinate of W and E agree
    /// with the analytic gradient (eqs. (P7), (P10)) for every model, at m = 2 and 3.
    /// The step is h = 1e-5 and the error O(h^2) ~ 1e-10 relative; the bound 1e-6 leaves
    /// room for rounding in the loss (~1e-16 / h).
    #[test]
    fn population_gradient_matches_central_differences() {
        for m in [2usize, 3] {
            let s = setting(5, m);
            let k = Constants::<f64>::new(&s, ());
            let mut st = State::with_identity_head(
                (0..m)
                    .map(|j| {
                        (0..5)
                            .map(|i| 0.3 + 0.17 * ((i * 7 + j * 3) % 5) as f64 - 0.1 * j as f64)
                            .collect()
                    })
                    .collect(),
            );
            for j in 0..m {
                for r in 0..m {
                    if j != r {
                        st.e[j][r] = 0.05 * (j as f64 + 1.0) - 0.03 * r as f64;
                    }
                }
            }
            for head in HeadMode::ALL {
                for normalization in Normalization::ALL {
                    for stop_gradient in [true, false] {
                        let model = Model {
                            head,
                            normalization,
                            stop_gradient,
                        };
                        let ev = evaluate_explicit::<f64>(&k, &model, &st, ()).unwrap();
                        // The stop-gradient gradient is the derivative of the two-copy
                        // loss in the online copy (eq. (P7)); it is checked in
                        // tests/population_fd.rs. Here the full gradient against the
                        // one-copy loss.
                        if stop_gradient {
                            continue;
                        }
                        let h = 1e-5;
                        let loss =
                            |st: &State| evaluate_explicit::<f64>(&k, &model, st, ()).unwrap().loss;
                        for j in 0..m {
                            for i in 0..5 {
                                let mut p = st.clone();
                                p.w[j][i] += h;
                                let mut q = st.clone();
                                q.w[j][i] -= h;
                                let fd = (loss(&p) - loss(&q)) / (2.0 * h);
                                let an = ev.grad_w[j][i];
                                assert!(
                                    (fd - an).abs() <= 1e-6 * (1.0 + an.abs()),
                                    "{model:?} w[{j}][{i}] fd {fd} an {an}"
                                );
                            }
                            for r in 0..m {
                                let mut p = st.clone();
                                p.e[j][r] += h;
                                let mut q = st.clone();
                                q.e[j][r] -= h;
                                let fd = (loss(&p) - loss(&q)) / (2.0 * h);
                                let an = ev.grad_e[j][r];
                                let want = if head.trainable(j, r) { fd } else { 0.0 };
                                assert!(
                                    (want - an).abs() <= 1e-6 * (1.0 + an.abs()),
                                    "{model:?} e[{j}][{r}] fd {fd} an {an}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
