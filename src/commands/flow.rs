//! `predhead flow` (see `../shared/contract.md`): integrates the exact population gradient
//! flow in reduced coordinates ([`crate::flow`]) and reports the phase events and the
//! outcome ([`crate::observe`]).
//!
//! `--seed S` draws the exact reduced initialization ([`crate::init::reduced`]: the law of
//! the paper's `W(0) ~ N(0, 1/d)`, `E = I`, in reduced coordinates, for any `d`); `--state`
//! reduces an explicit STATE.json; neither means `--seed 0`; both is an error. `--json`
//! prints one JSON object (the contract keys first, then extras); otherwise a short human
//! summary. `--out` writes the trajectory CSV (columns in `derivations/phases.md`).
//!
//! Unless `--no-error-estimate` is given, a companion run at `10 * rtol` estimates the
//! relative error of each event time, and the run is refined to `rtol / 10`, at most
//! `--max-refinements` times, while an estimate exceeds `--event-rtol`
//! ([`crate::flow::global_error`]). The reported run, its CSV included, is the last one.

use crate::config::load_config;
use crate::error::{Error, Result};
use crate::flow::control::Tolerance;
use crate::flow::global_error::{self, Check, Checked, EventErrors, Role};
use crate::flow::problem::Coordinates;
use crate::flow::sensitivity::{self, Base, Parameter, Sensitivities, SensitivityOptions};
use crate::flow::{integrate, Explicit, Method, Options, Run, Stiff};
use crate::moments::population::Reduced;
use crate::observe::{Summary, TrajectoryRecorder};
use crate::setting::Config;
use crate::state::State;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Arguments of `predhead flow`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The configuration file (TOML); `[training]` lr, lr_head, horizon; `[phases]`.
    #[arg(long)]
    pub config: PathBuf,
    /// Draw the exact reduced initialization from this seed (default 0).
    #[arg(long, conflicts_with = "state")]
    pub seed: Option<u64>,
    /// Start from this explicit state (STATE.json) instead.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write the trajectory CSV (the start, one row per accepted step and per event, the end)
    /// to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Record a CSV row every K accepted steps (default 1: every step; the start, the events
    /// and the end always).
    #[arg(long, value_name = "K")]
    pub record_every: Option<u64>,
    /// Relative tolerance of the local error (default 1e-9).
    #[arg(long, default_value_t = Options::DEFAULT_RTOL)]
    pub rtol: f64,
    /// Absolute tolerance of the local error (default 1e-4 * rtol / sqrt(d)).
    #[arg(long)]
    pub atol: Option<f64>,
    /// Absolute tolerance of the head's entries (default 1e-3 * rtol).
    #[arg(long)]
    pub atol_head: Option<f64>,
    /// Integrator: auto (explicit, Rosenbrock once stiff), explicit or rosenbrock.
    #[arg(long, value_enum, default_value_t = Method::Auto, hide_possible_values = true)]
    pub method: Method,
    /// Explicit pair: dop853 (order 8) or dopri5 (Dormand-Prince 5(4)).
    #[arg(long, value_enum, default_value_t = Explicit::Dop853, hide_possible_values = true)]
    pub explicit: Explicit,
    /// Rosenbrock method: rodas5 (order 5, L-stable) or ros4 (Shampine's 4(3)).
    #[arg(long, value_enum, default_value_t = Stiff::Rodas5, hide_possible_values = true)]
    pub stiff: Stiff,
    /// Stop at t_end instead of integrating to the horizon.
    #[arg(long)]
    pub stop_at_t_end: bool,
    /// Coordinates of the state vector: decay (default when every noise part is non-zero,
    /// else plain) or plain (derivations/numerics.md, (F1)-(F2)).
    #[arg(long)]
    pub coordinates: Option<String>,
    /// The largest accepted estimate of an event time's relative error: above it (or when
    /// the companion run disagrees on which events happen) the run is repeated at
    /// rtol / 10 (derivations/numerics.md, "Global error of the event times").
    #[arg(long, default_value_t = Check::DEFAULT_TARGET)]
    pub event_rtol: f64,
    /// At most this many refinements (each divides every tolerance by 10; after an unresolved
    /// t2 the head's absolute one further, derivations/numerics.md, (G3)).
    #[arg(long, default_value_t = Check::DEFAULT_MAX_REFINEMENTS)]
    pub max_refinements: u32,
    /// Skip the companion run: no estimate of the event times' error, no refinement.
    #[arg(long)]
    pub no_error_estimate: bool,
    /// Also run the validated flow: certified enclosures of the event times and the outcome
    /// (docs/cli.md, "flow --certify"; derivations/interval.md, (V11)-(V22)).
    #[arg(long)]
    pub certify: bool,
    /// Derivatives of the event times and final quantities with respect to these
    /// parameters (comma-separated: ln_d, ln_d_family, alpha1, alpha2, s, lr_head/lr, P0/P,
    /// a_J, b_J, g_J_K, e_J_R), added as the JSON key `sensitivities`
    /// (derivations/sensitivities.md).
    #[arg(long)]
    pub sensitivities: Option<String>,
    /// With --sensitivities: also write them as a CSV (one row per quantity, one column per
    /// parameter) to this file.
    #[arg(long, requires = "sensitivities")]
    pub sensitivities_csv: Option<PathBuf>,
}

