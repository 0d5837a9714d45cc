//! The commands of the binary, as library functions: each takes its parsed arguments and
//! returns the text for stdout, or an [`crate::Error`].

pub mod eval;
pub mod eval_certify;
pub mod flow;
pub mod report;
pub mod sgd;
pub mod sgd_reduced;
