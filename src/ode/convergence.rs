//! Fixed-step convergence checks shared by the steppers' unit tests (compiled for tests
//! only): a smooth test problem with a known solution, and the errors of a fixed-step run
//! at the step ends and on the dense output.

use crate::ode::dense::Dense;

/// `y0' = -y0^2` (exact `1/(1+t)`), `(y1, y2)' = (-y2, y1)` (exact `cos t, sin t`).
pub fn f(y: &[f64], dy: &mut [f64]) -> crate::error::Result<()> {
    dy.copy_from_slice(&[-y[0] * y[0], -y[2], y[1]]);
    Ok(())
}

/// The exact solution of [`f`] from `(1, 1, 0)`.
pub fn exact(t: f64) -> Vec<f64> {
    vec![1.0 / (1.0 + t), t.cos(), t.sin()]
}

/// One fixed step `(y0, f0, h) -> (y1, dense output)`.
pub type Step<'a> = dyn FnMut(&[f64], &[f64], f64) -> (Vec<f64>, Dense<f64>) + 'a;

/// `n` fixed steps of `step` over `[0, t_end]`: the max-norm
/// error at `t_end`, and the largest error of the dense output at the fractions `thetas`
/// of every step.
pub fn errors(step: &mut Step<'_>, n: usize, t_end: f64, thetas: &[f64]) -> (f64, f64) {
    let h = t_end / n as f64;
    let mut y = exact(0.0);
    let mut dense_err: f64 = 0.0;
    for i in 0..n {
        let mut f0 = vec![0.0; 3];
        f(&y, &mut f0).expect("test problem");
        let (y1, dense) = step(&y, &f0, h);
        for &theta in thetas {
            let got = dense.eval(theta * h);
            for (u, v) in got.iter().zip(exact((i as f64 + theta) * h)) {
                dense_err = dense_err.max((u - v).abs());
            }
        }
        y = y1;
    }
    let err = y
        .iter()
        .zip(exact(t_end))
        .map(|(u, v)| (u - v).abs())
        .fold(0.0, f64::max);
    (err, dense_err)
}
