//! The outcome taxonomy (`derivations/phases.md`, (E7)): a finer label than the contract's
//! `outcome` (E5), which lumps collapse onto `v1` with collapse onto `v2` and with `W -> 0`,
//! and calls a dead neuron beside a neuron with both features superposed `undecided`.
//!
//! Every criterion is relative, so it does not depend on the scale of `W` (to which the
//! batch-normalized loss is blind): norms are compared with the largest neuron's norm or
//! with the initial one, features through cosines.
//!
//! # Examples
//!
//! ```
//! use predhead::moments::population::Reduced;
//! use predhead::observe::Termination;
//! use predhead::outcome::{classify, OutcomeClass};
//! use predhead::square::Square;
//!
//! // Neuron 0 learned v1, neuron 1 learned v2, the noise parts are small.
//! let x = Reduced {
//!     a: vec![1.0, 0.01],
//!     b: vec![0.01, 0.9],
//!     gram: Square::from_rows_f64(&[vec![1e-4, 0.0], vec![0.0, 1e-4]], ()),
//!     e: Square::identity(2, ()),
//! };
//! let c = classify(&x, 1.0, 0.9, Termination::Horizon);
//! assert_eq!(c.class, OutcomeClass::BothFeatures);
//! assert_eq!(c.reason, None);
//! ```

use crate::moments::population::Reduced;
use crate::observe::Termination;
use serde::Serialize;

/// A neuron is dead when its norm is at most this fraction of the largest neuron's norm (its
/// cubic output then at most `1.25e-4` of that neuron's, for the same direction).
pub const DEAD_NORM_RATIO: f64 = 0.05;

/// The network has vanished when the largest neuron's norm is at most this fraction of the
/// largest initial norm (every output at most `1e-3` of its initial scale, for the same
/// direction).
pub const VANISHED_NORM_RATIO: f64 = 0.1;

/// A neuron superposes the two features when its smaller feature cosine is at least this
/// (at least 1% of its squared norm in the minor feature) and its features carry at least
/// `outcome_cos^2` of its squared norm.
pub const SUPERPOSED_COS: f64 = 0.1;

/// The class of a run's final state (E7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeClass {
    /// Distinct live neurons learned `v1` and `v2`, one neuron for each.
    BothFeatures,
    /// Every live neuron learned `v1` (the paper's dimensional collapse).
    CollapseV1,
    /// Every live neuron learned `v2`.
    CollapseV2,
    /// `W -> 0`: the largest neuron shrank by [`VANISHED_NORM_RATIO`] or more.
    Vanished,
    /// A dead neuron beside a live neuron that carries both features superposed.
    DeadNeuronSuperposed,
    /// None of the above yet; [`Classification::reason`] says why.
    Undecided,
}

impl OutcomeClass {
    /// The label in summaries and tables.
    pub fn name(self) -> &'static str {
        match self {
            OutcomeClass::BothFeatures => "both-features",
            OutcomeClass::CollapseV1 => "collapse-v1",
            OutcomeClass::CollapseV2 => "collapse-v2",
            OutcomeClass::Vanished => "vanished",
            OutcomeClass::DeadNeuronSuperposed => "dead-neuron-superposed",
            OutcomeClass::Undecided => "undecided",
        }
    }

    /// Every class, in table order.
    pub const ALL: [OutcomeClass; 6] = [
        OutcomeClass::BothFeatures,
        OutcomeClass::CollapseV1,
        OutcomeClass::CollapseV2,
        OutcomeClass::Vanished,
        OutcomeClass::DeadNeuronSuperposed,
        OutcomeClass::Undecided,
    ];
}

/// Why a run is [`OutcomeClass::Undecided`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UndecidedReason {
    /// The run ended before its horizon (step limit, step underflow, non-finite state).
    StoppedEarly,
    /// A live neuron's noise part still carries more than `1 - outcome_cos^2` of its squared
    /// norm: the noise has not decayed yet.
    NoiseDominated,
    /// A live neuron carries its features without either cosine reaching `outcome_cos`, and
    /// no neuron is dead.
    Superposed,
}

impl UndecidedReason {
    /// The label in summaries and tables.
    pub fn name(self) -> &'static str {
        match self {
            UndecidedReason::StoppedEarly => "stopped-early",
            UndecidedReason::NoiseDominated => "noise-dominated",
            UndecidedReason::Superposed => "superposed",
        }
    }
}

/// The class of a final state, the reason when undecided, and the dead neurons.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Classification {
    /// The class.
    pub class: OutcomeClass,
    /// Why it is undecided (`None` otherwise).
    pub reason: Option<UndecidedReason>,
    /// The neurons whose norm is at most [`DEAD_NORM_RATIO`] of the largest.
    pub dead: Vec<usize>,
}

/// Per neuron: norm, `cos1`, `cos2` (a zero neuron has cosines 0).
fn geometry(x: &Reduced<f64>) -> Vec<(f64, f64, f64)> {
    (0..x.neurons())
        .map(|j| {
            let n = x.norm_sq(j).sqrt();
            if n > 0.0 {
                (n, x.a[j].abs() / n, x.b[j].abs() / n)
            } else {
                (0.0, 0.0, 0.0)
            }
        })
        .collect()
}