/// The JSON output: the summary, then the integrator's extras.
#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    horizon: f64,
    method: Method,
    explicit: Explicit,
    stiff: Stiff,
    coordinates: Coordinates,
    rtol: f64,
    atol: f64,
    /// The head's absolute tolerance of the reported run (smaller than in proportion to
    /// `rtol` after a refinement for an unresolved event, derivations/numerics.md, (G3)).
    atol_head: f64,
    stiff_from: Option<f64>,
    ros4_from: Option<f64>,
    explicit_steps: u64,
    rosenbrock_steps: u64,
    /// Steps of Shampine's method in which some components of the cubic Hermite extension
    /// had slopes with relaxed fast modes and follow the chord (derivations/numerics.md,
    /// "Events").
    fast_mode_steps: u64,
    /// Flow time of the first step in extended precision (`null`: none).
    extended_from: Option<f64>,
    /// Accepted steps taken in extended precision.
    extended_steps: u64,
    /// How often a stall after a spent budget of extended attempts armed the probe again.
    extended_rearms: u64,
    /// `|E_ks|` at `t2`: the head entry that carries the substitution.
    t2_head_entry: Option<f64>,
    /// Events that the reported run's tolerance does not resolve (derivations/numerics.md,
    /// (G2)).
    unresolved_events: Vec<&'static str>,
    /// The relative tolerance asked for (`rtol` is that of the reported run, smaller after
    /// refinements).
    rtol_requested: f64,
    /// The estimated relative error of each event time (`null`: the event happens in
    /// neither run; the whole object is `null` without an estimate).
    event_error: Option<EventErrors>,
    /// Whether every estimate is at most `event_error_target` and the compared runs agree
    /// on the events, the strong neuron and the outcome (`null`: no estimate).
    event_error_met: Option<bool>,
    event_error_target: f64,
    /// The keys on which the compared runs disagree.
    event_error_differs: Vec<&'static str>,
    /// The relative tolerance of the run compared with the reported one.
    compared_rtol: Option<f64>,
    refinements: u32,
    /// Right-hand-side evaluations of the runs not reported.
    check_rhs_evals: u64,
    /// Why a companion or a refinement failed.
    check_error: Option<String>,
    init: String,
    /// The validated flow (`--certify` only; absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    certify: Option<crate::validated::CertifyReport>,
    /// `--sensitivities`: each quantity's derivatives by parameter (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    sensitivities: Option<serde_json::Value>,
}

