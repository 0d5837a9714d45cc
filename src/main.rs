//! The `predhead` command line: a thin shell over the library ([`predhead::cli::execute`]).
//!
//! Every command returns its stdout text or an error; an error is printed as one line on
//! stderr and the process exits with status 2, with nothing on stdout. Argument errors
//! (clap's) are rewritten to the same form, `predhead: --ARG: problem`
//! ([`predhead::cli::argument_error`]), and every line goes through
//! [`predhead::error::one_line`] as a last guard.

use predhead::cli::{execute, Failure};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match execute(std::env::args_os()) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(out.as_bytes()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Display(e)) => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        Err(Failure::Message(line)) => {
            eprintln!("predhead: {line}");
            ExitCode::from(2)
        }
    }
}