/// The taxonomy (E7) at the final state `x`, given the largest initial neuron norm
/// `initial_scale`, the cosine `outcome_cos` of (E5), and how the run ended. The rules, in
/// order (the first that applies):
/// 1. `vanished`: `max_j ||w_j|| <= VANISHED_NORM_RATIO * initial_scale`, or `W = 0`;
/// 2. dead neurons: `||w_j|| <= DEAD_NORM_RATIO * max_k ||w_k||`; the others are live;
/// 3. `both-features`: live `j != k` with `cos1_j >= c` and `cos2_k >= c`;
/// 4. `dead-neuron-superposed`: a dead neuron, and a live neuron with
///    `cos1^2 + cos2^2 >= c^2` and `min(cos1, cos2) >= SUPERPOSED_COS`;
/// 5. `collapse-v1` (`collapse-v2`): every live neuron has `cos1 >= c` (`cos2 >= c`);
/// 6. `undecided`, because the run stopped early, else a live neuron is noise-dominated
///    (`cos1^2 + cos2^2 < c^2`), else one superposes its features.
///
/// A non-finite state is `undecided` (every comparison with NaN is false).
pub fn classify(
    x: &Reduced<f64>,
    initial_scale: f64,
    outcome_cos: f64,
    termination: Termination,
) -> Classification {
    let g = geometry(x);
    let largest = g.iter().map(|n| n.0).fold(0.0, f64::max);
    let dead: Vec<usize> = (0..g.len())
        .filter(|&j| g[j].0 <= DEAD_NORM_RATIO * largest)
        .collect();
    let done = |class| Classification {
        class,
        reason: None,
        dead: dead.clone(),
    };
    if largest == 0.0 || (initial_scale > 0.0 && largest <= VANISHED_NORM_RATIO * initial_scale) {
        return done(OutcomeClass::Vanished);
    }
    let live: Vec<(f64, f64, f64)> = (0..g.len())
        .filter(|j| !dead.contains(j))
        .map(|j| g[j])
        .collect();
    let c = outcome_cos;
    let learned_v1 = |n: &(f64, f64, f64)| n.1 >= c;
    let learned_v2 = |n: &(f64, f64, f64)| n.2 >= c;
    let both = live.iter().enumerate().any(|(i, n)| {
        learned_v1(n)
            && live
                .iter()
                .enumerate()
                .any(|(k, o)| k != i && learned_v2(o))
    });
    if both {
        return done(OutcomeClass::BothFeatures);
    }
    let features = |n: &(f64, f64, f64)| n.1 * n.1 + n.2 * n.2 >= c * c;
    let superposed = |n: &(f64, f64, f64)| features(n) && n.1.min(n.2) >= SUPERPOSED_COS;
    if !dead.is_empty() && live.iter().any(superposed) {
        return done(OutcomeClass::DeadNeuronSuperposed);
    }
    if !live.is_empty() && live.iter().all(learned_v1) {
        return done(OutcomeClass::CollapseV1);
    }
    if !live.is_empty() && live.iter().all(learned_v2) {
        return done(OutcomeClass::CollapseV2);
    }
    let reason = if !matches!(termination, Termination::Horizon | Termination::TEnd) {
        UndecidedReason::StoppedEarly
    } else if live.iter().any(|n| !features(n)) {
        UndecidedReason::NoiseDominated
    } else {
        UndecidedReason::Superposed
    };
    Classification {
        class: OutcomeClass::Undecided,
        reason: Some(reason),
        dead,
    }
}