/// The integration options that the command's flags set (method, pairs, coordinates, stop
/// at `t_end`, the CSV's cadence) on top of [`Options::new`]; the tolerances are set per run by `run`.
fn base_options(args: &Args, config: &Config) -> Result<Options> {
    let coordinates = match args.coordinates.as_deref() {
        None => None,
        Some("plain") => Some(Coordinates::Plain),
        Some("decay") => Some(Coordinates::Decay),
        Some(other) => {
            return Err(Error::invalid(
                "--coordinates",
                format!("expected plain or decay, got {other:?}"),
            ))
        }
    };
    let mut base = Options::new(config);
    base.method = args.method;
    base.explicit = args.explicit;
    base.stiff = args.stiff;
    base.stop_at_t_end = args.stop_at_t_end;
    base.coordinates = coordinates;
    base.record = match args.record_every {
        Some(k) => crate::observe::Cadence::every(k)?,
        None => crate::observe::Cadence::EVERY_STEP,
    };
    Ok(base)
}

/// Runs `predhead flow`: returns the summary text for stdout.
pub fn run(args: &Args) -> Result<String> {
    let config = load_config(&args.config)?;
    let setting = &config.setting;
    let base = base_options(args, &config)?;
    let opts_at =
        |rtol: f64, head_scale: f64| options_at(args, setting.dim, &base, rtol, head_scale);
    let opts = opts_at(args.rtol, 1.0);
    check_tolerances(&opts.tol, args.event_rtol)?;
    let (x0, init) = initial_state(args, &config)?;
    let params = sensitivity_params(args, &config, &x0)?;
    let check = Check {
        target: args.event_rtol,
        max_refinements: args.max_refinements,
        ..Check::default()
    };
    let bar = Progress::new(opts.horizon);
    let mut run_at = |rtol: f64, head_scale: f64, role: Role| -> Result<Run> {
        let opts = opts_at(rtol, head_scale);
        bar.start(rtol, role);
        let mut tick = |t: f64| bar.at(t);
        match (&args.out, role) {
            (Some(path), Role::Reported) => record_run(&config, &x0, &opts, path, &mut tick),
            _ => integrate(&config, &x0, &opts, &mut |t, _| {
                tick(t);
                Ok(())
            }),
        }
    };
    // The estimate needs a relative tolerance to scale.
    let estimated = !args.no_error_estimate && args.rtol > 0.0;
    let checked = if estimated {
        global_error::checked(args.rtol, &check, &mut run_at)?
    } else {
        let mut single = Checked::single(run_at(args.rtol, 1.0, Role::Reported)?, args.rtol);
        if !args.no_error_estimate {
            single.check_error = Some("no estimate at rtol = 0".to_string());
        }
        single
    };
    bar.finish();
    let certify = if args.certify {
        Some(certify_report(args, &config, &x0, opts.horizon)?)
    } else {
        None
    };
    let reported = opts_at(checked.rtol, checked.head_scale);
    let run = &checked.run;
    let sens = match &params {
        Some(p) => Some(sensitivities_of(args, &config, &x0, p, &reported, run)?),
        None => None,
    };
    if args.json {
        let report = Report {
            summary: &run.summary,
            horizon: opts.horizon,
            method: base.method,
            explicit: base.explicit,
            stiff: base.stiff,
            coordinates: run.coordinates,
            rtol: reported.tol.rtol,
            atol: reported.tol.atol,
            atol_head: run.atol_head,
            stiff_from: run.stiff_from,
            ros4_from: run.fallback_from,
            explicit_steps: run.steps_by_method[0],
            rosenbrock_steps: run.steps_by_method[1],
            fast_mode_steps: run.fast_mode_steps,
            extended_from: run.extended_from,
            extended_steps: run.extended_steps,
            extended_rearms: run.extended_rearms,
            t2_head_entry: run.t2_head_entry,
            unresolved_events: run.unresolved.iter().map(|e| e.name()).collect(),
            rtol_requested: opts.tol.rtol,
            event_error: checked.comparison.as_ref().map(|c| c.errors),
            event_error_met: estimated.then(|| checked.met(check.target)),
            event_error_target: check.target,
            event_error_differs: checked
                .comparison
                .as_ref()
                .map_or_else(Vec::new, |c| c.differs.clone()),
            compared_rtol: checked.compared_rtol,
            refinements: checked.refinements,
            check_rhs_evals: checked.check_rhs_evals,
            check_error: checked.check_error.clone(),
            init,
            certify,
            sensitivities: sens.as_ref().map(Sensitivities::to_json),
        };
        let text = serde_json::to_string(&report)
            .map_err(|e| Error::numerical("summary", e.to_string()))?;
        Ok(text + "\n")
    } else {
        let check = estimated.then_some(&check);
        text_output(&checked, check, certify.as_ref(), sens.as_ref())
    }
}

