//! Error norms and step-size control shared by the integrators
//! (`derivations/numerics.md`, Section "Error control").

use crate::scalar::Scalar;

/// Mixed absolute/relative tolerance: component `i` of a local error estimate is measured
/// against `atol_i + rtol * max(|y0_i|, |y1_i|)`, with `atol_i = atol_head` for the head's
/// entries (components `head_from..`), `atol_i = atol_corr` for the noise correlations
/// `r_jk` (components `corr_from..head_from`, decay coordinates), and
/// `atol_i = atol` for the other coordinates (`a`, `b`, the Gram
/// block's diagonal) (`derivations/numerics.md`, "Error control").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance of the encoder's coordinates.
    pub atol: f64,
    /// Absolute tolerance of the noise correlations `r_jk` (bounded by 1).
    pub atol_corr: f64,
    /// Absolute tolerance of the head's entries.
    pub atol_head: f64,
    /// Index of the first noise correlation in the state vector (`usize::MAX`: none).
    pub corr_from: usize,
    /// Index of the first head entry in the state vector (`usize::MAX`: none).
    pub head_from: usize,
}

impl Tolerance {
    /// The same absolute tolerance for every component.
    pub fn uniform(rtol: f64, atol: f64) -> Self {
        Tolerance {
            rtol,
            atol,
            atol_corr: atol,
            atol_head: atol,
            corr_from: usize::MAX,
            head_from: usize::MAX,
        }
    }

    /// Every tolerance multiplied by `factor`.
    pub fn scaled(&self, factor: f64) -> Self {
        Tolerance {
            rtol: self.rtol * factor,
            atol: self.atol * factor,
            atol_corr: self.atol_corr * factor,
            atol_head: self.atol_head * factor,
            ..*self
        }
    }

    /// The error scale `atol_i + rtol y` of component `i` at the magnitude `y` (the
    /// larger of `|y0_i|` and `|y1_i|` in a step's error norm).
    pub fn scale_at(&self, i: usize, y: f64) -> f64 {
        self.atol_at(i) + self.rtol * y
    }

    /// The absolute tolerance of component `i`.
    pub fn atol_at(&self, i: usize) -> f64 {
        if i >= self.head_from {
            self.atol_head
        } else if i >= self.corr_from {
            self.atol_corr
        } else {
            self.atol
        }
    }
}

/// The root-mean-square scaled error `sqrt(mean_i (err_i / sc_i)^2)`,
/// `sc_i = atol + rtol max(|y0_i|, |y1_i|)` (Hairer, Norsett and Wanner, Vol. I, II.4).
/// A step is accepted when it is at most 1.
pub fn error_norm<S: Scalar>(err: &[S], y0: &[S], y1: &[S], tol: Tolerance) -> f64 {
    let mut acc = 0.0;
    for (i, ((e, a), b)) in err.iter().zip(y0).zip(y1).enumerate() {
        let sc = tol.scale_at(i, a.to_f64().abs().max(b.to_f64().abs()));
        let r = e.to_f64() / sc;
        acc += r * r;
    }
    (acc / err.len() as f64).sqrt()
}

/// The scaled RMS norm of a vector (for the initial step guess).
pub fn scaled_norm<S: Scalar>(v: &[S], y: &[S], tol: Tolerance) -> f64 {
    let mut acc = 0.0;
    for (i, (x, yy)) in v.iter().zip(y).enumerate() {
        let sc = tol.scale_at(i, yy.to_f64().abs());
        let r = x.to_f64() / sc;
        acc += r * r;
    }
    (acc / v.len() as f64).sqrt()
}

/// The first step size of a run from `y` with `f = f(y)`: one hundredth of the time in which
/// the state changes by its own size in the scaled norm, `h = 0.01 max(||y||, 1) / ||f||`
/// (both norms scaled by `atol_i + rtol |y_i|`), at most `horizon` (`horizon` when `f`
/// vanishes). The flow's time scale at the start is `d^2` (`derivations/numerics.md`,
/// "The slow initial phase"), so the step control starts there instead of climbing to it
/// from a fixed small step (about 40 steps at `d = 1e12` from `h = 1e-6`).
pub fn initial_step<S: Scalar>(y: &[S], f: &[S], tol: Tolerance, horizon: f64) -> f64 {
    let d0 = scaled_norm(y, y, tol);
    let d1 = scaled_norm(f, y, tol);
    let h = if d1 > 0.0 && d1.is_finite() {
        0.01 * d0.max(1.0) / d1
    } else {
        horizon
    };
    h.min(horizon)
}

/// The factor for the next step after an error norm `err` with a method whose error
/// estimate has order `q` (local error `O(h^(q+1))`): `0.9 err^(-1/(q+1))`, clamped to
/// `[0.2, 5]` (`[0.2, 1]` right after a rejection).
pub fn step_factor(err: f64, q: u32, after_reject: bool) -> f64 {
    let hi = if after_reject { 1.0 } else { 5.0 };
    if err == 0.0 {
        return hi;
    }
    (0.9 * err.powf(-1.0 / f64::from(q + 1))).clamp(0.2, hi)
}

/// Gustafsson's predictive step factor (Hairer and Wanner, Vol. II, IV.8, eq. (8.21), as in
/// `radau5`): after two accepted steps `(h_prev, err_prev)` and `(h, err)` of one method,
/// `0.9 (h / h_prev) (err_prev / err^2)^(1/(q+1))` (with `err_prev >= 1e-2`), clamped to
/// `[0.2, 5]`. The driver takes the smaller of it and [`step_factor`]: it extrapolates a
/// trend of shrinking steps (the approach to a blow-up, where the plain factor alternates
/// accepted and rejected steps) and never enlarges a step beyond the plain factor.
pub fn predictive_factor(err: f64, q: u32, h: f64, h_prev: f64, err_prev: f64) -> f64 {
    let err = err.max(1e-10);
    let fac = 0.9 * (h / h_prev) * (err_prev.max(1e-2) / (err * err)).powf(1.0 / f64::from(q + 1));
    if fac.is_finite() {
        fac.clamp(0.2, 5.0)
    } else {
        5.0
    }
}

/// The step-size factor after an accepted step of size `h` with error norm `err` (order
/// `q` of the estimate): the smaller of [`step_factor`] and, after two accepted steps of one
/// method, [`predictive_factor`]. `last` holds the previous accepted step and its error norm
/// (`None` after a change of method) and is set to this one's.
pub fn accepted_factor(
    err: f64,
    q: u32,
    after_reject: bool,
    h: f64,
    last: &mut Option<(f64, f64)>,
) -> f64 {
    let mut factor = step_factor(err, q, after_reject);
    if let Some((h_prev, err_prev)) = *last {
        factor = factor.min(predictive_factor(err, q, h, h_prev, err_prev));
    }
    *last = Some((h, err.max(1e-2)));
    factor
}

/// The rational `num/den` at the context `ctx` (exact integers in `f64`, one division).
pub(crate) fn rational<S: Scalar>(num: f64, den: f64, ctx: S::Ctx) -> S {
    S::from_f64(num, ctx) / S::from_f64(den, ctx)
}
