//! `predhead eval` (see `../shared/contract.md`): the population loss and gradient at a
//! state, or with `--batch` the batch loss (3.3) and gradient on a given batch, as one
//! JSON object `{"loss": .., "grad_w": [[d] x m], "grad_e": [[m] x m]}`.
//!
//! With `--precision BITS` (population only) the evaluation runs in MPFR at `BITS` bits
//! and every number is printed as a decimal string with all the digits of that precision.

use crate::batch::Batch;
use crate::config::load_config;
use crate::error::{Error, Result};
use crate::moments::population::Constants;
use crate::network::batch_loss_and_gradient;
use crate::reduced::evaluate_explicit;
use crate::scalar::Scalar;
use crate::state::State;
use serde_json::{json, Value};
use std::path::PathBuf;

/// The smallest `--precision`: `f64`'s 53 bits.
pub const MIN_PRECISION: u32 = 53;
/// The largest `--precision` accepted.
pub const MAX_PRECISION: u32 = 100_000;

/// Arguments of `predhead eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// The state (STATE.json: `{"w": [m][d], "e": [m][m]}`).
    #[arg(long)]
    pub state: PathBuf,
    /// A batch (BATCH.json: `{"x1": [N][P][d], "x2": [N][P][d]}`): evaluate the batch loss
    /// (3.3) instead of the population loss.
    #[arg(long)]
    pub batch: Option<PathBuf>,
    /// Evaluate the population loss in MPFR at this many bits (53..=100000) and print every
    /// number as a decimal string with all its digits. Not with --batch.
    #[arg(long)]
    pub precision: Option<u32>,
    /// Print certified enclosures `[lo, hi]` of every number, computed in interval
    /// arithmetic with outward rounding from the exact decimal inputs (population only;
    /// `docs/cli.md`, "eval --certify").
    #[arg(long)]
    pub certify: bool,
    /// The working precision of --certify in bits (53..=100000; default 53).
    #[arg(long)]
    pub certify_bits: Option<u32>,
}

/// Runs `predhead eval`: returns the JSON line for stdout.
pub fn run(args: &Args) -> Result<String> {
    if args.certify || args.certify_bits.is_some() {
        return super::eval_certify::run(args);
    }
    if let Some(bits) = args.precision {
        if args.batch.is_some() {
            return Err(Error::invalid(
                "--precision",
                "applies to the population loss only, not with --batch",
            ));
        }
        if !(MIN_PRECISION..=MAX_PRECISION).contains(&bits) {
            return Err(Error::invalid(
                "--precision",
                format!("must be between {MIN_PRECISION} and {MAX_PRECISION} bits, got {bits}"),
            ));
        }
    }
    let config = load_config(&args.config)?;
    let setting = &config.setting;
    let model = &config.model;
    let state = State::load(&args.state, setting)?;
    state.check_model(model)?;
    let value = match (&args.batch, args.precision) {
        (Some(path), _) => {
            let batch = Batch::load(path, setting)?;
            let ev = batch_loss_and_gradient(setting, model, &state, &batch)?;
            object(json!(ev.loss), json!(ev.grad_w), json!(ev.grad_e))
        }
        (None, None) => {
            let k = Constants::<f64>::new(setting, ());
            let ev = evaluate_explicit::<f64>(&k, model, &state, ()).map_err(at_state)?;
            check_finite(&ev.loss, &ev.grad_w, &ev.grad_e)?;
            object(json!(ev.loss), json!(ev.grad_w), json!(ev.grad_e))
        }
        (None, Some(bits)) => {
            let k = Constants::<rug::Float>::new(setting, bits);
            let ev = evaluate_explicit::<rug::Float>(&k, model, &state, bits).map_err(at_state)?;
            check_finite(&ev.loss, &ev.grad_w, &ev.grad_e)?;
            let dec = |rows: &[Vec<rug::Float>]| -> Vec<Vec<String>> {
                rows.iter()
                    .map(|r| r.iter().map(Scalar::to_decimal).collect())
                    .collect()
            };
            object(
                json!(ev.loss.to_decimal()),
                json!(dec(&ev.grad_w)),
                json!(dec(&ev.grad_e)),
            )
        }
    };
    Ok(value)
}

/// The output line with the keys in the contract's order: `loss`, `grad_w`, `grad_e`
/// (`serde_json` numbers are the shortest round-trip form of the `f64`).
fn object(loss: Value, grad_w: Value, grad_e: Value) -> String {
    format!("{{\"loss\":{loss},\"grad_w\":{grad_w},\"grad_e\":{grad_e}}}\n")
}

/// A population evaluation that fails at the given state (a zero or overflowing variance)
/// is a property of the input state: the error names `state`.
pub fn at_state(e: Error) -> Error {
    match e {
        Error::Numerical { quantity, problem } => {
            Error::numerical("state", format!("{quantity}: {problem}"))
        }
        other => other,
    }
}

/// A non-finite population value would print as `null`: refuse it, naming the state whose
/// values overflow.
fn check_finite<S: Scalar>(loss: &S, grad_w: &[Vec<S>], grad_e: &[Vec<S>]) -> Result<()> {
    let what = if !loss.is_finite() {
        "loss"
    } else if grad_w.iter().flatten().any(|g| !g.is_finite()) {
        "gradient grad_w"
    } else if grad_e.iter().flatten().any(|g| !g.is_finite()) {
        "gradient grad_e"
    } else {
        return Ok(());
    };
    Err(Error::numerical(
        "state",
        format!("the population {what} is not finite at this state (overflow)"),
    ))
}