/// The options at relative tolerance `rtol`: the given absolute tolerances scaled in
/// proportion, or the defaults at `rtol` (so that a refined run is the run that `--rtol` at
/// its tolerance gives). `head_scale` multiplies the head's absolute tolerance (1 but in a
/// refinement for an unresolved event, eq. (G3)).
fn options_at(args: &Args, dim: u64, base: &Options, rtol: f64, head_scale: f64) -> Options {
    let scale = if rtol == args.rtol {
        1.0
    } else {
        rtol / args.rtol
    };
    Options {
        tol: Tolerance {
            atol: args
                .atol
                .map_or_else(|| Options::default_atol(rtol, dim), |a| a * scale),
            atol_head: head_scale
                * args
                    .atol_head
                    .map_or_else(|| Options::DEFAULT_ATOL_HEAD_FACTOR * rtol, |a| a * scale),
            ..Options::default_tolerance(rtol, dim)
        },
        ..*base
    }
}

/// The text summary of `flow` without `--json`: the run's summary, where the stiff phase
/// began, the event-error estimate (`check`, when one was made), the certificate and the
/// sensitivities when asked for.
fn text_output(
    checked: &Checked,
    check: Option<&Check>,
    certify: Option<&crate::validated::CertifyReport>,
    sens: Option<&Sensitivities>,
) -> Result<String> {
    let run = &checked.run;
    let mut out = run.summary.text();
    out += &format!(
        "stiff (Rosenbrock) from tau = {}\n",
        run.stiff_from
            .map_or("never".to_string(), |t| t.to_string())
    );
    if let Some(check) = check {
        out += &estimate_text(checked, check);
    }
    if let Some(c) = certify {
        out += &format!(
            "certify: {}\n",
            serde_json::to_string(c).map_err(|e| Error::numerical("certify", e.to_string()))?
        );
    }
    if let Some(s) = sens {
        out += &format!("sensitivities: {}\n", s.to_json());
    }
    Ok(out)
}

/// The validated flow from the exact initial state (`--state`: its decimals enclosed; a
/// seed: the `f64` state as given), up to the certified `t_end` or the horizon.
fn certify_report(
    args: &Args,
    config: &Config,
    x0: &Reduced<f64>,
    horizon: f64,
) -> Result<crate::validated::CertifyReport> {
    use crate::validated::{certify_flow, exact_initial_box, tube::TubeOptions, CertifyReport};
    let x0box = match &args.state {
        Some(path) => {
            let read = |p: &Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| Error::invalid("--state", format!("{}: {e}", p.display())))
            };
            let config_text = read(&args.config)?;
            let state_text = read(path)?;
            let state = State::load(path, &config.setting)?;
            let exact = crate::certify::ExactInput::from_text(
                &config_text,
                &config.setting,
                &state_text,
                &state,
            )?;
            exact_initial_box(&exact)
        }
        None => crate::flow::problem::lift(x0, ()),
    };
    let c = certify_flow(config, &x0box, horizon, TubeOptions::default())?;
    Ok(CertifyReport::new(&c))
}

/// The parameters of `--sensitivities`, checked against the configuration (`None`
/// without the flag).
fn sensitivity_params(
    args: &Args,
    config: &Config,
    x0: &Reduced<f64>,
) -> Result<Option<Vec<Parameter>>> {
    let params = args
        .sensitivities
        .as_deref()
        .map(Parameter::parse_list)
        .transpose()?;
    if let Some(p) = &params {
        Base::new(config, x0, args.state.is_none()).check(p)?;
    }
    Ok(params)
}

