//! `predhead flow` (see `../shared/contract.md`): integrates the exact population gradient
//! flow in reduced coordinates ([`crate::flow`]) and reports the phase events and the
//! outcome ([`crate::observe`]).
//!
//! `--seed S` draws the exact reduced initialization ([`crate::init::reduced`]: the law of
//! the paper's `W(0) ~ N(0, 1/d)`, `E = I`, in reduced coordinates, for any `d`); `--state`
//! reduces an explicit STATE.json; neither means `--seed 0`; both is an error. `--json`
//! prints one JSON object (the contract keys first, then extras); otherwise a short human
//! summary. `--out` writes the trajectory CSV (columns in `derivations/phases.md`).

use crate::config::load_config;
use crate::error::{Error, Result};
use crate::flow::control::Tolerance;
use crate::flow::problem::Coordinates;
use crate::flow::{integrate, Explicit, Method, Options, Run, Stiff};
use crate::moments::population::{Constants, Reduced};
use crate::observe::{Summary, TrajectoryRecorder};
use crate::state::State;
use serde::Serialize;
use std::io::BufWriter;
use std::path::PathBuf;

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
    /// Write the trajectory CSV (one row per accepted step and per event) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
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
    #[arg(long, default_value = "auto")]
    pub method: String,
    /// Explicit pair: dop853 (order 8) or dopri5 (Dormand-Prince 5(4)).
    #[arg(long, default_value = "dop853")]
    pub explicit: String,
    /// Rosenbrock method: rodas5 (order 5, L-stable) or ros4 (Shampine's 4(3)).
    #[arg(long, default_value = "rodas5")]
    pub stiff: String,
    /// Stop at t_end instead of integrating to the horizon.
    #[arg(long)]
    pub stop_at_t_end: bool,
    /// Coordinates of the state vector: decay (default when every noise part is non-zero,
    /// else plain) or plain (derivations/numerics.md, (F1)-(F2)).
    #[arg(long)]
    pub coordinates: Option<String>,
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
    init: String,
}

/// Runs `predhead flow`: returns the summary text for stdout.
pub fn run(args: &Args) -> Result<String> {
    let config = load_config(&args.config)?;
    let method = Method::from_name(&args.method).ok_or_else(|| {
        Error::invalid(
            "--method",
            format!(
                "expected auto, explicit or rosenbrock, got {:?}",
                args.method
            ),
        )
    })?;
    let explicit = Explicit::from_name(&args.explicit).ok_or_else(|| {
        Error::invalid(
            "--explicit",
            format!("expected dop853 or dopri5, got {:?}", args.explicit),
        )
    })?;
    let stiff = Stiff::from_name(&args.stiff).ok_or_else(|| {
        Error::invalid(
            "--stiff",
            format!("expected rodas5 or ros4, got {:?}", args.stiff),
        )
    })?;
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
    let atol = args
        .atol
        .unwrap_or_else(|| Options::default_atol(args.rtol, config.setting.dim));
    let atol_head = args.atol_head.unwrap_or(0.0);
    for (name, v) in [
        ("--rtol", args.rtol),
        ("--atol", atol),
        ("--atol-head", atol_head),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(Error::invalid(
                name,
                format!("must be finite and >= 0, got {v}"),
            ));
        }
    }
    if !(args.rtol > 0.0 || atol > 0.0) {
        return Err(Error::invalid("--rtol", "rtol and atol cannot both be 0"));
    }
    let setting = &config.setting;
    let (x0, init): (Reduced<f64>, String) = match (&args.state, args.seed) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "--state",
                "give either --seed or --state, not both",
            ));
        }
        (Some(path), None) => {
            let state = State::load(path, setting)?;
            (
                crate::reduced::reduce::<f64>(&state, ()),
                format!("state {}", path.display()),
            )
        }
        (None, seed) => {
            let seed = seed.unwrap_or(0);
            (crate::init::reduced(setting, seed)?, format!("seed {seed}"))
        }
    };
    let mut opts = Options::new(&config);
    opts.tol = Tolerance {
        atol,
        atol_head: args
            .atol_head
            .unwrap_or(Options::DEFAULT_ATOL_HEAD_FACTOR * args.rtol),
        ..Options::default_tolerance(args.rtol, setting.dim)
    };
    opts.method = method;
    opts.explicit = explicit;
    opts.stiff = stiff;
    opts.stop_at_t_end = args.stop_at_t_end;
    opts.coordinates = coordinates;
    let run: Run = match &args.out {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| Error::io(path, &e))?;
            let constants = Constants::<f64>::new(setting, ());
            let mut rec = TrajectoryRecorder::new(
                BufWriter::new(file),
                constants,
                config.model,
                setting.neurons,
            )?;
            let run = integrate(&config, &x0, &opts, &mut |t, x| rec.record(t, x))?;
            rec.finish()?;
            run
        }
        None => integrate(&config, &x0, &opts, &mut |_, _| Ok(()))?,
    };
    if args.json {
        let report = Report {
            summary: &run.summary,
            horizon: opts.horizon,
            method,
            explicit,
            stiff,
            coordinates: run.coordinates,
            rtol: opts.tol.rtol,
            atol: opts.tol.atol,
            stiff_from: run.stiff_from,
            ros4_from: run.fallback_from,
            explicit_steps: run.steps_by_method[0],
            rosenbrock_steps: run.steps_by_method[1],
            fast_mode_steps: run.fast_mode_steps,
            extended_from: run.extended_from,
            extended_steps: run.extended_steps,
            init,
        };
        let text = serde_json::to_string(&report)
            .map_err(|e| Error::numerical("summary", e.to_string()))?;
        Ok(text + "\n")
    } else {
        let mut out = run.summary.text();
        out += &format!(
            "stiff (Rosenbrock) from tau = {}\n",
            run.stiff_from
                .map_or("never".to_string(), |t| t.to_string())
        );
        Ok(out)
    }
}
