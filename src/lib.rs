//! # predhead
//!
//! Exact population gradients, gradient flow and Monte Carlo SGD for the prediction-head
//! setting of Wen and Li, *The Mechanism of Prediction Head in Non-contrastive
//! Self-supervised Learning* (NeurIPS 2022).
//!
//! ## Map
//! - **The problem** (pure functions, no time-stepping): [`setting`] and [`config`] (the
//!   paper's setting as validated types), [`data`] (Definition 3.1 and augmentation (3.2) on
//!   counter-based streams), [`network`] (the batch network and its analytic gradient),
//!   [`moments`] (exact population moments, loss and gradient), [`reduced`] (reduced
//!   coordinates).
//! - **The solvers**: `flow` (adaptive integration of the population gradient flow) and
//!   `sgd` (Monte Carlo SGD on explicit data).
//! - **The observers**: `observe` (phase events, outcome, recorders, summaries), [`outcome`]
//!   (the outcome taxonomy), `report`.
//!
//! ## Notation
//! | paper | here |
//! |---|---|
//! | `d`, `P`, `P0`, `m` | `dim`, `patches`, `feature_patches`, `neurons` |
//! | `alpha_1, alpha_2` | `alpha` |
//! | `sigma` (`sigma^6 = 15 s^6`) | `noise_std` = `s` |
//! | `v_1, v_2` | `e_1, e_2` |
//! | `S(X)`, `A` (the paper's `𝒫`) | feature set, first-view set |
//! | `K = abs(S ∩ A)` | the overlap |
//! | `X^(1)`, `X^(2)` | the first and second view |
//! | `E` | the head |
//! | `eta`, `eta_E` | `lr`, `lr_head` |
//! | `tau = eta t` | flow time |
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// Index loops mirror the paper's subscripts (`E[j][r]`, `c_{j,l}`) in the formulas.
#![allow(clippy::needless_range_loop)]

pub mod batch;
pub mod certify;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod double_double;
pub mod error;
pub mod flow;
pub mod init;
pub mod input;
pub mod interval;
pub mod moments;
pub mod network;
pub mod observe;
pub mod ode;
pub mod outcome;
pub mod reduced;
pub mod report;
pub mod scalar;
pub mod setting;
pub mod sgd;
pub mod sgd_reduced;
mod sized;
pub mod square;
pub mod state;
pub mod sweep;
pub mod validated;

pub use error::{Error, Result};
