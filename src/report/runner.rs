//! What a sweep task runs: the exact flow ([`crate::flow`]) or SGD ([`crate::sgd`]), with the
//! measurements the reports need. [`ModelRunner`] is the production
//! [`crate::sweep::TaskRunner`]; the runner name is the task's `point.runner`:
//!
//! - `flow`: the flow from the exact reduced initialization ([`crate::init::reduced`]) with
//!   seed `seed`, stopped at `t_end` or the horizon; the result is the [`Summary`].
//! - `flow-t1`: `flow`, plus the clauses (ii) and (iii) of Lemma 5.1 at the state at `t1`
//!   (see [`at_t1`]): `{"summary", "other_features_t1", "head_dev_t1"}`.
//! - `flow-at`: the flow integrated to each flow time `T = c d^2`, `c` in [`SCALED_TIMES`]
//!   (not stopped at `t_end`), with the state's observables there (see [`flow_at`]):
//!   `{"summary", "at": [{"c", "class", "corr", "head", "noise", "leak"}, ...]}`.
//! - `flow-sens`, `flow-t1-sens`: `flow` and `flow-t1`, plus for the replicates (spec
//!   seeds) below [`SENSITIVITY_REPLICATES`] the forward sensitivities of `t1` and `t2` in
//!   `ln d` (`derivations/sensitivities.md`; see [`sensitivity_record`]): `{"summary", ...,
//!   "sens": {"t1", "t2", "d_t1", "d_t2", "steps"[, "t1_next"]}}`, or `"sens": {"error"}`
//!   when the augmented run fails.
//! - `flow-converge`: the same, integrated on to `2 t_end` (capped at the horizon) so that
//!   the encoder converges too (the head converges first).
//! - `flow-corr`: `flow`, plus `corr_gap_final`, `1 - |Corr(f_0, f_1)|` at the final state
//!   in MPFR ([`crate::observe::corr_gap`]; in `f64` it is rounding below ~1e-16):
//!   `{"summary", "corr_gap_final"}`.
//! - `flow-explicit`: the same from the reduced coordinates of the explicit initialization
//!   [`crate::init::explicit`] (the very `W(0)` that `sgd` starts from).
//! - `trajectory`: `flow`, plus `||E - diag(E)||_F` and `||E - E^T||_F` at (at most
//!   [`TRAJECTORY_POINTS`]) accepted steps: `{"summary", "tau", "offdiag", "asym"}`.
//! - `acceleration`: `flow`, plus the growth rates of Lemma 5.3 at the state at `t2`
//!   (see [`acceleration_rates`]).
//! - `intervention`: Lemma 5.3 as an intervention (see [`intervention`]): from the state at
//!   `t2`, the flow continued with the head trained, with `E` reset to `I` and frozen, and
//!   with `E` frozen where it is; for each arm the flow time until the weak feature of the
//!   substituted neuron reaches `abs(b_k) >= t1`-threshold, and the arm's outcome class.
//! - `sgd`: SGD from [`crate::init::explicit`] with data seed `seed`, for
//!   `ceil(horizon / lr)` steps (the flow's horizon in flow time), stopped at `t_end`.
//! - `sgd-reduced`: the same with the reduced engine ([`crate::sgd_reduced`]) from
//!   [`crate::init::reduced`] with seed `seed` (the state `flow` starts from).
//! - `flow-ref`, `sgd-reduced-ref`, `sgd-reduced-ref-nowishart`: `flow` and `sgd-reduced`
//!   (data seed `seed`) from one reference state, the reduced initialization of seed
//!   [`REFERENCE_SEED`] drawn at [`REFERENCE_DIM`]: the same `(a, b, G, E)` at every `d` and
//!   for every seed, with the horizon `horizon (REFERENCE_DIM / d)^2` (the reference
//!   dimension's). The flow in reduced coordinates does not depend on `d`, so `d`
//!   enters only SGD's Wishart term (`derivations/sgd_reduced.md`, (R12)-(R14)).
//!   `-nowishart` drops that term (the planted bug [`crate::sgd_reduced::Variant::NoWishart`],
//!   the falsifier of the `lr_crit` report). Without that term `d` enters the chain only
//!   through the noise rank `min(d - 2, m)` ([`crate::sgd_reduced::rank`]), so its tasks that
//!   differ only in `d` (at the same `lr`, rank and horizon) share one run
//!   ([`TaskRunner::share_key`]; test `the_no_wishart_chain_is_blind_to_d`).

use crate::error::{Error, Result};
use crate::flow::sensitivity::params::standardized_init;
use crate::flow::sensitivity::{sensitivities, Parameter, SensitivityOptions};
use crate::flow::{integrate, Options};
use crate::init;
use crate::moments::population::{evaluate, Constants, Reduced};
use crate::observe::{asymmetry, corr_gap, offdiag_norm, Summary, TrajectoryRecorder};
use crate::reduced::reduce;
use crate::setting::Config;
use crate::sgd_reduced::Variant;
use crate::square::Square;
use crate::sweep::{Task, TaskRunner};
use serde_json::{json, Value};

/// The runner names [`ModelRunner`] knows.
pub const RUNNERS: [&str; 16] = [
    "flow",
    "flow-at",
    "flow-t1",
    "flow-sens",
    "flow-t1-sens",
    "flow-converge",
    "flow-corr",
    "flow-explicit",
    "trajectory",
    "acceleration",
    "intervention",
    "sgd",
    "sgd-reduced",
    "flow-ref",
    "sgd-reduced-ref",
    "sgd-reduced-ref-nowishart",
];

