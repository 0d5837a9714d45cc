//! The frozen-head race (`derivations/frozen_head.md`, (C1)-(C5)): with `E = I` frozen, each
//! neuron's `I_j = alpha1^-6 a_j^-4 - alpha2^-6 b_j^-4` is conserved by the population flow,
//! its sign at `tau = 0` decides which feature the neuron learns, and under the paper's
//! initialization the probability of `v1` is `(2/pi) arctan((alpha1/alpha2)^(3/2))`.
//!
//! # Examples
//!
//! ```
//! use predhead::moments::race::{collapse_probabilities, invariant, p_v1};
//!
//! // With alpha1 = 2 alpha2 a neuron learns v1 with probability 0.78365.
//! let p = p_v1([2.0, 1.0]);
//! assert!((p - 0.7836531).abs() < 1e-7);
//! // Four neurons all learn v1 with probability p^4.
//! let c = collapse_probabilities([2.0, 1.0], 4);
//! assert!((c.v1 - p.powi(4)).abs() < 1e-15);
//! // a(0) = 0.1, b(0) = 0.1: v1 wins (I < 0).
//! assert!(invariant([2.0, 1.0], 0.1, 0.1) < 0.0);
//! ```

use std::f64::consts::FRAC_2_PI;

/// The conserved quantity (C2), `alpha1^-6 a^-4 - alpha2^-6 b^-4`, of one neuron
/// (`derivations/frozen_head.md`, eq. (C2)). Negative: the neuron learns `v1` (C3).
pub fn invariant(alpha: [f64; 2], a: f64, b: f64) -> f64 {
    alpha[0].powi(-6) * a.powi(-4) - alpha[1].powi(-6) * b.powi(-4)
}

/// The probability (C4) that a neuron of the frozen-head, batch-normalized flow learns `v1`
/// from the paper's initialization: `(2/pi) arctan((alpha1/alpha2)^(3/2))`
/// (`derivations/frozen_head.md`, eq. (C4)).
pub fn p_v1(alpha: [f64; 2]) -> f64 {
    FRAC_2_PI * (alpha[0] / alpha[1]).powf(1.5).atan()
}

/// The probabilities (C4) of the end states of `m` frozen-head neurons.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CollapseProbabilities {
    /// Every neuron learns `v1`: `p^m`.
    pub v1: f64,
    /// Every neuron learns `v2`: `(1 - p)^m`.
    pub v2: f64,
    /// Both features are learned by some neurons: `1 - p^m - (1 - p)^m`.
    pub both: f64,
}

/// The probabilities of collapse onto `v1`, onto `v2`, and of both features, for `m`
/// independent frozen-head neurons (`derivations/frozen_head.md`, eq. (C4)).
pub fn collapse_probabilities(alpha: [f64; 2], m: usize) -> CollapseProbabilities {
    let p = p_v1(alpha);
    // (1 - p) in the form without cancellation: (2/pi) arctan((alpha2/alpha1)^(3/2)).
    let q = FRAC_2_PI * (alpha[1] / alpha[0]).powf(1.5).atan();
    let m = i32::try_from(m).unwrap_or(i32::MAX);
    let (v1, v2) = (p.powi(m), q.powi(m));
    CollapseProbabilities {
        v1,
        v2,
        both: 1.0 - v1 - v2,
    }
}
