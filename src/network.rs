//! The batch network: encoder, prediction head, batch normalization, the batch loss (3.3)
//! and its analytic gradient (`derivations/network.md`).
//!
//! For a [`Batch`] of `N` augmented samples and a [`State`] `(W, E)`:
//!
//! - encoder (B1): `f_r(X) = sum_p <w_r, X_p>^3`;
//! - head (B2): `F_j(X) = sum_r E[j][r] f_r(X)`;
//! - normalization (B3), eq. (3.1) of the paper without epsilon, per output over the batch:
//!   `Norm(z)_i = (z_i - mean(z)) / sqrt(mean(z^2) - mean(z)^2)`, or the identity;
//! - loss (B4), eq. (3.3): `L_S = (1/N) sum_i sum_j (Ft_j(X^(i,1)) - Gt_j(X^(i,2)))^2` with
//!   `Ft_j = Norm(F_j(X^(1)))` (online) and `Gt_j = Norm(f_j(X^(2)))` (target).
//!
//! The gradient ([`batch_loss_and_gradient`]) goes through the batch statistics of the
//! online branch; with `stop_gradient = false` also through the target branch and its
//! statistics; with `stop_gradient = true` the target outputs are constants. Entries of
//! `E` that the head mode does not train get gradient 0.
//!
//! The computation is generic over [`Scalar`]: [`batch_loss_and_gradient`] is the `f64`
//! entry point, [`batch_loss_and_gradient_in`] runs the same code in MPFR (`rug::Float`) to
//! bound the `f64` rounding. It is sequential in a fixed order, so the result is
//! bit-identical whatever the thread count.
//!
//! ```
//! use predhead::batch::Batch;
//! use predhead::network::batch_loss_and_gradient;
//! use predhead::setting::{HeadMode, Model, Normalization, Setting};
//! use predhead::state::State;
//!
//! let setting = Setting { dim: 4, patches: 2, feature_patches: 1, alpha: [2.0, 1.0],
//!                         noise_std: 1.0, neurons: 2 };
//! let model = Model { head: HeadMode::IdentityOffdiag, normalization: Normalization::Batchnorm,
//!                     stop_gradient: true };
//! let (x1, x2) = predhead::data::batch_views(&setting, 7, 0, 16);
//! let batch = Batch::new(&setting, x1, x2).unwrap();
//! let state = State::with_identity_head(vec![vec![0.5, 0.1, 0.2, -0.3], vec![0.1, 0.6, -0.2, 0.4]]);
//! let ev = batch_loss_and_gradient(&setting, &model, &state, &batch).unwrap();
//! assert!(ev.loss >= 0.0);
//! assert_eq!(ev.grad_w.len(), 2);
//! assert_eq!(ev.grad_e[0][0], 0.0); // the diagonal is not trained under identity-offdiag
//! ```

pub use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::scalar::Scalar;
use crate::setting::{Model, Normalization, Setting};
use crate::state::State;

/// The batch loss (3.3) and its gradient at one state, in `S` (`f64` by default).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchEvaluation<S = f64> {
    /// `L_S`, eq. (3.3) (`derivations/network.md`, eq. (B4)).
    pub loss: S,
    /// `grad_w[j]`: `dL_S / dw_j`, `d` numbers, `m` rows (eqs. (B8)-(B9)).
    pub grad_w: Vec<Vec<S>>,
    /// `grad_e[j][r]`: `dL_S / dE[j][r]`, `m x m`, 0 where the head mode does not train
    /// (eq. (B7)).
    pub grad_e: Vec<Vec<S>>,
}

/// The encoder output `f(X) = sum_p <w, X_p>^3` of one neuron on one view `x` (patch-major
/// `P * d`, `d = w.len()`) (`derivations/network.md`, eq. (B1)). `w` must not be empty
/// (`d >= 3` in every valid setting).
pub fn encoder<S: Scalar>(w: &[S], x: &[f64]) -> S {
    let ctx = w[0].ctx();
    x.chunks(w.len())
        .fold(S::zero(ctx), |acc, xp| acc + dot(w, xp).cube())
}

/// Adds `c * df/dw = c * 3 sum_p <w, X_p>^2 X_p` to `acc` (`derivations/network.md`,
/// eq. (B8)).
pub fn add_encoder_gradient<S: Scalar>(w: &[S], x: &[f64], c: &S, acc: &mut [S]) {
    let zero = S::zero(c.ctx());
    if *c == zero {
        return;
    }
    for xp in x.chunks(w.len()) {
        let t = dot(w, xp);
        let k = c.cst(3.0) * c.clone() * t.sq();
        if k != zero {
            for (a, &xi) in acc.iter_mut().zip(xp) {
                *a = a.clone() + k.clone() * k.cst(xi);
            }
        }
    }
}

