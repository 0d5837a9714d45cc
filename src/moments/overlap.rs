//! Moments of the overlap `K = |S ∩ A|` between the feature set `S` (`|S| = P0`) and the
//! first view's patch set `A` (`|A| = P/2`), both uniform and independent: `K` is
//! hypergeometric (`derivations/overlap.md`, eq. (O1)), and `K' = |S \ A| = P0 - K` has
//! the same law (eq. (O2)).

use crate::setting::Setting;
use rug::{Integer, Rational};

/// The exact moments of the overlap that the population formulas use.
#[derive(Clone, Debug, PartialEq)]
pub struct OverlapMoments {
    /// `P(K = k)` for `k = 0..=P0`, exact (eq. (O1)).
    pub pmf: Vec<Rational>,
    /// `E[K]` (eq. (O3)).
    pub mean: Rational,
    /// `E[K^2]` (eq. (O4)).
    pub second: Rational,
    /// `E[K K']`, `K' = P0 - K` (eq. (O5)).
    pub cross: Rational,
    /// `n = P/2 - E[K]`: the expected number of noise patches in one view (eq. (O6)).
    pub noise_patches: Rational,
}

impl OverlapMoments {
    /// Computes the moments by exact summation over the pmf
    /// (`derivations/overlap.md`, eqs. (O1)-(O6)).
    pub fn new(setting: &Setting) -> Self {
        let p = setting.patches as u32;
        let p0 = setting.feature_patches as u32;
        let h = p / 2;
        let total = Integer::from(Integer::binomial_u(p, h));
        let pmf: Vec<Rational> = (0..=p0)
            .map(|k| {
                if k > h || h - k > p - p0 {
                    return Rational::new();
                }
                let ways = Integer::from(Integer::binomial_u(p0, k))
                    * Integer::from(Integer::binomial_u(p - p0, h - k));
                Rational::from((ways, total.clone()))
            })
            .collect();
        let mut mean = Rational::new();
        let mut second = Rational::new();
        for (k, q) in pmf.iter().enumerate() {
            let k = Rational::from(k as u64);
            mean += q.clone() * &k;
            second += q.clone() * k.clone() * k;
        }
        let cross = Rational::from(p0) * &mean - &second;
        let noise_patches = Rational::from(h) - &mean;
        OverlapMoments {
            pmf,
            mean,
            second,
            cross,
            noise_patches,
        }
    }

    /// `E[K]` and `E[K^2]` in closed form (eqs. (O3), (O4)): `E[K] = P0/2` and
    /// `Var K = (P/2) (P0/P) (1 - P0/P) (P/2) / (P - 1)`; used to cross-check the sum.
    pub fn closed_form(setting: &Setting) -> (Rational, Rational) {
        let p = Rational::from(setting.patches as u64);
        let p0 = Rational::from(setting.feature_patches as u64);
        let h = Rational::from((setting.patches / 2) as u64);
        let mean = h.clone() * &p0 / &p;
        let var = if setting.patches > 1 {
            h.clone() * &p0 / &p * (Rational::from(1) - p0.clone() / &p) * (p.clone() - &h)
                / (p.clone() - Rational::from(1))
        } else {
            Rational::new()
        };
        let second = var + mean.clone() * &mean;
        (mean, second)
    }

    /// The footnote-3 optimum per neuron, `OPT = 2 - 2 E[K K'] / E[K^2]`
    /// (`derivations/population.md`, eq. (P12)), exact.
    pub fn opt_per_neuron(&self) -> Rational {
        Rational::from(2) - Rational::from(2) * &self.cross / &self.second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(p: usize, p0: usize) -> Setting {
        Setting {
            dim: 6,
            patches: p,
            feature_patches: p0,
            alpha: [4.0, 1.0],
            noise_std: 1.0,
            neurons: 2,
        }
    }

    #[test]
    fn pmf_sums_to_one_and_matches_closed_form() {
        for (p, p0) in [
            (2, 1),
            (2, 2),
            (4, 2),
            (4, 4),
            (6, 1),
            (10, 3),
            (16, 16),
            (40, 7),
        ] {
            let s = setting(p, p0);
            let o = OverlapMoments::new(&s);
            let total: Rational = o.pmf.iter().cloned().sum();
            assert_eq!(total, 1, "P={p} P0={p0}");
            let (mean, second) = OverlapMoments::closed_form(&s);
            assert_eq!(o.mean, mean, "P={p} P0={p0}");
            assert_eq!(o.second, second, "P={p} P0={p0}");
            // (O5): E[KK'] = P0 (P0 - 1) P / (4 (P - 1)); (O6): n = (P - P0) / 2.
            let cross = Rational::from((p0 * (p0 - 1) * p, 4 * (p - 1)));
            assert_eq!(o.cross, cross, "P={p} P0={p0}");
            assert_eq!(
                o.noise_patches,
                Rational::from((p - p0, 2)),
                "P={p} P0={p0}"
            );
        }
    }

    #[test]
    fn small_case_by_hand() {
        // P = 4, P0 = 2: P(K=0,1,2) = 1/6, 4/6, 1/6; E[K^2] = 4/3, E[KK'] = 2/3, OPT = 1.
        let o = OverlapMoments::new(&setting(4, 2));
        assert_eq!(
            o.pmf,
            vec![
                Rational::from((1, 6)),
                Rational::from((2, 3)),
                Rational::from((1, 6))
            ]
        );
        assert_eq!(o.second, Rational::from((4, 3)));
        assert_eq!(o.cross, Rational::from((2, 3)));
        assert_eq!(o.noise_patches, Rational::from(1));
        assert_eq!(o.opt_per_neuron(), Rational::from(1));
    }
}