/// The sensitivities of the reported run's options and coordinates (and their CSV, with
/// `--sensitivities-csv`).
fn sensitivities_of(
    args: &Args,
    config: &Config,
    x0: &Reduced<f64>,
    params: &[Parameter],
    reported: &Options,
    run: &Run,
) -> Result<Sensitivities> {
    let mut so = SensitivityOptions::from_options(reported);
    so.coordinates = Some(run.coordinates);
    let s = sensitivity::sensitivities(config, x0, args.state.is_none(), params, &so)?;
    if let Some(path) = &args.sensitivities_csv {
        write_sensitivities_csv(&s, path)?;
    }
    Ok(s)
}

/// Writes the sensitivities as a CSV: a header `quantity,value,<parameter>..`, then one
/// row per quantity (`t1`, `t2`, `t3`, `t_end`, `loss_final`, `corr_final`, `offdiag_peak`,
/// `t_peak`), empty cells where a quantity is undefined.
fn write_sensitivities_csv(s: &Sensitivities, path: &Path) -> Result<()> {
    let io = |e: std::io::Error| {
        Error::invalid("--sensitivities-csv", format!("{}: {e}", path.display()))
    };
    let mut out = String::from("quantity,value");
    for p in &s.parameters {
        out += &format!(",{}", p.name());
    }
    out += "\n";
    for (name, value, row) in s.rows() {
        out += name;
        out += &format!(",{}", value.map_or(String::new(), |v| format!("{v:?}")));
        for i in 0..s.parameters.len() {
            out += &format!(
                ",{}",
                row.as_ref()
                    .map_or(String::new(), |r| format!("{:?}", r[i]))
            );
        }
        out += "\n";
    }
    std::fs::write(path, out).map_err(io)
}

/// Refuses tolerances that are negative or not finite, `rtol = atol = 0`, and an
/// `--event-rtol` that is not finite and positive, naming the flag.
fn check_tolerances(tol: &Tolerance, event_rtol: f64) -> Result<()> {
    for (name, v) in [
        ("--rtol", tol.rtol),
        ("--atol", tol.atol),
        ("--atol-head", tol.atol_head),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(Error::invalid(
                name,
                format!("must be finite and >= 0, got {v}"),
            ));
        }
    }
    if !(tol.rtol > 0.0 || tol.atol > 0.0) {
        return Err(Error::invalid("--rtol", "rtol and atol cannot both be 0"));
    }
    if !(event_rtol.is_finite() && event_rtol > 0.0) {
        return Err(Error::invalid(
            "--event-rtol",
            format!("must be finite and > 0, got {event_rtol}"),
        ));
    }
    Ok(())
}

/// The initial reduced state of `predhead flow` (`--state`, or the reduced initialization
/// of `--seed`, 0 by default) and its description for the JSON key `init`.
fn initial_state(args: &Args, config: &Config) -> Result<(Reduced<f64>, String)> {
    let setting = &config.setting;
    match (&args.state, args.seed) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "--state",
            "give either --seed or --state, not both",
        )),
        (Some(path), None) => {
            let state = State::load(path, setting)?;
            state.check_model(&config.model)?;
            let x0 = crate::reduced::reduce::<f64>(&state, ());
            check_initial(config, &x0)?;
            Ok((x0, format!("state {}", path.display())))
        }
        (None, seed) => {
            let seed = seed.unwrap_or(0);
            Ok((crate::init::reduced(setting, seed)?, format!("seed {seed}")))
        }
    }
}