fn dot<S: Scalar>(w: &[S], x: &[f64]) -> S {
    let ctx = w[0].ctx();
    w.iter().zip(x).fold(S::zero(ctx), |acc, (a, &b)| {
        acc + a.clone() * S::from_f64(b, ctx)
    })
}

fn mean<S: Scalar>(xs: impl Iterator<Item = S>, n: usize, ctx: S::Ctx) -> S {
    xs.fold(S::zero(ctx), |a, b| a + b) / S::from_f64(n as f64, ctx)
}

/// One output column normalized over the batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalized<S = f64> {
    /// `y_i = Norm(z)_i`.
    pub y: Vec<S>,
    /// `sqrt(v)` for batch normalization (`v` the batch variance), 1 for `none`.
    pub scale: S,
}

/// `Norm` over the batch, eq. (3.1) without epsilon (`derivations/network.md`, eq. (B3)):
/// `y_i = (z_i - mu) / sqrt(v)` with `mu = mean(z)` and `v = mean((z - mu)^2)`, which equals
/// `mean(z^2) - mean(z)^2` and is computed in the centred form (no cancellation; exactly
/// zero when all `z_i` are equal). `none` is the identity. `z` must not be empty.
///
/// Errors ([`Error::Numerical`] naming `field`, the output called `output`) when a `z_i` is
/// not finite, when `v` is zero or overflows, or when `v` is so small that the normalized
/// outputs are not finite.
pub fn normalize<S: Scalar>(
    normalization: Normalization,
    z: &[S],
    field: &str,
    output: &str,
) -> Result<Normalized<S>> {
    if let Some(i) = z.iter().position(|v| !v.is_finite()) {
        return Err(Error::numerical(
            field,
            format!(
                "{output} of sample {i} is not finite ({}): overflow",
                z[i].to_f64()
            ),
        ));
    }
    let ctx = z[0].ctx();
    match normalization {
        Normalization::None => Ok(Normalized {
            y: z.to_vec(),
            scale: S::one(ctx),
        }),
        Normalization::Batchnorm => {
            let n = z.len();
            let mu = mean(z.iter().cloned(), n, ctx);
            let v = mean(z.iter().map(|x| (x.clone() - mu.clone()).sq()), n, ctx);
            if !v.is_finite() {
                return Err(Error::numerical(
                    field,
                    format!(
                        "batch-norm variance of {output} over the {n} samples overflows ({})",
                        v.to_f64()
                    ),
                ));
            }
            let scale = v.clone().sqrt();
            let y: Vec<S> = z
                .iter()
                .map(|x| (x.clone() - mu.clone()) / scale.clone())
                .collect();
            if v == S::zero(ctx) || y.iter().any(|x| !x.is_finite()) {
                return Err(Error::numerical(
                    field,
                    format!(
                        "batch-norm variance of {output} over the {n} samples is {:e}: \
                         the outputs are (numerically) all equal and eq. (3.1) has no epsilon",
                        v.to_f64()
                    ),
                ));
            }
            Ok(Normalized { y, scale })
        }
    }
}

/// The backward pass of [`normalize`] (`derivations/network.md`, eq. (B6)): given
/// `dy_i = dL/dy_i`, returns `dz_i = dL/dz_i`,
/// `dz_i = (1/sqrt(v)) (dy_i - mean(dy) - y_i mean(dy * y))` for batch normalization
/// (through the batch statistics `mu` and `v`), `dz = dy` for `none`.
pub fn normalize_backward<S: Scalar>(
    normalization: Normalization,
    out: &Normalized<S>,
    dy: &[S],
) -> Vec<S> {
    match normalization {
        Normalization::None => dy.to_vec(),
        Normalization::Batchnorm => {
            let n = dy.len();
            let ctx = out.scale.ctx();
            let mean_dy = mean(dy.iter().cloned(), n, ctx);
            let mean_dyy = mean(
                dy.iter().zip(&out.y).map(|(a, b)| a.clone() * b.clone()),
                n,
                ctx,
            );
            dy.iter()
                .zip(&out.y)
                .map(|(g, y)| {
                    (g.clone() - mean_dy.clone() - y.clone() * mean_dyy.clone()) / out.scale.clone()
                })
                .collect()
        }
    }
}

/// The forward pass with the target branch evaluated at its own weights.
struct Forward<S> {
    /// `f1[r][i] = f_r(X^(i,1))` at the online weights.
    f1: Vec<Vec<S>>,
    /// Online outputs, normalized: `online[j].y[i] = Ft_j(X^(i,1))`.
    online: Vec<Normalized<S>>,
    /// Target outputs, normalized: `target[j].y[i] = Gt_j(X^(i,2))`.
    target: Vec<Normalized<S>>,
    /// `L_S`.
    loss: S,
}

