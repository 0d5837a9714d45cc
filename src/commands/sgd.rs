//! `predhead sgd` (see `../shared/contract.md`): Monte Carlo SGD on explicit data
//! ([`crate::sgd`]), summarized by the same observers as `predhead flow`
//! ([`crate::observe`]), with times in flow time `tau = lr * t`.
//!
//! `--seed S` draws the paper's initialization ([`crate::init::explicit`]) and uses `S` as
//! the data seed too; `--state` starts from STATE.json (data seed `--data-seed`, default 0).
//! Neither: `--seed 0`. `--out` writes the trajectory CSV every `--record-every` steps
//! (default: about 1000 rows). `--stop-at-t-end` stops at `t_end` (as in `predhead flow`);
//! otherwise all `[training] steps` are run. A progress bar is drawn on stderr when it is a terminal and
//! `--json` is not given.

use crate::config::load_config;
use crate::error::{Error, Result};
use crate::observe::{Summary, TrajectoryRecorder};
use crate::sgd::{run as run_sgd, RunOptions, Sgd};
use crate::state::State;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Rows of the trajectory CSV when `--record-every` is not given.
pub const DEFAULT_ROWS: u64 = crate::observe::Cadence::DEFAULT_ROWS;

/// Arguments of `predhead sgd`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The configuration file (TOML); `[training]` lr, lr_head, batch, steps.
    #[arg(long)]
    pub config: PathBuf,
    /// Draw the paper's initialization (W ~ N(0, 1/d), E = I) from this seed; also the data
    /// seed unless --data-seed is given. Default 0.
    #[arg(long, conflicts_with = "state")]
    pub seed: Option<u64>,
    /// Start from this explicit state (STATE.json) instead.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// The seed of the data streams (default: --seed, or 0 with --state).
    #[arg(long)]
    pub data_seed: Option<u64>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write the trajectory (reduced coordinates, loss, Corr) as CSV to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Record a CSV row every K steps (default: steps / 1000, at least 1).
    #[arg(long, value_name = "K")]
    pub record_every: Option<u64>,
    /// Stop at t_end instead of running all `[training] steps`.
    #[arg(long)]
    pub stop_at_t_end: bool,
    /// The engine: `explicit` (d-dimensional data) or `reduced` (the same process, exact in
    /// law, at a cost free of d). Default: explicit when its arrays fit, else reduced.
    #[arg(long, value_enum)]
    pub engine: Option<crate::commands::sgd_reduced::Engine>,
}

/// Runs `predhead sgd`: returns the summary text for stdout.
pub fn run(args: &Args) -> Result<String> {
    let config = load_config(&args.config)?;
    if crate::commands::sgd_reduced::Engine::choose(args.engine, &config).is_reduced() {
        return crate::commands::sgd_reduced::run(args, &config);
    }
    let setting = &config.setting;
    if usize::try_from(setting.dim).is_err() || setting.dim > 1 << 32 {
        return Err(Error::invalid(
            "setting.dim",
            format!(
                "{} is too large for explicit SGD (use predhead flow)",
                setting.dim
            ),
        ));
    }
    crate::sgd::check_size(&config)?;
    let record = crate::observe::Cadence::from_flag(args.record_every, config.training.steps)?;
    let (state, data_seed) = match &args.state {
        Some(path) => {
            let state = State::load(path, setting)?;
            state.check_model(&config.model)?;
            (state, args.data_seed.unwrap_or(0))
        }
        None => {
            let seed = args.seed.unwrap_or(0);
            (
                crate::init::explicit(setting, seed)?,
                args.data_seed.unwrap_or(seed),
            )
        }
    };
    let mut sgd = Sgd::new(&config, state, data_seed)?;
    let options = RunOptions {
        record,
        stop_at_t_end: args.stop_at_t_end,
    };

    let bar = step_bar(args.json, config.training.steps, "sgd");
    let on_step = |t: u64| {
        if let Some(b) = &bar {
            b.set_position(t);
        }
    };
    let summary = match &args.out {
        Some(path) => {
            let mut rec = TrajectoryRecorder::create(path, &config)?;
            let s = run_sgd(&mut sgd, options, Some(&mut rec), on_step)?;
            rec.finish()?;
            s
        }
        None => run_sgd::<std::io::Sink>(&mut sgd, options, None, on_step)?,
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if args.json {
        let text = serde_json::to_string(&summary)
            .map_err(|e| Error::numerical("summary", e.to_string()))?;
        Ok(text + "\n")
    } else {
        Ok(text_summary(&summary))
    }
}

/// A progress bar over `steps` SGD steps on stderr, when stderr is a terminal and the output
/// is not JSON (`None` otherwise), labelled `label`. Shared by both engines.
pub(crate) fn step_bar(json: bool, steps: u64, label: &str) -> Option<indicatif::ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(steps);
    let template = format!("{label} {{bar:40}} {{pos}}/{{len}} steps, {{per_sec}}, eta {{eta}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    Some(bar)
}

/// The human-readable summary (one `key = value` per line, times in flow time).
pub fn text_summary(s: &Summary) -> String {
    let t = |x: Option<f64>| x.map_or("never".to_string(), |v| format!("{v}"));
    let mut out = String::new();
    out += &format!("t1 = {}\n", t(s.t1));
    out += &format!("t2 = {}\n", t(s.t2));
    out += &format!("t3 = {}\n", t(s.t3));
    out += &format!("t_end = {}\n", t(s.t_end));
    out += &format!(
        "strong_neuron = {}\n",
        s.strong_neuron
            .map_or("none".to_string(), |j| j.to_string())
    );
    out += &format!("offdiag_peak = {}\n", s.offdiag_peak);
    out += &format!("offdiag_final = {}\n", s.offdiag_final);
    out += &format!(
        "corr_final = {}\n",
        s.corr_final
            .map_or("undefined".to_string(), |c| c.to_string())
    );
    out += &format!("loss_final = {}\nopt = {}\n", s.loss_final, s.opt);
    out += &format!("a_final = {:?}\nb_final = {:?}\n", s.a_final, s.b_final);
    out += &format!("outcome = {}\n", s.outcome.name());
    out += &format!(
        "steps = {} (flow time {}), termination = {:?}\n",
        s.steps, s.tau_final, s.termination
    );
    out += &s.nonfinite_text();
    out
}
