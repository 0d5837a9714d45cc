//! The paper's initialization (Section 3.2): `W(0)` entries i.i.d. `N(0, 1/d)`, `E(0) = I`,
//! drawn explicitly or directly in reduced coordinates (`derivations/numerics.md`,
//! Section "Initialization").
//!
//! - [`explicit`]: the `d x m` matrix itself; neuron `j` reads its `d` normals in order from
//!   `data::stream_rng(Domain::InitExplicit, seed, 0, j)` (coordinate 0 is `a_j`, 1 is `b_j`,
//!   `2..d` the noise part). Needs `d` in memory.
//! - [`reduced`]: the exact law of the reduced coordinates of the same initialization, for
//!   any `d` up to `10^12` in `O(m^2)` work: `a_j, b_j ~ N(0, 1/d)` independent, and the
//!   Gram block `G = U^T U` of the noise parts, `U` a `(d-2) x m` matrix of `N(0, 1/d)`
//!   entries, which is Wishart `W_m(d-2, I/d)`, drawn by the Bartlett decomposition
//!   (eq. (I1)); the singular case `d - 2 < m` is included (eq. (I2)).

use crate::data::{stream_rng, Domain};
use crate::error::{Error, Result};
use crate::moments::population::Reduced;
use crate::setting::Setting;
use crate::square::Square;
use crate::state::State;
use rand::distr::Distribution;
use rand_distr::StandardNormal;
use statrs::distribution::ChiSquared;

/// The explicit initialization `W(0)` with entries `N(0, 1/d)` and `E(0) = I`, keyed by
/// `seed` (neuron `j` on stream `j` of `Domain::InitExplicit`).
pub fn explicit(setting: &Setting, seed: u64) -> Result<State> {
    let d = usize::try_from(setting.dim)
        .ok()
        .filter(|&d| d <= 1 << 28)
        .ok_or_else(|| {
            Error::invalid(
                "setting.dim",
                format!(
                    "{} is too large for an explicit initialization (use the reduced one)",
                    setting.dim
                ),
            )
        })?;
    let entries = (setting.neurons as u128).saturating_mul(d as u128);
    if entries > crate::input::MAX_ENTRIES {
        return Err(Error::invalid(
            "setting.neurons",
            format!(
                "{} neurons at dim {} need {entries} weights, more than {} (2 GiB)",
                setting.neurons,
                setting.dim,
                crate::input::MAX_ENTRIES
            ),
        ));
    }
    let scale = 1.0 / (setting.dim as f64).sqrt();
    let w = (0..setting.neurons)
        .map(|j| {
            let mut rng = stream_rng(Domain::InitExplicit, seed, 0, j as u64);
            (0..d)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    scale * z
                })
                .collect()
        })
        .collect();
    Ok(State::with_identity_head(w))
}

/// The lower-trapezoidal Bartlett factor `L` (`m x r`, `r = min(k, m)`) of a Wishart
/// `W_m(k, I)` draw, `G = L L^T` (`derivations/numerics.md`, eqs. (I1)-(I2)):
/// `L_jj = sqrt(chi^2_{k - j})` (0-based `j < r`), `L_ij ~ N(0, 1)` for `i > j`, independent.
/// Draw order: column by column, the diagonal entry first, then the entries below it.
pub fn bartlett_factor<R: rand::Rng + ?Sized>(
    rng: &mut R,
    m: usize,
    dof: u64,
) -> Result<Vec<Vec<f64>>> {
    let r = m.min(usize::try_from(dof).unwrap_or(usize::MAX));
    let mut l = vec![vec![0.0; r]; m];
    for j in 0..r {
        let chi2 = ChiSquared::new((dof - j as u64) as f64)
            .map_err(|e| Error::numerical("Bartlett chi-square", e.to_string()))?;
        l[j][j] = chi2.sample(rng).sqrt();
        for row in l.iter_mut().skip(j + 1) {
            row[j] = StandardNormal.sample(rng);
        }
    }
    Ok(l)
}

/// The exact reduced initialization keyed by `seed` (stream 0 of `Domain::InitReduced`):
/// `a_j, b_j ~ N(0, 1/d)` (drawn `a_0..a_{m-1}`, then `b_0..b_{m-1}`), `G = L L^T / d` with
/// `L` the Bartlett factor of `W_m(d - 2, I)` ([`bartlett_factor`]), `E = I`.
///
/// It has the law of `reduce(explicit(setting, seed'))` (checked by the Kolmogorov-Smirnov
/// tests of `tests/init.rs`), but not the same draws.
pub fn reduced(setting: &Setting, seed: u64) -> Result<Reduced<f64>> {
    let m = setting.neurons;
    crate::flow::integrate::check_neurons(m)?;
    let d = setting.dim as f64;
    let scale = 1.0 / d.sqrt();
    let mut rng = stream_rng(Domain::InitReduced, seed, 0, 0);
    let mut normal = || -> f64 {
        let z: f64 = StandardNormal.sample(&mut rng);
        scale * z
    };
    let a: Vec<f64> = (0..m).map(|_| normal()).collect();
    let b: Vec<f64> = (0..m).map(|_| normal()).collect();
    let l = bartlett_factor(&mut rng, m, setting.dim - 2)?;
    let gram = Square::from_fn(m, |i, j| {
        l[i].iter().zip(&l[j]).map(|(x, y)| x * y).sum::<f64>() / d
    });
    Ok(Reduced {
        a,
        b,
        gram,
        e: Square::identity(m, ()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(d: u64, m: usize) -> Setting {
        Setting {
            dim: d,
            patches: 4,
            feature_patches: 2,
            alpha: [2.0, 1.0],
            noise_std: 1.0,
            neurons: m,
        }
    }

    #[test]
    fn reduced_init_is_deterministic_symmetric_and_has_rank_min_d_minus_2_m() {
        let x = reduced(&setting(3, 3), 7).unwrap();
        assert_eq!(x, reduced(&setting(3, 3), 7).unwrap());
        // d - 2 = 1 < m = 3: G = l l^T / d has rank 1, so every 2x2 minor vanishes.
        let g = &x.gram;
        let minor = g.at(0, 0) * g.at(1, 1) - g.at(0, 1) * g.at(1, 0);
        assert!(minor.abs() <= 1e-15 * g.at(0, 0) * g.at(1, 1));
        assert_eq!(g.at(0, 1), g.at(1, 0));
        // d = 1e12: G ~ I to within a few / sqrt(d).
        let x = reduced(&setting(1_000_000_000_000, 2), 1).unwrap();
        assert!((x.gram.at(0, 0) - 1.0).abs() < 1e-5 && x.gram.at(0, 1).abs() < 1e-5);
        assert!(x.a[0].abs() < 1e-5);
    }

    #[test]
    fn explicit_init_has_identity_head_and_is_keyed_by_seed() {
        let s = explicit(&setting(10, 2), 3).unwrap();
        assert_eq!(s.e, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(s.w.len(), 2);
        assert_eq!(s.w[0].len(), 10);
        assert_ne!(s.w, explicit(&setting(10, 2), 4).unwrap().w);
        assert_eq!(s.w, explicit(&setting(10, 2), 3).unwrap().w);
    }
}