/// An initial state at which the population flow is undefined (a zero or overflowing
/// variance, an overflowing loss) is bad input: refused naming `state`, before the
/// integrator would report its right-hand side as not finite.
fn check_initial(config: &Config, x0: &Reduced<f64>) -> Result<()> {
    let k = crate::moments::population::Constants::<f64>::new(&config.setting, ());
    if let Some(what) = crate::sgd::population_overflow(&k, &config.model, x0) {
        return Err(Error::numerical(
            "state",
            format!("the {what} is not finite at this state (overflow)"),
        ));
    }
    crate::moments::population::evaluate(&k, &config.model, x0)
        .map(|_| ())
        .map_err(crate::commands::eval::at_state)
}

/// The human summary's line on the estimate.
fn estimate_text(checked: &Checked, check: &Check) -> String {
    let refined = match checked.refinements {
        0 => String::new(),
        k if checked.head_scale < 1.0 => format!(
            ", after {k} refinement(s) to rtol {:e} and head atol {:e}",
            checked.rtol, checked.run.atol_head
        ),
        k => format!(", after {k} refinement(s) to rtol {:e}", checked.rtol),
    };
    match (&checked.comparison, checked.compared_rtol) {
        (Some(c), Some(rtol)) => {
            let verdict = if c.met(check.target) {
                "within"
            } else {
                "NOT within"
            };
            let mut differs = if c.differs.is_empty() {
                String::new()
            } else {
                format!("; the runs differ in {}", c.differs.join(", "))
            };
            if !c.unresolved.is_empty() {
                differs += &format!("; not resolved: {}", c.unresolved.join(", "));
            }
            format!(
                "event times: relative error estimate {:.1e} (against rtol {rtol:e}), \
                 {verdict} the target {:e}{refined}{differs}\n",
                c.errors.max(),
                check.target
            )
        }
        _ => format!(
            "event times: no error estimate ({}){refined}\n",
            checked.check_error.as_deref().unwrap_or("no companion")
        ),
    }
}

/// A progress bar of the flow on a terminal (stderr; nothing otherwise): the flow time of
/// each run in logarithmic measure, `ln(1 + tau) / ln(1 + horizon)` in thousandths, since
/// the phases of the flow are spread over decades of `tau` (`t1 ~ d^2`, the end phase up
/// to the horizon `1e3 d^2`).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    log_horizon: f64,
}

impl Progress {
    fn new(horizon: f64) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(1000);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("flow {bar:30} {msg} {elapsed}")
            {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            log_horizon: horizon.ln_1p(),
        }
    }

    /// A new run at `rtol` (the reported run, a companion or a refinement).
    fn start(&self, rtol: f64, role: Role) {
        if let Some(b) = &self.bar {
            let what = match role {
                Role::Companion => "companion",
                Role::Reported => "run",
            };
            b.set_prefix(format!("{what} rtol {rtol:.0e}"));
            b.set_position(0);
        }
    }

    /// The run reached flow time `t`.
    fn at(&self, t: f64) {
        if let Some(b) = &self.bar {
            let frac = (t.max(0.0).ln_1p() / self.log_horizon).clamp(0.0, 1.0);
            b.set_position((1000.0 * frac) as u64);
            b.set_message(format!("{}, tau {t:.2e}", b.prefix()));
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    /// Cleared also when a run fails (the error line is then alone on stderr).
    fn drop(&mut self) {
        self.finish();
    }
}

/// One run recorded to the CSV at `path`: written to `path.partial` and renamed when the
/// run succeeds, so that a failed refinement leaves the previous run's CSV in place.
fn record_run(
    config: &Config,
    x0: &Reduced<f64>,
    opts: &Options,
    path: &Path,
    tick: &mut dyn FnMut(f64),
) -> Result<Run> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let result = (|| {
        let mut rec = TrajectoryRecorder::create(&partial, config)?;
        let run = integrate(config, x0, opts, &mut |t, x| {
            tick(t);
            rec.record(t, x)
        })?;
        rec.finish()?;
        Ok(run)
    })();
    match result {
        Ok(run) => {
            std::fs::rename(&partial, path).map_err(|e| Error::io(path, &e))?;
            Ok(run)
        }
        Err(e) => {
            // The run's error is the one to report; a failure to remove the partial file
            // would only hide it.
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}
