//! The `predhead` command line: a thin shell over the library (`predhead::commands`).
//!
//! Every command returns its stdout text or an error; an error is printed as one line on
//! stderr and the process exits with status 2, with nothing on stdout. Argument errors
//! (clap's) are rewritten to the same form, `predhead: --ARG: problem`
//! ([`argument_error`]), and every line goes through [`predhead::error::one_line`] as a
//! last guard: control characters escaped, at most
//! [`predhead::error::MAX_LINE_CHARS`] characters.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use predhead::commands;
use predhead::error::{echo, one_line, MAX_LINE_CHARS};
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

/// Prints `predhead: {message}` on stderr as one bounded line.
fn print_error(message: &str) {
    eprintln!("predhead: {}", one_line(message, MAX_LINE_CHARS));
}

/// The parser: the derived one, with negative numbers read as values (so that `--seed -1`
/// is an invalid value of `--seed`, not an unknown argument `-1`).
fn parse() -> Result<Cli, clap::Error> {
    let command = Cli::command()
        .allow_negative_numbers(true)
        .mut_subcommands(|s| s.allow_negative_numbers(true));
    let matches = command.try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            print_error(&argument_error(&e));
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
            print_error(&e.to_string());
            ExitCode::from(2)
        }
    }
}

/// A string of clap's error context (the first of a list).
fn context(e: &clap::Error, kind: ContextKind) -> Option<String> {
    match e.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => v.first().cloned(),
        ContextValue::StyledStr(s) => Some(s.to_string()),
        ContextValue::StyledStrs(v) => v.first().map(ToString::to_string),
        ContextValue::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The argument of clap's error without its value placeholder: `--config <CONFIG>` is
/// `--config`.
fn argument_name(e: &clap::Error) -> Option<String> {
    context(e, ContextKind::InvalidArg)
        .map(|a| a.split([' ', '=']).next().unwrap_or(a.as_str()).to_string())
}

/// clap's error as one line `ARG: problem` that names the argument: a missing argument,
/// an invalid value (quoted, escaped and cut by [`echo`]), an unknown argument, a
/// conflict, an unknown or missing command.
fn argument_error(e: &clap::Error) -> String {
    let arg = argument_name(e).unwrap_or_else(|| "arguments".to_string());
    let value = || echo(context(e, ContextKind::InvalidValue).unwrap_or_default());
    let commands = "eval, flow, sgd, report, sweep or merge";
    match e.kind() {
        ErrorKind::MissingRequiredArgument => format!("{arg}: required argument missing"),
        ErrorKind::InvalidValue
            if context(e, ContextKind::InvalidValue).is_none_or(|v| v.is_empty()) =>
        {
            format!("{arg}: a value is required")
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            // The parser's own reason (e.g. "invalid digit found in string") is the error's
            // source; clap's text would repeat the raw value, newlines included.
            let reason = match (std::error::Error::source(e), e.kind()) {
                (Some(source), _) => source.to_string(),
                (None, ErrorKind::InvalidValue) => match context(e, ContextKind::ValidValue) {
                    Some(v) => format!("expected {v}"),
                    None => "not accepted".to_string(),
                },
                (None, _) => "not accepted".to_string(),
            };
            format!("{arg}: invalid value '{}': {}", value(), echo(reason))
        }
        ErrorKind::UnknownArgument => {
            let hint = context(e, ContextKind::SuggestedArg)
                .map_or(String::new(), |s| format!(" (did you mean {}?)", echo(s)));
            format!("{}: unknown argument{hint}", echo(&arg))
        }
        ErrorKind::ArgumentConflict => {
            let other = context(e, ContextKind::PriorArg)
                .map(|p| p.split([' ', '=']).next().unwrap_or_default().to_string())
                .unwrap_or_else(|| "another argument".to_string());
            if other == arg {
                format!("{arg}: given more than once")
            } else {
                format!("{arg}: cannot be used with {other}")
            }
        }
        ErrorKind::InvalidSubcommand => format!(
            "{}: unknown command, expected {commands}",
            echo(context(e, ContextKind::InvalidSubcommand).unwrap_or_default())
        ),
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            format!("command: missing, expected {commands} (see predhead --help)")
        }
        ErrorKind::TooManyValues | ErrorKind::WrongNumberOfValues | ErrorKind::TooFewValues => {
            format!("{arg}: wrong number of values ({})", value())
        }
        ErrorKind::NoEquals => {
            format!("{arg}: needs a value written as {arg}=VALUE")
        }
        ErrorKind::InvalidUtf8 => format!("{arg}: not valid UTF-8"),
        _ => {
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad arguments");
            format!("{arg}: {}", first.trim_start_matches("error: "))
        }
    }
}
