//! Spectral-radius estimates of a Jacobian (row-major `n x n`, any [`Scalar`], computed
//! in `f64`): the power iteration of a stiffness switch ([`spectral_radius`],
//! [`spectral_radius_capped`]) and a cheap bound that can rule stiffness out before it
//! ([`spectral_norm_bound`]); `derivations/numerics.md`, "Stiffness".

use crate::scalar::Scalar;

/// An estimate of the spectral radius of the row-major `n x n` matrix `jac` from the growth
/// of 24 power iterations (the geometric mean growth over the last 16, which also works for
/// a dominant complex pair), in `f64`.
///
/// # Examples
///
/// ```
/// use predhead::ode::spectral::{spectral_norm_bound, spectral_radius};
///
/// // Eigenvalues -1 and -1e4 (upper triangular).
/// let j = [-1.0, 5.0, 0.0, -1e4];
/// let rho = spectral_radius(&j);
/// assert!((rho / 1e4 - 1.0).abs() < 1e-6);
/// assert!(rho <= spectral_norm_bound(&j));
/// ```
pub fn spectral_radius<S: Scalar>(jac: &[S]) -> f64 {
    spectral_radius_capped(jac, f64::INFINITY)
}

/// [`spectral_radius`], returning early (after at least 8 power iterations and one growth
/// factor) with the running estimate as soon as it exceeds `cap`: the stiffness switch only
/// compares `h rho` with 1 and 3, and in the stiff phase `h rho` is `1e3 .. 1e16`.
pub fn spectral_radius_capped<S: Scalar>(jac: &[S], cap: f64) -> f64 {
    let n = (jac.len() as f64).sqrt().round() as usize;
    let converted: Vec<f64>;
    let j: &[f64] = match S::f64_slice(jac) {
        Some(j) => j,
        None => {
            converted = jac.iter().map(Scalar::to_f64).collect();
            &converted
        }
    };
    // With `n` a compile-time constant for the flow's state lengths (`n <= 16`, vectors on
    // the stack, loops unrolled); the same operations in the same order for any `n`.
    macro_rules! sized {
        ($($n:literal)*) => {
            match n {
                $($n => return power_iteration(j, $n, &mut [0.0; $n], &mut [0.0; $n], cap),)*
                _ => {}
            }
        };
    }
    sized!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
    power_iteration(j, n, &mut vec![0.0; n], &mut vec![0.0; n], cap)
}

/// The power iteration of [`spectral_radius_capped`] on the row-major `n x n` matrix `j`,
/// with work vectors `v`, `w` of length `n`.
#[inline(always)]
fn power_iteration(j: &[f64], n: usize, v: &mut [f64], w: &mut [f64], cap: f64) -> f64 {
    for (i, vi) in v.iter_mut().enumerate() {
        *vi = 1.0 + 0.1 * i as f64;
    }
    // The product of the growth factors from iteration 8 on, its logarithm taken when it
    // leaves [1e-150, 1e150] and at the end (one `ln` instead of 16).
    let (mut log_growth, mut growth) = (0.0, 1.0f64);
    for it in 0..24 {
        for (wr, row) in w.iter_mut().zip(j.chunks_exact(n)) {
            *wr = (0..n).map(|c| row[c] * v[c]).sum();
        }
        let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nw = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !(nw > 0.0 && nw.is_finite()) {
            return if nw == 0.0 { 0.0 } else { f64::INFINITY };
        }
        if it >= 8 {
            growth *= nw / nv;
            if !(1e-150..=1e150).contains(&growth) {
                log_growth += growth.ln();
                growth = 1.0;
            }
            if cap.is_finite() {
                let estimate = ((log_growth + growth.ln()) / (it - 7) as f64).exp();
                if estimate > cap {
                    return estimate;
                }
            }
        }
        for (vi, wi) in v.iter_mut().zip(w.iter()) {
            *vi = wi / nw;
        }
    }
    ((log_growth + growth.ln()) / 16.0).exp()
}