/// The dimension at which the `-ref` runners draw their initial state.
pub const REFERENCE_DIM: u64 = 100;

/// The seed of the `-ref` runners' initial state: in the setting of `reports/lr_crit.toml`
/// its flow learns both features with `t1 = 24.5`, `t3 = 34.6` (`docs/sgd_reduced_flow.md`);
/// most seeds there reach no `t3` before flow time 200.
pub const REFERENCE_SEED: u64 = 4;

/// The reduced initialization of [`REFERENCE_SEED`] drawn at [`REFERENCE_DIM`], and
/// `config` with the reference horizon `horizon (REFERENCE_DIM / d)^2` (the `-ref` runners).
fn reference_start(config: &Config) -> Result<(Config, Reduced<f64>)> {
    let mut reference = config.setting.clone();
    reference.dim = REFERENCE_DIM;
    let x0 = init::reduced(&reference, REFERENCE_SEED)?;
    let mut config = config.clone();
    let ratio = REFERENCE_DIM as f64 / config.setting.dim as f64;
    config.training.horizon *= ratio * ratio;
    Ok((config, x0))
}

/// Reduced SGD from `x0` with data seed `seed` for `ceil(horizon / lr)` steps, stopped at
/// `t_end`.
fn sgd_reduced(
    config: &Config,
    x0: Reduced<f64>,
    seed: u64,
    variant: crate::sgd_reduced::Variant,
) -> Result<Value> {
    let config = with_sgd_steps(config)?;
    let mut sgd = crate::sgd_reduced::ReducedSgd::new(&config, x0, seed)?;
    sgd.variant = variant;
    let options = crate::sgd::RunOptions {
        record: crate::observe::Cadence::ENDS,
        stop_at_t_end: true,
    };
    let summary = crate::sgd_reduced::run::<std::io::Sink>(&mut sgd, options, None, |_| {})?;
    to_value(&summary)
}

/// `config` with `steps = ceil(horizon / lr)`, the flow's horizon in flow time.
fn with_sgd_steps(config: &Config) -> Result<Config> {
    let mut config = config.clone();
    let steps = (config.training.horizon / config.training.lr).ceil();
    if !((1.0..1e12).contains(&steps)) {
        return Err(Error::invalid(
            "training.horizon",
            format!("horizon / lr = {steps} steps is out of range for sgd"),
        ));
    }
    config.training.steps = steps as u64;
    Ok(config)
}