/// The largest neuron norm of `x`: the `initial_scale` of [`classify`] at the first state.
pub fn largest_norm(x: &Reduced<f64>) -> f64 {
    geometry(x).iter().map(|n| n.0).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::square::Square;

    /// A state from per-neuron `(a, b, |u|)` with orthogonal noise parts and `E = I`.
    fn state(neurons: &[(f64, f64, f64)]) -> Reduced<f64> {
        let m = neurons.len();
        Reduced {
            a: neurons.iter().map(|n| n.0).collect(),
            b: neurons.iter().map(|n| n.1).collect(),
            gram: Square::from_fn(m, |j, k| if j == k { neurons[j].2.powi(2) } else { 0.0 }),
            e: Square::identity(m, ()),
        }
    }

    fn class(neurons: &[(f64, f64, f64)], initial: f64) -> (OutcomeClass, Option<UndecidedReason>) {
        let c = classify(&state(neurons), initial, 0.9, Termination::Horizon);
        (c.class, c.reason)
    }

    use OutcomeClass::*;

    #[test]
    fn each_class_on_a_state_built_for_it() {
        assert_eq!(
            class(&[(1.0, 0.0, 0.1), (0.0, 1.0, 0.1)], 1.0).0,
            BothFeatures
        );
        assert_eq!(
            class(&[(1.0, 0.05, 0.1), (0.8, 0.0, 0.1)], 1.0).0,
            CollapseV1
        );
        assert_eq!(
            class(&[(0.0, 1.0, 0.1), (0.05, 0.8, 0.1)], 1.0).0,
            CollapseV2
        );
        // The no-normalization end state at d = 100: every neuron 0.011 of its initial norm,
        // along v2. (E5) calls it `collapse`; (E7) sees that W vanished.
        let vanished = [(0.0035, -0.0099, 0.0031), (-0.0035, 0.0098, 0.0031)];
        assert_eq!(class(&vanished, 1.0).0, Vanished);
        // The paper-family seed-15 end state at d = 100: neuron 0 dead (0.018 of neuron 1),
        // neuron 1 with cos1 0.98 and cos2 0.19.
        let dead = [(0.0204, 0.004, 0.0149), (1.3867, 0.2734, 0.0236)];
        let c = classify(&state(&dead), 1.0, 0.9, Termination::Horizon);
        assert_eq!((c.class, c.dead), (DeadNeuronSuperposed, vec![0]));
        assert_eq!(
            class(&[(1.0, 0.0, 0.1), (0.6, 0.0, 0.8)], 1.0),
            (Undecided, Some(UndecidedReason::NoiseDominated))
        );
        assert_eq!(
            class(&[(1.0, 0.0, 0.1), (0.7, 0.7, 0.1)], 1.0),
            (Undecided, Some(UndecidedReason::Superposed))
        );
        let stopped = classify(
            &state(&[(1.0, 0.0, 0.1), (0.6, 0.0, 0.8)]),
            1.0,
            0.9,
            Termination::StepLimit,
        );
        assert_eq!(stopped.reason, Some(UndecidedReason::StoppedEarly));
    }

    /// Each threshold decides exactly where it is stated: a state just inside and one just
    /// outside give different classes (a planted off-by-a-factor threshold fails here).
    #[test]
    fn thresholds_decide_where_stated() {
        // Vanished: the largest norm against VANISHED_NORM_RATIO of the initial one.
        let at = |r: f64| class(&[(r, 0.0, 0.0), (0.0, r, 0.0)], 1.0).0;
        assert_eq!(at(VANISHED_NORM_RATIO), Vanished);
        assert_eq!(at(VANISHED_NORM_RATIO * 1.001), BothFeatures);
        // Dead: a neuron's norm against DEAD_NORM_RATIO of the largest; the live neuron
        // superposes the features.
        let sup = (0.98, 0.19, 0.0);
        let largest = f64::hypot(sup.0, sup.1);
        let with = |r: f64| class(&[(r * largest, 0.0, 0.0), sup], 1.0).0;
        assert_eq!(with(DEAD_NORM_RATIO * 0.999), DeadNeuronSuperposed);
        assert_eq!(with(DEAD_NORM_RATIO * 1.001), CollapseV1);
        // Superposed: the minor cosine against SUPERPOSED_COS.
        let minor = |b: f64| {
            let a = (1.0 - b * b).sqrt();
            class(&[(1e-3, 0.0, 0.0), (a, b, 0.0)], 1.0).0
        };
        assert_eq!(minor(SUPERPOSED_COS * 1.001), DeadNeuronSuperposed);
        assert_eq!(minor(SUPERPOSED_COS * 0.999), CollapseV1);
        // The learned-feature cosine against outcome_cos.
        let cos = |c1: f64| {
            let n = (1.0 - c1 * c1).sqrt();
            class(&[(c1, 0.0, n), (0.0, 1.0, 0.0)], 1.0).0
        };
        assert_eq!(cos(0.9 * 1.001), BothFeatures);
        assert_eq!(cos(0.9 * 0.999), Undecided);
    }

    /// (E7) refines (E5) where no neuron is dead: `both-features` and `collapse-*` agree
    /// with it on random states, and so does `undecided`.
    #[test]
    fn refines_the_contract_outcome_without_dead_neurons() {
        use crate::observe::{outcome, Outcome};
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let m = rng.random_range(2..5);
            let neurons: Vec<(f64, f64, f64)> = (0..m)
                .map(|_| {
                    let scale = rng.random_range(0.5..2.0);
                    let t: f64 = rng.random_range(0.0..std::f64::consts::FRAC_PI_2);
                    let noise = if rng.random_bool(0.5) { 0.05 } else { 0.6 };
                    (scale * t.cos(), scale * t.sin(), scale * noise)
                })
                .collect();
            let x = state(&neurons);
            let c = classify(&x, 1.0, 0.9, Termination::Horizon);
            assert!(c.dead.is_empty());
            let e5 = outcome(&x, 0.9);
            let agrees = match c.class {
                BothFeatures => e5 == Outcome::BothFeatures,
                CollapseV1 | CollapseV2 => e5 == Outcome::Collapse,
                Undecided => e5 == Outcome::Undecided,
                Vanished | DeadNeuronSuperposed => false,
            };
            assert!(agrees, "{neurons:?}: {:?} against {e5:?}", c.class);
            seen.insert(c.class.name());
        }
        // The random states reach every class that needs no dead or vanished neuron.
        assert_eq!(seen.len(), 4, "{seen:?}");
    }
}
