//! The `predhead` command line: a thin shell over the library (`predhead::commands`).
//!
//! Every command returns its stdout text or an error; an error is printed as one line on
//! stderr and the process exits with status 2, with nothing on stdout.

use clap::{Parser, Subcommand};
use predhead::commands;
use std::io::Write;
use std::process::ExitCode;

/// Exact population gradients, gradient flow and SGD for the prediction-head setting.
#[derive(Parser)]
#[command(name = "predhead", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Population (or batch) loss and gradient at a state, as JSON.
    Eval(commands::eval::Args),
    /// Integrate the exact population gradient flow and locate the phases.
    Flow(commands::flow::Args),
    /// Monte Carlo SGD on explicit data.
    Sgd(commands::sgd::Args),
    /// Regenerate the reports in reports/.
    Report(commands::report::Args),
    /// Run (a shard of) one sweep spec, appending to its results file.
    Sweep(commands::report::SweepArgs),
    /// Merge shard result files of one sweep.
    Merge(commands::report::MergeArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let msg = e.to_string();
            let first = msg
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad arguments");
            eprintln!("predhead: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Eval(a) => commands::eval::run(a),
        Command::Flow(a) => commands::flow::run(a),
        Command::Sgd(a) => commands::sgd::run(a),
        Command::Report(a) => commands::report::run(a),
        Command::Sweep(a) => commands::report::run_sweep(a),
        Command::Merge(a) => commands::report::run_merge(a),
    };
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(out.as_bytes()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("predhead: {e}");
            ExitCode::from(2)
        }
    }
}