/// Checks that every task of `spec` (full and quick grids) names a known runner.
pub fn check_runners(spec: &crate::sweep::Spec) -> Result<()> {
    for quick in [false, true] {
        let (_, axes) = spec.grid(quick);
        let names = if axes.runner.is_empty() {
            vec![spec.runner.clone()]
        } else {
            axes.runner
        };
        for n in names {
            if !RUNNERS.contains(&n.as_str()) {
                return Err(Error::invalid(
                    "runner",
                    format!(
                        "unknown runner \"{n}\", expected one of {}",
                        RUNNERS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Checks the schema of the results a report reads (`results` names the file in errors):
/// each result is `{"error": text}` alone, or an object whose summary (`result.summary` or
/// `result`) has a text `outcome`, and whose number fields (the summary's event times,
/// norms, losses; the runners' added measurements) are numbers or `null`, the flags
/// booleans and the series arrays of numbers. A line with a valid checksum but a wrong type
/// (`"t1": "abc"`) is refused here, never folded into a verdict.
///
/// # Errors
/// The first record that fails, named by file and task.
pub fn check_records(results: &std::path::Path, records: &[crate::sweep::Record]) -> Result<()> {
    for r in records {
        check_result(&r.result).map_err(|p| {
            Error::parse(
                format!("{} task {}", results.display(), r.task),
                format!("bad result: {p}"),
            )
        })?;
    }
    Ok(())
}

/// Fields that are numbers or `null` where present (summary and runner measurements).
const NUMBER_FIELDS: [&str; 28] = [
    "other_features_t1",
    "head_dev_t1",
    "weak_time_head",
    "weak_time_reset",
    "weak_time_frozen",
    "weak_time_sg_off",
    "weak_time_bn_off",
    "weak_time_head_t1",
    "weak_time_reset_t1",
    "t1",
    "t2",
    "t3",
    "t_end",
    "offdiag_peak",
    "offdiag_final",
    "corr_final",
    "loss_final",
    "opt",
    "tau_final",
    "corr_gap_final",
    "a_k",
    "b_k",
    "e_ks",
    "weak_head",
    "weak_identity",
    "strong_head",
    "strong_identity",
    "corr_max_final",
];

/// The schema check of one result ([`check_records`]); `Err` says what is wrong.
fn check_result(v: &Value) -> std::result::Result<(), String> {
    let obj = v.as_object().ok_or("not a JSON object")?;
    if let Some(e) = obj.get("error") {
        if obj.len() != 1 || !e.is_string() {
            return Err("an error result must be {\"error\": text} alone".into());
        }
        return Ok(());
    }
    let summary = obj.get("summary").unwrap_or(v);
    let s = summary.as_object().ok_or("summary: not a JSON object")?;
    if !s.get("outcome").is_some_and(Value::is_string) {
        return Err("outcome: missing or not text".into());
    }
    for o in [s, obj] {
        for k in NUMBER_FIELDS {
            if o.get(k).is_some_and(|x| !(x.is_number() || x.is_null())) {
                return Err(format!("{k}: not a number, got {}", o[k]));
            }
        }
        for k in ["termination", "outcome"] {
            if o.get(k).is_some_and(|x| !x.is_string()) {
                return Err(format!("{k}: not text, got {}", o[k]));
            }
        }
        for k in ["tau", "offdiag", "asym", "a_final", "b_final"] {
            let ok = |x: &Value| {
                x.as_array()
                    .is_some_and(|a| a.iter().all(|y| y.is_number() || y.is_null()))
            };
            if o.get(k).is_some_and(|x| !ok(x)) {
                return Err(format!("{k}: not an array of numbers"));
            }
        }
    }
    if obj.get("reached_t2").is_some_and(|x| !x.is_boolean()) {
        return Err("reached_t2: not a boolean".into());
    }
    match obj.get("sens") {
        Some(sens) => check_sens(sens).map_err(|e| format!("sens.{e}")),
        None => Ok(()),
    }
}

/// The schema of a `sens` object ([`sensitivity_record`]): `error` or `skipped` text, the
/// numbers `t1`, `t2`, `t1_next`, `steps` (or `null`), and `d_t1`, `d_t2` objects of
/// numbers (or `null`).
fn check_sens(v: &Value) -> std::result::Result<(), String> {
    let o = v.as_object().ok_or("not a JSON object")?;
    for k in ["error", "skipped"] {
        if o.get(k).is_some_and(|x| !x.is_string()) {
            return Err(format!("{k}: not text"));
        }
    }
    for k in ["t1", "t2", "t1_next", "steps"] {
        if o.get(k).is_some_and(|x| !(x.is_number() || x.is_null())) {
            return Err(format!("{k}: not a number, got {}", o[k]));
        }
    }
    for k in ["d_t1", "d_t2"] {
        let ok = |x: &Value| {
            x.is_null()
                || x.as_object()
                    .is_some_and(|m| m.values().all(|y| y.is_number() || y.is_null()))
        };
        if o.get(k).is_some_and(|x| !ok(x)) {
            return Err(format!("{k}: not an object of numbers"));
        }
    }
    Ok(())
}

/// The most trajectory samples a `trajectory` task keeps (evenly thinned).
pub const TRAJECTORY_POINTS: usize = 400;

/// The production task runner (see the module documentation for the runner names).
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelRunner;

fn to_value(s: &Summary) -> Result<Value> {
    serde_json::to_value(s).map_err(|e| Error::numerical("summary", e.to_string()))
}

/// The step budget of a report's flow run (accepted plus rejected steps): a run that needs
/// more ends with termination `step-limit` and counts as "stopped early" in the tables. It
/// bounds the time of `predhead report` (a step costs microseconds).
pub const MAX_STEPS: u64 = 100_000;

/// The flow options of the reports: the defaults of [`Options::new`], stopped at `t_end`,
/// at most [`MAX_STEPS`] steps.
pub fn flow_options(config: &Config) -> Options {
    let mut o = Options::new(config);
    o.stop_at_t_end = true;
    o.max_steps = o.max_steps.min(MAX_STEPS);
    o
}

/// Runs the flow of `config` from `x0`, calling `on_sample` at every sample.
fn flow(
    config: &Config,
    x0: &Reduced<f64>,
    on_sample: &mut dyn FnMut(f64, &Reduced<f64>) -> Result<()>,
) -> Result<Summary> {
    Ok(integrate::<f64>(config, x0, &flow_options(config), on_sample)?.summary)
}

/// The flow past `t_end`: integrated to `CONVERGE_FACTOR t_end` (capped at the horizon),
/// not stopped at `t_end`; without `t_end`, the run stopped at the horizon.
fn flow_converge(config: &Config, x0: &Reduced<f64>) -> Result<Summary> {
    let first = flow(config, x0, &mut |_, _| Ok(()))?;
    let Some(t_end) = first.t_end else {
        return Ok(first);
    };
    let mut o = flow_options(config);
    o.stop_at_t_end = false;
    o.horizon = (CONVERGE_FACTOR * t_end).min(config.training.horizon);
    Ok(integrate::<f64>(config, x0, &o, &mut |_, _| Ok(()))?.summary)
}

/// The multiples `c` of `d^2` at which `flow-at` reads the state (issue 21, item 5).
pub const SCALED_TIMES: [f64; 4] = [0.1, 1.0, 10.0, 100.0];

/// The observables of Corollary 4.2 and Proposition 5.4 at the flow times `T = c d^2`,
/// `c` in [`SCALED_TIMES`] (capped at the horizon): for each, the flow of `config` from `x0`
/// integrated to `T` (a run of its own, not stopped at `t_end`), and at its final state the
/// class (E7), `abs(Corr(f_1, f_2))` (`corr`), `||E - I||_F` (`head`), the largest noise
/// fraction `||u_j|| / ||w_j||` (`noise`) and the largest smaller feature cosine
/// `min(abs(a_j), abs(b_j)) / ||w_j||` (`leak`) over the neurons.
///
/// # Errors
/// A flow error.
pub fn flow_at(config: &Config, x0: &Reduced<f64>) -> Result<Value> {
    let first = flow(config, x0, &mut |_, _| Ok(()))?;
    let d = config.setting.dim as f64;
    let mut at = Vec::new();
    for c in SCALED_TIMES {
        let mut o = flow_options(config);
        o.stop_at_t_end = false;
        o.horizon = (c * d * d).min(config.training.horizon);
        let run = integrate::<f64>(config, x0, &o, &mut |_, _| Ok(()))?;
        let x = &run.final_state;
        let per_neuron = |f: &dyn Fn(usize) -> f64| (0..x.neurons()).map(f).fold(0.0, f64::max);
        let norm = |j: usize| x.norm_sq(j).sqrt();
        let noise = per_neuron(&|j| x.gram.at(j, j).max(0.0).sqrt() / norm(j));
        let leak = per_neuron(&|j| x.a[j].abs().min(x.b[j].abs()) / norm(j));
        at.push(json!({
            "c": c,
            "class": run.summary.outcome_class.name(),
            "corr": run.summary.corr_final.map(f64::abs),
            "head": run.summary.head_distance_final,
            "noise": noise,
            "leak": leak,
        }));
    }
    Ok(json!({ "summary": to_value(&first)?, "at": at }))
}

/// `flow-converge` integrates to this multiple of `t_end`.
pub const CONVERGE_FACTOR: f64 = 2.0;

/// The growth rates of Lemma 5.3 at a state `x` for neuron `k`: with the head as it is,
/// and with the head reset to the identity (same `W`). Under the flow
/// `d b_k / dtau = -dL/db_k`, so the relative growth rate of the weak feature is
/// `-(dL/db_k) / b_k` and that of the strong one `-(dL/da_k) / a_k`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AccelerationRates {
    /// `-(dL/db_k)/b_k` with the head `E`.
    pub weak_head: f64,
    /// `-(dL/db_k)/b_k` with `E = I`.
    pub weak_identity: f64,
    /// `-(dL/da_k)/a_k` with the head `E`.
    pub strong_head: f64,
    /// `-(dL/da_k)/a_k` with `E = I`.
    pub strong_identity: f64,
}

/// Evaluates [`AccelerationRates`] for neuron `k` at `x` with the population gradient
/// ([`crate::moments::population::evaluate`]).
pub fn acceleration_rates(
    config: &Config,
    x: &Reduced<f64>,
    k: usize,
) -> Result<AccelerationRates> {
    let constants = Constants::<f64>::new(&config.setting, ());
    let with_head = evaluate(&constants, &config.model, x)?;
    let mut reset = x.clone();
    reset.e = Square::identity(x.neurons(), ());
    let with_identity = evaluate(&constants, &config.model, &reset)?;
    Ok(AccelerationRates {
        weak_head: -with_head.grad_b[k] / x.b[k],
        weak_identity: -with_identity.grad_b[k] / x.b[k],
        strong_head: -with_head.grad_a[k] / x.a[k],
        strong_identity: -with_identity.grad_a[k] / x.a[k],
    })
}

/// The state of the flow of `config` from `x0` at its first sample at or after `tau` (the
/// flow samples every event, so at an event time this is the state there).
fn state_at(config: &Config, x0: &Reduced<f64>, tau: f64) -> Result<Reduced<f64>> {
    let mut at: Option<Reduced<f64>> = None;
    flow(config, x0, &mut |t, x| {
        if at.is_none() && t >= tau {
            at = Some(x.clone());
        }
        Ok(())
    })?;
    at.ok_or_else(|| Error::numerical("report runner", format!("no sample at flow time {tau}")))
}

/// Lemma 5.1's clauses (ii) and (iii) at the state at `t1` (issue 21, item 5): the largest
/// feature coordinate other than the strong neuron's `v1` (`max(abs(b_j))` over all
/// neurons and `abs(a_j)` over `j != s`), and `||E - I||_F`. Runs that never reach `t1` get
/// the summary alone.
///
/// # Errors
/// A flow error.
pub fn at_t1(config: &Config, x0: &Reduced<f64>) -> Result<Value> {
    let first = flow(config, x0, &mut |_, _| Ok(()))?;
    at_t1_of(config, x0, &first)
}

/// [`at_t1`] given the flow's summary `first`.
fn at_t1_of(config: &Config, x0: &Reduced<f64>, first: &Summary) -> Result<Value> {
    let (Some(t1), Some(s)) = (first.t1, first.strong_neuron) else {
        return Ok(json!({ "summary": to_value(first)? }));
    };
    let x1 = state_at(config, x0, t1)?;
    let m = x1.neurons();
    let other = (0..m)
        .map(|j| x1.b[j].abs())
        .chain((0..m).filter(|&j| j != s).map(|j| x1.a[j].abs()))
        .fold(0.0, f64::max);
    let dev = (0..m)
        .flat_map(|i| (0..m).map(move |j| (i, j)))
        .map(|(i, j)| {
            let delta = if i == j { 1.0 } else { 0.0 };
            (x1.e.at(i, j) - delta).powi(2)
        })
        .sum::<f64>()
        .sqrt();
    Ok(json!({
        "summary": to_value(first)?,
        "other_features_t1": other,
        "head_dev_t1": dev,
    }))
}

/// The replicates (the spec's seeds `0..SENSITIVITY_REPLICATES`) for which the
/// sensitivity runners `flow-sens` and `flow-t1-sens` add the forward sensitivities: an
/// augmented run costs about 20-60 plain runs (`benches/README.md`, "Sensitivities").
pub const SENSITIVITY_REPLICATES: u64 = 8;

/// The augmented run of the sensitivity runners ends at this multiple of the plain run's
/// `t2` (else `t1`): the derivatives of `t1` and `t2` do not depend on the flow after them,
/// and the stiff phase after `t2` is most of a whole run's cost (before eq. (Y18) of
/// `derivations/sensitivities.md` it was also where the augmented run's step underflowed at
/// large d).
pub const SENSITIVITY_HORIZON: f64 = 1.1;

/// `flow-t1-sens` also integrates the plain flow from the draw moved to `DECADE d` with its
/// standardized draw held (eq. (Y7)): the other end of the decade on the curve whose
/// derivative `d t1 / d ln d` is.
pub const DECADE: u64 = 10;

/// The `sens` object of the sensitivity runners at the state `x0` of `config`, given the
/// plain run's summary `first`: the augmented run's `t1`, `t2` and their derivatives
/// `d_t1`, `d_t2` with respect to each of `params` (by name; `null` where the event does
/// not happen), its accepted steps, and with `next` the plain flow's `t1` at `DECADE d`
/// from the held draw (`t1_next`). A failed augmented run is `{"error": text}` (recorded,
/// never dropped); a run without `t1` is `{"skipped": text}`.
///
/// # Errors
/// A failure of the plain flow at `DECADE d` (the augmented run's failures are recorded).
pub(crate) fn sensitivity_record(
    config: &Config,
    x0: &Reduced<f64>,
    first: &Summary,
    params: &[Parameter],
    next: bool,
) -> Result<Value> {
    let Some(t1) = first.t1 else {
        return Ok(json!({ "skipped": "no t1 in the plain run" }));
    };
    let mut opts = SensitivityOptions::from_options(&flow_options(config));
    opts.horizon = (SENSITIVITY_HORIZON * first.t2.unwrap_or(t1)).min(config.training.horizon);
    let s = match sensitivities(config, x0, true, params, &opts) {
        Ok(s) => s,
        Err(e) => return Ok(json!({ "error": e.to_string() })),
    };
    let by_name = |row: &Option<Vec<f64>>| match row {
        Some(v) => Value::Object(
            params
                .iter()
                .zip(v)
                .map(|(p, x)| (p.name(), json!(x)))
                .collect(),
        ),
        None => Value::Null,
    };
    let mut out = json!({
        "t1": s.event_times[0],
        "t2": s.event_times[1],
        "d_t1": by_name(&s.events[0]),
        "d_t2": by_name(&s.events[1]),
        "steps": s.steps[0],
    });
    if next {
        out["t1_next"] = json!(t1_held(config, x0, DECADE)?);
    }
    Ok(out)
}

/// The plain flow's `t1` at `k d` (the fixed family: only `d` and the horizon
/// `horizon k^2` move) from the draw `x0` at `d` moved there with its standardized draw
/// held (`flow::sensitivity::params::standardized_init`, eq. (Y7)).
///
/// # Errors
/// `k d` overflows, or a flow error.
fn t1_held(config: &Config, x0: &Reduced<f64>, k: u64) -> Result<Option<f64>> {
    let d = config.setting.dim;
    let mut c = config.clone();
    c.setting.dim = d
        .checked_mul(k)
        .ok_or_else(|| Error::invalid("setting.dim", format!("{d} times {k} overflows")))?;
    c.training.horizon *= (k * k) as f64;
    let x = standardized_init(x0, d as f64, c.setting.dim as f64)?;
    Ok(flow(&c, &x, &mut |_, _| Ok(()))?.t1)
}

/// The runners `flow-sens` and `flow-t1-sens`: `flow` (resp. `flow-t1`), plus for the
/// replicates below [`SENSITIVITY_REPLICATES`] the object `sens`
/// ([`sensitivity_record`]): `ln_d_family` and `ln_d` for `flow-sens` (the paper
/// family), `ln_d` with `t1_next` for `flow-t1-sens` (the fixed family).
fn with_sensitivities(task: &Task, t1_clauses: bool) -> Result<Value> {
    let config = &task.config;
    let x0 = init::reduced(&config.setting, task.seed)?;
    let first = flow(config, &x0, &mut |_, _| Ok(()))?;
    let mut out = if t1_clauses {
        at_t1_of(config, &x0, &first)?
    } else {
        json!({ "summary": to_value(&first)? })
    };
    if task.replicate < SENSITIVITY_REPLICATES {
        let params: &[Parameter] = if t1_clauses {
            &[Parameter::LnD]
        } else {
            &[Parameter::LnDFamily, Parameter::LnD]
        };
        out["sens"] = sensitivity_record(config, &x0, &first, params, t1_clauses)?;
    }
    Ok(out)
}

/// One arm of the Lemma 5.3 intervention: the flow of `config` from `x` for flow time
/// `horizon` (stopped at `t_end` when `stop_at_t_end`); returns the first sampled flow time
/// (from `x`) at which `abs(b_k) >= target`, and the arm's summary.
fn weak_time(
    config: &Config,
    x: &Reduced<f64>,
    k: usize,
    horizon: f64,
    stop_at_t_end: bool,
) -> Result<(Option<f64>, Summary)> {
    let target = config.phases.t1;
    let mut o = flow_options(config);
    o.stop_at_t_end = stop_at_t_end;
    o.horizon = horizon;
    let mut hit = None;
    let run = integrate::<f64>(config, x, &o, &mut |tau, y| {
        if hit.is_none() && y.b[k].abs() >= target {
            hit = Some(tau);
        }
        Ok(())
    })?;
    Ok((hit, run.summary))
}

/// Lemma 5.3 as an intervention (issue 21, item 5): from each run's state at `t2`, the
/// substituted neuron `k` (the `k != s` with the largest `abs(E_ks)`) continues under three
/// arms for the rest of the horizon: (a) the head trained (stopped at `t_end`), (b) `E`
/// reset to `I` and frozen, (c) `E` frozen where it is, (d) the head trained with
/// stop-gradient off, (e) the head trained without batchnorm; and from the state at `t1`
/// (before the substitution), (a) and (b) again (`weak_time_head_t1`,
/// `weak_time_reset_t1`, times from `t1`). Each arm reports the flow time until
/// `abs(b_k) >= t1`-threshold (`null`: not within the horizon) and, from `t2`, its outcome
/// class (E7). The head accelerates the weak feature when (a) reaches it much sooner
/// than (b).
///
/// # Errors
/// A flow error in any arm.
pub fn intervention(config: &Config, x0: &Reduced<f64>) -> Result<Value> {
    let (first, substitution) = at_substitution(config, x0)?;
    let Some((t2, x2, s, k)) = substitution else {
        return Ok(json!({ "summary": to_value(&first)?, "reached_t2": false }));
    };
    let rest = (config.training.horizon - t2).max(0.0);
    let (head, head_run) = weak_time(config, &x2, k, rest, true)?;
    let mut frozen_config = config.clone();
    frozen_config.model.head = crate::setting::HeadMode::Frozen;
    let mut reset = x2.clone();
    reset.e = Square::identity(x2.neurons(), ());
    let (reset_time, reset_run) = weak_time(&frozen_config, &reset, k, rest, false)?;
    let (frozen_time, frozen_run) = weak_time(&frozen_config, &x2, k, rest, false)?;
    // (d), (e): the head trained, with stop-gradient off, or without batchnorm.
    let mut sg_off = config.clone();
    sg_off.model.stop_gradient = false;
    let (sg_time, sg_run) = weak_time(&sg_off, &x2, k, rest, true)?;
    let mut bn_off = config.clone();
    bn_off.model.normalization = crate::setting::Normalization::None;
    let (bn_time, bn_run) = weak_time(&bn_off, &x2, k, rest, true)?;
    // From t1 (before the substitution): the head trained, and reset to I and frozen.
    let (t1_head, t1_reset) = match first.t1 {
        Some(t1) => {
            let x1 = state_at(config, x0, t1)?;
            let rest1 = (config.training.horizon - t1).max(0.0);
            let mut reset1 = x1.clone();
            reset1.e = Square::identity(x1.neurons(), ());
            (
                weak_time(config, &x1, k, rest1, true)?.0,
                weak_time(&frozen_config, &reset1, k, rest1, false)?.0,
            )
        }
        None => (None, None),
    };
    let r = acceleration_rates(config, &x2, k)?;
    Ok(json!({
        "summary": to_value(&first)?,
        "reached_t2": true,
        "t2": t2,
        "neuron": k,
        "b_k": x2.b[k],
        "weak_time_head": head,
        "weak_time_reset": reset_time,
        "weak_time_frozen": frozen_time,
        "class_head": head_run.outcome_class.name(),
        "class_reset": reset_run.outcome_class.name(),
        "class_frozen": frozen_run.outcome_class.name(),
        "weak_time_sg_off": sg_time,
        "weak_time_bn_off": bn_time,
        "class_sg_off": sg_run.outcome_class.name(),
        "class_bn_off": bn_run.outcome_class.name(),
        "weak_time_head_t1": t1_head,
        "weak_time_reset_t1": t1_reset,
        "a_k": x2.a[k],
        "e_ks": x2.e.at(k, s),
        "weak_head": r.weak_head,
        "weak_identity": r.weak_identity,
        "strong_head": r.strong_head,
        "strong_identity": r.strong_identity,
    }))
}

/// Keeps at most `n` evenly spaced entries of `v` (always the first and the last).
fn thin<T: Clone>(v: &[T], n: usize) -> Vec<T> {
    if v.len() <= n || n < 2 {
        return v.to_vec();
    }
    (0..n)
        .map(|i| v[i * (v.len() - 1) / (n - 1)].clone())
        .collect()
}

/// Runner `trajectory`: the flow's summary and `||E - diag(E)||_F`, `||E - E^T||_F` at
/// [`TRAJECTORY_POINTS`] of its accepted steps.
fn trajectory(config: &Config, x0: &Reduced<f64>) -> Result<Value> {
    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    let summary = flow(config, x0, &mut |tau, x| {
        samples.push((tau, offdiag_norm(x), asymmetry(x)));
        Ok(())
    })?;
    let kept = thin(&samples, TRAJECTORY_POINTS);
    Ok(json!({
        "summary": to_value(&summary)?,
        "tau": kept.iter().map(|s| s.0).collect::<Vec<_>>(),
        "offdiag": kept.iter().map(|s| s.1).collect::<Vec<_>>(),
        "asym": kept.iter().map(|s| s.2).collect::<Vec<_>>(),
    }))
}

/// `(t2, the state at t2, the strong neuron s, the substituted neuron k)`.
type Substitution = (f64, Reduced<f64>, usize, usize);

/// The flow of `config` from `x0` and, when it reaches `t2` with a strong neuron `s`, the
/// flow time `t2`, the state there, `s` and the substituted neuron: the `k != s` with the
/// largest carried feature `abs(E_ks)`.
///
/// # Errors
/// A flow error, or fewer than two neurons.
fn at_substitution(config: &Config, x0: &Reduced<f64>) -> Result<(Summary, Option<Substitution>)> {
    let first = flow(config, x0, &mut |_, _| Ok(()))?;
    let (Some(t2), Some(s)) = (first.t2, first.strong_neuron) else {
        return Ok((first, None));
    };
    let x2 = state_at(config, x0, t2)?;
    let k = (0..x2.neurons())
        .filter(|&j| j != s)
        .max_by(|&i, &j| x2.e.at(i, s).abs().total_cmp(&x2.e.at(j, s).abs()))
        .ok_or_else(|| Error::invalid("setting.neurons", "needs 2 neurons"))?;
    Ok((first, Some((t2, x2, s, k))))
}

/// Runner `acceleration`: the flow's summary and, at `t2`, the growth rates of the
/// substituted neuron's features ([`acceleration_rates`]).
fn acceleration(config: &Config, x0: &Reduced<f64>) -> Result<Value> {
    let (first, substitution) = at_substitution(config, x0)?;
    let Some((t2, x2, s, k)) = substitution else {
        return Ok(json!({ "summary": to_value(&first)?, "reached_t2": false }));
    };
    let r = acceleration_rates(config, &x2, k)?;
    Ok(json!({
        "summary": to_value(&first)?,
        "reached_t2": true,
        "t2": t2,
        "neuron": k,
        "a_k": x2.a[k],
        "b_k": x2.b[k],
        "e_ks": x2.e.at(k, s),
        "weak_head": r.weak_head,
        "weak_identity": r.weak_identity,
        "strong_head": r.strong_head,
        "strong_identity": r.strong_identity,
    }))
}

impl TaskRunner for ModelRunner {
    /// The `sgd-reduced-ref-nowishart` tasks: the run's configuration with `d` replaced by
    /// its noise rank (the chain's only use of `d` without the Wishart term), so tasks that
    /// differ in `d` alone share one run. Every other runner: `None`.
    fn share_key(&self, task: &Task) -> Option<String> {
        if task.point.runner != "sgd-reduced-ref-nowishart" {
            return None;
        }
        let (mut config, _) = reference_start(&task.config).ok()?;
        let rank = crate::sgd_reduced::rank(&config);
        config.setting.dim = REFERENCE_DIM;
        Some(format!(
            "{}\n{}\nrank {rank}\n{}",
            task.point.runner,
            task.seed,
            config.to_toml()
        ))
    }

    fn run(&self, task: &Task) -> Result<Value> {
        let config = &task.config;
        let mut none = |_: f64, _: &Reduced<f64>| Ok(());
        match task.point.runner.as_str() {
            "flow" => {
                let x0 = init::reduced(&config.setting, task.seed)?;
                to_value(&flow(config, &x0, &mut none)?)
            }
            "flow-converge" => {
                let x0 = init::reduced(&config.setting, task.seed)?;
                to_value(&flow_converge(config, &x0)?)
            }
            "flow-corr" => {
                let x0 = init::reduced(&config.setting, task.seed)?;
                let run = integrate::<f64>(config, &x0, &flow_options(config), &mut none)?;
                Ok(json!({
                    "summary": to_value(&run.summary)?,
                    "corr_gap_final": corr_gap(&config.setting, &run.final_state),
                }))
            }
            "flow-explicit" => {
                let w0 = init::explicit(&config.setting, task.seed)?;
                let x0 = reduce::<f64>(&w0, ());
                to_value(&flow(config, &x0, &mut none)?)
            }
            "trajectory" => {
                let x0 = init::reduced(&config.setting, task.seed)?;
                trajectory(config, &x0)
            }
            "acceleration" => {
                let x0 = init::reduced(&config.setting, task.seed)?;
                acceleration(config, &x0)
            }
            "sgd-reduced" => {
                let x0 = init::reduced(&config.setting, task.seed)?;
                sgd_reduced(config, x0, task.seed, Variant::Exact)
            }
            "flow-ref" => {
                let (config, x0) = reference_start(config)?;
                to_value(&flow(&config, &x0, &mut none)?)
            }
            "sgd-reduced-ref" | "sgd-reduced-ref-nowishart" => {
                let (config, x0) = reference_start(config)?;
                let variant = if task.point.runner.ends_with("nowishart") {
                    Variant::NoWishart
                } else {
                    Variant::Exact
                };
                sgd_reduced(&config, x0, task.seed, variant)
            }
            "flow-t1" => {
                let x0 = init::reduced(&config.setting, task.seed)?;
                at_t1(config, &x0)
            }
            "flow-sens" => with_sensitivities(task, false),
            "flow-t1-sens" => with_sensitivities(task, true),
            "intervention" => {
                let x0 = init::reduced(&config.setting, task.seed)?;
                intervention(config, &x0)
            }
            "flow-at" => {
                let x0 = init::reduced(&config.setting, task.seed)?;
                flow_at(config, &x0)
            }
            "sgd" => {
                let config = with_sgd_steps(config)?;
                let w0 = init::explicit(&config.setting, task.seed)?;
                let mut sgd = crate::sgd::Sgd::new(&config, w0, task.seed)?;
                let summary = crate::sgd::run(
                    &mut sgd,
                    crate::sgd::RunOptions {
                        record: crate::observe::Cadence::ENDS,
                        stop_at_t_end: true,
                    },
                    None::<&mut TrajectoryRecorder<std::io::Sink>>,
                    |_| {},
                )?;
                to_value(&summary)
            }
            other => Err(Error::invalid(
                "runner",
                format!(
                    "unknown runner \"{other}\", expected one of {}",
                    RUNNERS.join(", ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema check accepts the results the runners write and rejects each planted
    /// type error (its falsifiers).
    #[test]
    fn the_result_schema_rejects_wrong_types() {
        let good = json!({
            "t1": 12.5, "t2": null, "t3": null, "t_end": null, "strong_neuron": 0,
            "offdiag_peak": 0.1, "offdiag_final": 0.0, "corr_final": null, "loss_final": 1.0,
            "opt": 0.5, "a_final": [1.0, 0.5], "b_final": [0.1, null], "outcome": "partial",
            "termination": "horizon", "tau_final": 3.0, "steps": 10,
        });
        assert_eq!(check_result(&good), Ok(()));
        assert_eq!(
            check_result(&json!({ "summary": good, "corr_gap_final": 1e-3 })),
            Ok(())
        );
        assert_eq!(
            check_result(&json!({ "error": "setting.dim: too small" })),
            Ok(())
        );
        let planted = |key: &str, v: Value| {
            let mut bad = good.clone();
            bad[key] = v;
            check_result(&bad)
        };
        assert!(planted("t1", json!("abc")).unwrap_err().starts_with("t1:"));
        assert!(planted("loss_final", json!([1.0])).is_err());
        assert!(planted("outcome", json!(1)).is_err());
        assert!(planted("a_final", json!(["x"])).is_err());
        assert!(check_result(&json!({ "summary": good, "corr_gap_final": "0" })).is_err());
        assert!(check_result(&json!({ "error": "x", "t1": 1.0 })).is_err());
        assert!(check_result(&json!({ "error": 3 })).is_err());
        assert!(check_result(&json!({ "t1": 1.0 })).is_err());
        assert!(check_result(&json!(1)).is_err());
        // The sensitivity runners' `sens` object, and its planted type errors.
        let sens = json!({ "t1": 2.0, "t2": null, "d_t1": { "ln_d": 4.0 }, "d_t2": null,
            "steps": 10, "t1_next": 210.0 });
        assert_eq!(
            check_result(&json!({ "summary": good, "sens": sens })),
            Ok(())
        );
        let fail = json!({ "error": "sensitivities: step underflow at tau = 1" });
        assert_eq!(
            check_result(&json!({ "summary": good, "sens": fail })),
            Ok(())
        );
        let mut bad = sens.clone();
        bad["d_t1"]["ln_d"] = json!("4");
        let err = check_result(&json!({ "summary": good, "sens": bad })).unwrap_err();
        assert!(err.starts_with("sens.d_t1"), "{err}");
        assert!(check_result(&json!({ "summary": good, "sens": { "t1": [1] } })).is_err());
        assert!(check_result(&json!({ "summary": good, "sens": { "error": 1 } })).is_err());
    }

    /// The tasks of a small `lr_crit`-like spec with `runner` at `d = 100, 200` and
    /// `lr d = 2, 1`: tasks 1 (`d = 100`) and 2 (`d = 200`) have the same `lr = 0.01`.
    fn ref_tasks(runner: &str) -> Vec<Task> {
        let text = format!(
            "report = \"lr_crit\"\nseeds = 1\nhorizon_factor = 0.0001\n[axes]\n\
             dim = [100, 200]\nrunner = [\"{runner}\"]\nlr_d = [2.0, 1.0]\n\
             [base.setting]\ndim = 100\npatches = 4\nfeature_patches = 2\n\
             alpha = [3.0, 2.0]\nnoise_std = 1.0\nneurons = 2\n[base.model]\n\
             head = \"identity-offdiag\"\nnormalization = \"batchnorm\"\n\
             stop_gradient = true\n[base.training]\nlr = 0.01\nlr_head = 0.01\nbatch = 64\n"
        );
        let spec = crate::sweep::Spec::parse(&text, "t", std::path::Path::new(".")).unwrap();
        spec.tasks(false).unwrap()
    }

    /// The no-Wishart chain at one `lr` is bit-identical at `d = 100` and `200`, and the two
    /// tasks share a key (so sharing the run is exact), while tasks at another `lr` do not.
    /// Falsifier: the exact chain, whose Wishart term sees `d`, differs between the same two
    /// tasks (so the equality can fail), and has no share key.
    #[test]
    fn the_no_wishart_chain_is_blind_to_d() {
        let r = ModelRunner;
        let t = ref_tasks("sgd-reduced-ref-nowishart");
        assert_eq!(t[1].config.training.lr, t[2].config.training.lr);
        assert!(r.share_key(&t[1]).is_some());
        assert_eq!(r.share_key(&t[1]), r.share_key(&t[2]));
        assert_ne!(r.share_key(&t[0]), r.share_key(&t[1]));
        assert_eq!(r.run(&t[1]).unwrap(), r.run(&t[2]).unwrap());
        let e = ref_tasks("sgd-reduced-ref");
        assert_eq!(r.share_key(&e[1]), None);
        assert_ne!(r.run(&e[1]).unwrap(), r.run(&e[2]).unwrap());
    }
}
