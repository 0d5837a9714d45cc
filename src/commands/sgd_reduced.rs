//! `predhead sgd --engine reduced`: SGD in reduced coordinates ([`crate::sgd_reduced`],
//! `derivations/sgd_reduced.md`), summarized by the same observers as the explicit engine.
//!
//! The engine rule without `--engine`: **explicit** when explicit SGD accepts the size
//! (`d <= 2^32` and [`crate::sgd::check_size`]: its largest array within 2^28 entries), so
//! every configuration that ran before keeps its bit-identical output; **reduced**
//! otherwise (where the explicit engine refuses to run).
//!
//! `--seed S` draws the reduced initialization of `predhead flow --seed S`
//! ([`crate::init::reduced`]; equal in law to the explicit one, not draw by draw) and uses
//! `S` as the data seed unless `--data-seed` is given; `--state` reduces the explicit
//! STATE.json (data seed `--data-seed`, default 0). The output has the explicit engine's
//! keys plus `"engine": "reduced"` (JSON) or `engine = reduced` (text).

use crate::error::{Error, Result};
use crate::observe::{Summary, TrajectoryRecorder};
use crate::setting::Config;
use crate::sgd::RunOptions;
use crate::sgd_reduced::{run as run_reduced, ReducedSgd};
use crate::state::State;
use serde::Serialize;

/// Which SGD engine runs (`--engine`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// SGD on explicit `d`-dimensional data ([`crate::sgd`]).
    Explicit,
    /// The same process in reduced coordinates, exact in law ([`crate::sgd_reduced`]).
    Reduced,
}

impl Engine {
    /// The engine that runs: the requested one, else explicit when explicit SGD accepts the
    /// size of `config` and reduced otherwise.
    ///
    /// # Examples
    /// ```
    /// use predhead::commands::sgd_reduced::Engine;
    /// let text = |d: u64| format!(
    ///     "[setting]\ndim = {d}\npatches = 4\nfeature_patches = 2\nalpha = [3.0, 2.0]\n\
    ///      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"linear\"\n\
    ///      normalization = \"none\"\nstop_gradient = true\n"
    /// );
    /// let small = predhead::config::parse_config(&text(100)).unwrap();
    /// let large = predhead::config::parse_config(&text(1_000_000_000_000)).unwrap();
    /// assert_eq!(Engine::choose(None, &small), Engine::Explicit);
    /// assert_eq!(Engine::choose(None, &large), Engine::Reduced);
    /// assert_eq!(Engine::choose(Some(Engine::Reduced), &small), Engine::Reduced);
    /// ```
    pub fn choose(requested: Option<Engine>, config: &Config) -> Engine {
        requested.unwrap_or_else(|| {
            let fits = usize::try_from(config.setting.dim).is_ok()
                && config.setting.dim <= 1 << 32
                && crate::sgd::check_size(config).is_ok();
            if fits {
                Engine::Explicit
            } else {
                Engine::Reduced
            }
        })
    }

    /// Whether this is [`Engine::Reduced`].
    pub fn is_reduced(self) -> bool {
        self == Engine::Reduced
    }
}

/// The JSON summary of a reduced run: the summary's keys, then `engine`.
#[derive(Serialize)]
struct Tagged<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    engine: &'static str,
}

/// Runs `predhead sgd` with the reduced engine on the loaded `config`: returns the
/// summary text for stdout.
///
/// # Errors
/// Bad arguments (`--record-every 0`), a state that does not match the setting, sizes the
/// reduced engine refuses, writing the trajectory.
pub fn run(args: &super::sgd::Args, config: &Config) -> Result<String> {
    crate::sgd_reduced::check_size(config)?;
    let record = crate::observe::Cadence::from_flag(args.record_every, config.training.steps)?;
    let mut sgd = match &args.state {
        Some(path) => {
            let state = State::load(path, &config.setting)?;
            ReducedSgd::from_explicit(config, &state, args.data_seed.unwrap_or(0))?
        }
        None => {
            let seed = args.seed.unwrap_or(0);
            ReducedSgd::from_seed(config, seed, args.data_seed.unwrap_or(seed))?
        }
    };
    let options = RunOptions {
        record,
        stop_at_t_end: args.stop_at_t_end,
    };
    let bar = super::sgd::step_bar(args.json, config.training.steps, "sgd (reduced)");
    let on_step = |t: u64| {
        if let Some(b) = &bar {
            b.set_position(t);
        }
    };
    let summary = match &args.out {
        Some(path) => {
            let mut rec = TrajectoryRecorder::create(path, config)?;
            let s = run_reduced(&mut sgd, options, Some(&mut rec), on_step)?;
            rec.finish()?;
            s
        }
        None => run_reduced::<std::io::Sink>(&mut sgd, options, None, on_step)?,
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if args.json {
        let tagged = Tagged {
            summary: &summary,
            engine: "reduced",
        };
        let text = serde_json::to_string(&tagged)
            .map_err(|e| Error::numerical("summary", e.to_string()))?;
        Ok(text + "\n")
    } else {
        Ok(super::sgd::text_summary(&summary) + "engine = reduced\n")
    }
}
