//! `predhead eval --certify [--certify-bits B]`: the contract's eval JSON with every number
//! replaced by an enclosure `[lo, hi]` of the exact value (`../shared/contract.md`,
//! "Extensions"; `docs/cli.md`, "eval --certify"), plus the key `certify` with the working
//! precision and the width of every enclosure.
//!
//! The enclosures come from [`crate::certify::certify_eval`] on the exact decimal inputs
//! (`derivations/interval.md`). At 53 bits (the default) the endpoints are JSON numbers
//! (the MPFR endpoints are `f64`s); above, decimal strings with every digit of the working
//! precision, rounded outward.

use super::eval::Args;
use crate::certify::{certify_eval, ExactInput};
use crate::config::parse_config;
use crate::error::{Error, Result};
use crate::input::{read_bounded, MAX_CONFIG_BYTES, MAX_JSON_BYTES};
use crate::interval::{Interval, MIN_BITS};
use crate::setting::HeadMode;
use crate::state::State;
use serde_json::{json, Value};

/// The default working precision: `f64`'s 53 bits (`docs/cli.md`, "eval --certify").
pub const DEFAULT_BITS: u32 = MIN_BITS;

/// Runs `predhead eval --certify`: returns the JSON line for stdout.
///
/// # Errors
///
/// Bad flags (with `--batch` or `--precision`, `--certify-bits` without `--certify` or out
/// of range), the input errors of `predhead eval`, and "not certified" (naming `state`)
/// when the enclosures cannot be closed ([`certify_eval`]).
pub fn run(args: &Args) -> Result<String> {
    if !args.certify {
        return Err(Error::invalid("--certify-bits", "needs --certify"));
    }
    if args.batch.is_some() {
        return Err(Error::invalid(
            "--certify",
            "applies to the population loss only, not with --batch",
        ));
    }
    if args.precision.is_some() {
        return Err(Error::invalid(
            "--certify",
            "not with --precision (the working precision is --certify-bits)",
        ));
    }
    let bits = args.certify_bits.unwrap_or(DEFAULT_BITS);
    let config_text = read_bounded(&args.config, MAX_CONFIG_BYTES)?;
    let config = parse_config(&config_text)?;
    let (setting, model) = (&config.setting, &config.model);
    let state_text = read_bounded(&args.state, MAX_JSON_BYTES)?;
    let state = State::parse(&state_text, setting)?;
    state.check_model(model)?;
    let input = ExactInput::from_text(&config_text, setting, &state_text, &state)?;
    if model.head == HeadMode::IdentityOffdiag {
        for (j, row) in input.e.iter().enumerate() {
            if row[j] != 1 {
                return Err(Error::invalid(
                    format!("state.e[{j}][{j}]"),
                    "must be exactly 1 with head = \"identity-offdiag\" (its decimal is not 1)",
                ));
            }
        }
    }
    let ev = certify_eval(setting, model, &input, bits)?;
    let enc = |x: &Interval, field: &str| enclosure(x, bits, field);
    let rows = |m: &[Vec<Interval>], name: &str| -> Result<Value> {
        let mut out = Vec::with_capacity(m.len());
        for (j, r) in m.iter().enumerate() {
            let row = r
                .iter()
                .enumerate()
                .map(|(i, x)| enc(x, &format!("{name}[{j}][{i}]")))
                .collect::<Result<Vec<_>>>()?;
            out.push(Value::Array(row));
        }
        Ok(Value::Array(out))
    };
    let widths = |m: &[Vec<Interval>]| -> Vec<Vec<f64>> {
        m.iter()
            .map(|r| r.iter().map(Interval::width_f64).collect())
            .collect()
    };
    let max_rel = std::iter::once(&ev.loss)
        .chain(ev.grad_w.iter().flatten())
        .chain(ev.grad_e.iter().flatten())
        .map(Interval::rel_width_f64)
        .fold(0.0f64, f64::max);
    let certify = json!({
        "bits": bits,
        "width": {
            "loss": ev.loss.width_f64(),
            "grad_w": widths(&ev.grad_w),
            "grad_e": widths(&ev.grad_e),
        },
        "max_rel_width": max_rel,
    });
    Ok(format!(
        "{{\"loss\":{},\"grad_w\":{},\"grad_e\":{},\"certify\":{}}}\n",
        enc(&ev.loss, "loss")?,
        rows(&ev.grad_w, "grad_w")?,
        rows(&ev.grad_e, "grad_e")?,
        certify_object(&certify),
    ))
}

/// The `certify` object with its keys in a fixed order: `bits`, `width`, `max_rel_width`.
fn certify_object(c: &Value) -> String {
    format!(
        "{{\"bits\":{},\"width\":{{\"loss\":{},\"grad_w\":{},\"grad_e\":{}}},\"max_rel_width\":{}}}",
        c["bits"], c["width"]["loss"], c["width"]["grad_w"], c["width"]["grad_e"], c["max_rel_width"]
    )
}

/// `[lo, hi]`: JSON numbers at 53 bits, outward-rounded decimal strings with every digit of
/// the precision above. Errors (naming `field`) when a 53-bit endpoint is beyond `f64`.
fn enclosure(x: &Interval, bits: u32, field: &str) -> Result<Value> {
    if bits == MIN_BITS {
        let (lo, hi) = x.bounds_f64();
        if !(lo.is_finite() && hi.is_finite()) {
            return Err(Error::numerical(
                field,
                "its enclosure is beyond the f64 range: use --certify-bits 54 or more \
                 (decimal strings)",
            ));
        }
        Ok(json!([lo, hi]))
    } else {
        let digits = (f64::from(bits) * std::f64::consts::LOG10_2).ceil() as usize + 1;
        let (lo, hi) = x.bounds_decimal(digits);
        Ok(json!([lo, hi]))
    }
}