/// `(W, E)` lifted to `S`.
struct Lifted<S> {
    w: Vec<Vec<S>>,
    e: Vec<Vec<S>>,
}

fn lift<S: Scalar>(rows: &[Vec<f64>], ctx: S::Ctx) -> Vec<Vec<S>> {
    rows.iter()
        .map(|r| r.iter().map(|&x| S::from_f64(x, ctx)).collect())
        .collect()
}

fn forward<S: Scalar>(
    model: &Model,
    online: &Lifted<S>,
    target_w: &[Vec<S>],
    batch: &Batch,
    ctx: S::Ctx,
) -> Result<Forward<S>> {
    let m = online.w.len();
    let n = batch.len();
    // (B1): encoder outputs on both views.
    let f1: Vec<Vec<S>> = (0..m)
        .map(|r| {
            batch
                .x1()
                .iter()
                .map(|x| encoder(&online.w[r], x))
                .collect()
        })
        .collect();
    let f2: Vec<Vec<S>> = (0..m)
        .map(|r| {
            batch
                .x2()
                .iter()
                .map(|x| encoder(&target_w[r], x))
                .collect()
        })
        .collect();
    // (B2) and (B3): head, then normalization of every output column.
    let mut online_out = Vec::with_capacity(m);
    let mut target_out = Vec::with_capacity(m);
    for j in 0..m {
        let z: Vec<S> = (0..n)
            .map(|i| {
                (0..m).fold(S::zero(ctx), |acc, r| {
                    acc + online.e[j][r].clone() * f1[r][i].clone()
                })
            })
            .collect();
        online_out.push(normalize(
            model.normalization,
            &z,
            "batch.x1",
            &format!("F_{j}"),
        )?);
        target_out.push(normalize(
            model.normalization,
            &f2[j],
            "batch.x2",
            &format!("f_{j}"),
        )?);
    }
    // (B4): the loss.
    let mut loss = S::zero(ctx);
    for j in 0..m {
        for i in 0..n {
            loss = loss + (online_out[j].y[i].clone() - target_out[j].y[i].clone()).sq();
        }
    }
    loss = loss / S::from_f64(n as f64, ctx);
    if !loss.is_finite() {
        return Err(Error::numerical(
            "batch",
            format!("the loss is not finite ({})", loss.to_f64()),
        ));
    }
    Ok(Forward {
        f1,
        online: online_out,
        target: target_out,
        loss,
    })
}

fn check_shapes(setting: &Setting, state: &State, batch: &Batch) -> Result<()> {
    let m = setting.neurons;
    let d = batch.dim();
    if u64::try_from(d).ok() != Some(setting.dim) || batch.patches() != setting.patches {
        return Err(Error::invalid(
            "batch",
            format!(
                "shape [N][{}][{}] does not match setting (patches = {}, dim = {})",
                batch.patches(),
                d,
                setting.patches,
                setting.dim
            ),
        ));
    }
    if m == 0 {
        return Err(Error::invalid(
            "setting.neurons",
            "must be at least 1, got 0",
        ));
    }
    if state.w.len() != m || state.w.iter().any(|w| w.len() != d) {
        return Err(Error::invalid(
            "state.w",
            format!("expected {m} rows (neurons) of {d} numbers (dim)"),
        ));
    }
    if state.e.len() != m || state.e.iter().any(|e| e.len() != m) {
        return Err(Error::invalid(
            "state.e",
            format!("expected {m} rows (neurons) of {m} numbers (neurons)"),
        ));
    }
    Ok(())
}

/// Batch normalization needs two samples: with one, every batch variance is zero
/// (`../shared/contract.md`: `N = 1` is valid with `normalization = "none"` only).
fn check_samples(model: &Model, batch: &Batch) -> Result<()> {
    if model.normalization == Normalization::Batchnorm && batch.len() < 2 {
        return Err(Error::invalid(
            "batch.x1",
            format!(
                "needs at least 2 samples (N >= 2) for batch normalization, got {}",
                batch.len()
            ),
        ));
    }
    Ok(())
}

/// The batch loss `L_S` of eq. (3.3) at `state` (`derivations/network.md`, eq. (B4)).
pub fn batch_loss(setting: &Setting, model: &Model, state: &State, batch: &Batch) -> Result<f64> {
    check_shapes(setting, state, batch)?;
    check_samples(model, batch)?;
    let lifted = Lifted {
        w: state.w.clone(),
        e: state.e.clone(),
    };
    Ok(forward(model, &lifted, &state.w, batch, ())?.loss)
}

