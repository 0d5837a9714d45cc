//! Exact population moments of the patch distribution, and the population loss and
//! gradient built from them.
//!
//! - [`overlap`]: the overlap `K = |S ∩ A|` (hypergeometric), exact rationals;
//! - [`noise`]: Gaussian moments of cube projections of the noise;
//! - [`population`]: second-moment and cross-moment matrices, loss, gradient, correlation;
//! - [`race`]: the frozen-head race between the features, its invariant and its law.
//!
//! Derivations: `derivations/overlap.md`, `derivations/noise.md`,
//! `derivations/population.md`, `derivations/frozen_head.md`.

pub mod noise;
pub mod overlap;
pub mod population;
pub mod race;
