//! Exact population moments of the patch distribution, and the population loss and
//! gradient built from them.
//!
//! - [`overlap`]: the overlap `K = |S ∩ A|` (hypergeometric), exact rationals;
//! - [`noise`]: Gaussian moments of cube projections of the noise;
//! - [`population`]: second-moment and cross-moment matrices, loss, gradient, correlation.
//!
//! Derivations: `derivations/overlap.md`, `derivations/noise.md`,
//! `derivations/population.md`.

pub mod noise;
pub mod overlap;
pub mod population;