/// The batch loss with the target branch evaluated at its own weights `target_w`
/// (`derivations/network.md`, eq. (B5)): `Ft` uses `online.w` and `online.e`, `Gt` uses
/// `target_w`. At `target_w = online.w` this is [`batch_loss`]; its gradient in the online
/// state alone is the `stop_gradient = true` gradient, which is how the tests check it.
pub fn two_branch_loss(
    setting: &Setting,
    model: &Model,
    online: &State,
    target_w: &[Vec<f64>],
    batch: &Batch,
) -> Result<f64> {
    check_shapes(setting, online, batch)?;
    check_samples(model, batch)?;
    let target = State {
        w: target_w.to_vec(),
        e: online.e.clone(),
    };
    check_shapes(setting, &target, batch)?;
    let lifted = Lifted {
        w: online.w.clone(),
        e: online.e.clone(),
    };
    Ok(forward(model, &lifted, target_w, batch, ())?.loss)
}

/// The batch loss (3.3) and its analytic gradient with respect to `W` and `E`, in `f64`
/// (`derivations/network.md`, eqs. (B4)-(B9)).
///
/// - `grad_w[j] = dL_S/dw_j` (`m` rows of `d`): through the online branch and its batch
///   statistics; with `model.stop_gradient = false` also through the target branch and its
///   statistics.
/// - `grad_e[j][r] = dL_S/dE[j][r]`, 0 for entries `model.head` does not train.
///
/// Errors: shapes that do not match `setting` ([`Error::Invalid`]), an output that
/// overflows, or a batch-norm variance of zero ([`Error::Numerical`] naming `batch.x1` or
/// `batch.x2`).
pub fn batch_loss_and_gradient(
    setting: &Setting,
    model: &Model,
    state: &State,
    batch: &Batch,
) -> Result<BatchEvaluation> {
    batch_loss_and_gradient_in::<f64>(setting, model, state, batch, ())
}

/// [`batch_loss_and_gradient`] in any [`Scalar`]: the state and the batch are lifted
/// exactly to the context `ctx` (e.g. `rug::Float` at `ctx` bits) and every operation is
/// done there, so that the `f64` result can be compared with a high-precision one.
pub fn batch_loss_and_gradient_in<S: Scalar>(
    setting: &Setting,
    model: &Model,
    state: &State,
    batch: &Batch,
    ctx: S::Ctx,
) -> Result<BatchEvaluation<S>> {
    check_shapes(setting, state, batch)?;
    check_samples(model, batch)?;
    let lifted = Lifted {
        w: lift::<S>(&state.w, ctx),
        e: lift::<S>(&state.e, ctx),
    };
    let fw = forward(model, &lifted, &lifted.w, batch, ctx)?;
    let m = state.neurons();
    let d = batch.dim();
    let n = batch.len();
    let zero = S::zero(ctx);
    let scale = S::from_f64(2.0, ctx) / S::from_f64(n as f64, ctx);

    let mut grad_w = vec![vec![zero.clone(); d]; m];
    let mut grad_e = vec![vec![zero.clone(); m]; m];
    // dL/dF_j(X^(i,1)) through the online normalization, (B6).
    let dz: Vec<Vec<S>> = (0..m)
        .map(|j| {
            let dy: Vec<S> = (0..n)
                .map(|i| scale.clone() * (fw.online[j].y[i].clone() - fw.target[j].y[i].clone()))
                .collect();
            normalize_backward(model.normalization, &fw.online[j], &dy)
        })
        .collect();
    // (B7): the head.
    for j in 0..m {
        for r in 0..m {
            if model.head.trainable(j, r) {
                grad_e[j][r] = dz[j]
                    .iter()
                    .zip(&fw.f1[r])
                    .fold(zero.clone(), |acc, (a, b)| acc + a.clone() * b.clone());
            }
        }
    }
    // (B8): online branch, dL/df_r(X^(i,1)) = sum_j dz[j][i] E[j][r].
    for r in 0..m {
        for (i, x) in batch.x1().iter().enumerate() {
            let c = (0..m).fold(zero.clone(), |acc, j| {
                acc + dz[j][i].clone() * lifted.e[j][r].clone()
            });
            add_encoder_gradient(&lifted.w[r], x, &c, &mut grad_w[r]);
        }
    }
    // (B9): target branch, only without stop-gradient.
    if !model.stop_gradient {
        for r in 0..m {
            let dy: Vec<S> = (0..n)
                .map(|i| -(scale.clone() * (fw.online[r].y[i].clone() - fw.target[r].y[i].clone())))
                .collect();
            let dt = normalize_backward(model.normalization, &fw.target[r], &dy);
            for (i, x) in batch.x2().iter().enumerate() {
                add_encoder_gradient(&lifted.w[r], x, &dt[i], &mut grad_w[r]);
            }
        }
    }
    if grad_w
        .iter()
        .chain(&grad_e)
        .flatten()
        .any(|g| !g.is_finite())
    {
        return Err(Error::numerical(
            "batch",
            "the gradient is not finite (overflow)",
        ));
    }
    Ok(BatchEvaluation {
        loss: fw.loss,
        grad_w,
        grad_e,
    })
}