/// `sqrt(||J||_1 ||J||_inf)` of the row-major `n x n` matrix `jac`: a bound on `||J||_2`,
/// hence on every growth factor `||J v|| / ||v||` of [`spectral_radius`] and on its estimate
/// (NaN or infinite when an entry is). The stiffness switch skips the power iteration when
/// this bound already rules stiffness out.
pub fn spectral_norm_bound<S: Scalar>(jac: &[S]) -> f64 {
    // `f64::max` would drop a NaN; this keeps it. Called once per stiffness check, so the
    // column sums may live on the heap.
    let max_keep_nan = |m: f64, v: f64| if v > m || v.is_nan() { v } else { m };
    let n = (jac.len() as f64).sqrt().round() as usize;
    let mut cols = vec![0.0; n];
    let mut row_max = 0.0f64;
    for row in jac.chunks_exact(n.max(1)) {
        let mut sum = 0.0;
        for (c, v) in cols.iter_mut().zip(row) {
            let a = v.to_f64().abs();
            sum += a;
            *c += a;
        }
        row_max = max_keep_nan(row_max, sum);
    }
    let col_max = cols.iter().fold(0.0f64, |m, &c| max_keep_nan(m, c));
    (row_max * col_max).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Row-major `n x n` test matrices (seeded): dense normal entries, and the same with a
    /// strongly non-normal upper triangle (entries up to 1e6 beside eigenvalues O(1)).
    fn matrices(n: usize) -> Vec<Vec<f64>> {
        let mut rng = ChaCha8Rng::seed_from_u64(41);
        let mut out = Vec::new();
        for _ in 0..20 {
            let dense: Vec<f64> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let skew: Vec<f64> = (0..n * n)
                .map(|i| {
                    let (r, c) = (i / n, i % n);
                    let v: f64 = rng.random_range(-1.0..1.0);
                    if c > r {
                        v * 1e6
                    } else if c == r {
                        v
                    } else {
                        0.0
                    }
                })
                .collect();
            out.push(dense);
            out.push(skew);
        }
        out
    }

    /// The fixed-size power iteration (`n <= 16`) gives the generic one's result bit for
    /// bit, capped or not.
    #[test]
    fn sized_power_iteration_is_bit_identical_to_the_generic_one() {
        for n in [2, 7, 9, 11, 16] {
            for j in matrices(n) {
                for cap in [f64::INFINITY, 0.5, 3.0] {
                    let generic = power_iteration(&j, n, &mut vec![0.0; n], &mut vec![0.0; n], cap);
                    assert_eq!(spectral_radius_capped(&j, cap).to_bits(), generic.to_bits());
                }
            }
        }
    }

    /// `sqrt(||J||_1 ||J||_inf)` bounds the power-iteration estimate and every eigenvalue
    /// (faer's), and is NaN or infinite when an entry is: the stiffness switch may skip the
    /// power iteration when `h` times the bound is at most 3.
    #[test]
    fn norm_bound_dominates_the_spectral_radius_and_its_estimate() {
        for n in [2, 9, 20] {
            for j in matrices(n) {
                let bound = spectral_norm_bound(&j);
                let estimate = spectral_radius(&j);
                let m = faer::Mat::<f64>::from_fn(n, n, |r, c| j[r * n + c]);
                let rho = m
                    .eigenvalues()
                    .expect("eigenvalues")
                    .iter()
                    .map(|z| z.norm())
                    .fold(0.0, f64::max);
                assert!(estimate <= bound * (1.0 + 1e-12), "{estimate} > {bound}");
                assert!(rho <= bound * (1.0 + 1e-12), "{rho} > {bound}");
            }
        }
        let mut j = vec![1.0; 81];
        j[40] = f64::NAN;
        assert!(spectral_norm_bound(&j).is_nan());
        j[40] = f64::INFINITY;
        assert_eq!(spectral_norm_bound(&j), f64::INFINITY);
    }
}
