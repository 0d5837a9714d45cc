//! The command line as a library function: [`execute`] parses an argument vector exactly as
//! the `predhead` binary does and runs the command, returning its stdout text or the one
//! line the binary prints on stderr (after `predhead: `). The binary (`src/main.rs`) and the
//! Python package (`python/`, `docs/python.md`) both call it, so that their outputs and their
//! error lines are the same bytes.
//!
//! Argument errors (clap's) are rewritten to the form `--ARG: problem`
//! ([`argument_error`]), and every error line goes through [`crate::error::one_line`] as a
//! last guard: control characters escaped, at most [`crate::error::MAX_LINE_CHARS`]
//! characters.

use crate::commands;
use crate::error::{echo, one_line, MAX_LINE_CHARS};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;

/// Exact population gradients, gradient flow and SGD for the prediction-head setting.
#[derive(Parser)]
#[command(name = "predhead", version, about)]
pub struct Cli {
    /// The command and its arguments.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
#[allow(missing_docs)]
pub enum Command {
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

/// Why [`execute`] produced no stdout text.
#[derive(Debug)]
pub enum Failure {
    /// `--help` or `--version` was asked for: clap's text, to print (exit status 0).
    Display(clap::Error),
    /// Bad arguments or bad input: the one line to print on stderr after `predhead: `
    /// (exit status 2).
    Message(String),
}

/// Parses `argv` (the first item is the program name) as the `predhead` binary does and runs
/// the command.
///
/// # Examples
///
/// ```
/// use predhead::cli::{execute, Failure};
/// let err = execute(["predhead", "flow", "--rtol", "x"]).unwrap_err();
/// match err {
///     Failure::Message(line) => assert!(line.starts_with("--rtol: invalid value 'x'")),
///     Failure::Display(_) => unreachable!(),
/// }
/// ```
///
/// # Errors
///
/// [`Failure::Message`] with the binary's stderr line (without its `predhead: ` prefix) for
/// bad arguments and for every error of the command; [`Failure::Display`] for `--help` and
/// `--version`.
pub fn execute<I, T>(argv: I) -> Result<String, Failure>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match parse(argv) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Err(Failure::Display(e));
        }
        Err(e) => return Err(Failure::Message(error_line(&argument_error(&e)))),
    };
    let result = match &cli.command {
        Command::Eval(a) => commands::eval::run(a),
        Command::Flow(a) => commands::flow::run(a),
        Command::Sgd(a) => commands::sgd::run(a),
        Command::Report(a) => commands::report::run(a),
        Command::Sweep(a) => commands::report::run_sweep(a),
        Command::Merge(a) => commands::report::run_merge(a),
    };
    result.map_err(|e| Failure::Message(error_line(&e.to_string())))
}

/// The stderr line of an error message (after `predhead: `): one bounded line.
///
/// # Examples
///
/// ```
/// assert_eq!(predhead::cli::error_line("a\nb"), "a\\nb");
/// ```
pub fn error_line(message: &str) -> String {
    one_line(message, MAX_LINE_CHARS)
}

/// The parser: the derived one, with negative numbers read as values (so that `--seed -1`
/// is an invalid value of `--seed`, not an unknown argument `-1`).
///
/// # Examples
///
/// ```
/// use predhead::cli::{parse, Command};
/// let cli = parse(["predhead", "eval", "--config", "c.toml", "--state", "s.json"]).unwrap();
/// assert!(matches!(cli.command, Command::Eval(_)));
/// ```
///
/// # Errors
///
/// clap's error for arguments that do not parse (see [`argument_error`]).
pub fn parse<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = Cli::command()
        .allow_negative_numbers(true)
        .mut_subcommands(|s| s.allow_negative_numbers(true));
    let matches = command.try_get_matches_from(argv)?;
    Cli::from_arg_matches(&matches)
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

/// The values an argument accepts (a [`clap::ValueEnum`]'s), as `a, b or c`.
fn valid_values(e: &clap::Error) -> Option<String> {
    match e.get(ContextKind::ValidValue)? {
        ContextValue::Strings(v) => match v.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            [init @ .., last] => Some(format!("{} or {last}", init.join(", "))),
        },
        _ => context(e, ContextKind::ValidValue),
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
///
/// # Examples
///
/// ```
/// use predhead::cli::{argument_error, parse};
/// let e = parse(["predhead", "flow", "--config", "c.toml", "--seed", "-1"]).err().unwrap();
/// assert!(argument_error(&e).starts_with("--seed: invalid value '-1'"));
/// ```
pub fn argument_error(e: &clap::Error) -> String {
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
                (None, ErrorKind::InvalidValue) => match valid_values(e) {
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
