//! The spectrum of the flow's Jacobian at a state: the measurement behind the choice of
//! integrator (`derivations/numerics.md`, Section "Stiffness").

use crate::error::{Error, Result};
use crate::flow::problem::Problem;
use crate::flow::rosenbrock::jacobian;

/// The eigenvalues `(re, im)` of the central-difference Jacobian of the right-hand side at
/// `y`, sorted by real part (most negative first). `scale` is each component's natural
/// size (the difference step is `eps^(1/3) max(|y_j|, scale)`).
pub fn spectrum(problem: &Problem<f64>, y: &[f64], scale: f64) -> Result<Vec<(f64, f64)>> {
    let sc = move |_: usize| scale;
    let n = y.len();
    let mut f = |v: &[f64], dv: &mut [f64]| {
        dv.copy_from_slice(&problem.rhs(v)?);
        Ok(())
    };
    let f0 = problem.rhs(y)?;
    // Central differences: average the forward Jacobians of steps +delta and -delta.
    let jp = jacobian(&mut f, y, &f0, &f64::EPSILON.cbrt(), &sc)?;
    let neg: Vec<f64> = y.to_vec();
    let mut fneg = |v: &[f64], dv: &mut [f64]| {
        // f at the point reflected through y: y - (v - y).
        let w: Vec<f64> = v.iter().zip(&neg).map(|(a, b)| 2.0 * b - a).collect();
        for (d, r) in dv.iter_mut().zip(problem.rhs(&w)?) {
            *d = -r;
        }
        Ok(())
    };
    let f0n: Vec<f64> = f0.iter().map(|x| -x).collect();
    let jm = jacobian(&mut fneg, y, &f0n, &f64::EPSILON.cbrt(), &sc)?;
    let mat = faer::Mat::<f64>::from_fn(n, n, |i, j| 0.5 * (jp[i * n + j] + jm[i * n + j]));
    let ev = mat
        .eigenvalues()
        .map_err(|e| Error::numerical("Jacobian eigenvalues", format!("{e:?}")))?;
    let mut out: Vec<(f64, f64)> = ev.iter().map(|z| (z.re, z.im)).collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(out)
}
