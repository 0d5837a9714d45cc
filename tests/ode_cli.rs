//! `--method`, `--explicit` and `--stiff` are clap `ValueEnum`s: every accepted name (the
//! alias `dopri5` of `--method explicit` included) parses to its enum, and a bad value is
//! one stderr line in the CLI's `--ARG: problem` form naming every accepted value.

// The shared helpers; this file needs only `assert_bad_input`.
#[allow(dead_code)]
mod common;
use common::assert_bad_input;
use predhead::cli::{argument_error, parse, Command};
use predhead::flow::{Explicit, Method, Stiff};

fn flow_args(extra: &[&str]) -> predhead::commands::flow::Args {
    let argv = [&["predhead", "flow", "--config", "c.toml"], extra].concat();
    match parse(argv).map(|c| c.command) {
        Ok(Command::Flow(a)) => a,
        Ok(_) => panic!("not flow"),
        Err(e) => panic!("{}", argument_error(&e)),
    }
}

#[test]
fn the_names_parse_to_their_enums() {
    let a = flow_args(&[]);
    assert_eq!(
        (a.method, a.explicit, a.stiff),
        (Method::Auto, Explicit::Dop853, Stiff::Rodas5)
    );
    for (name, method) in [
        ("auto", Method::Auto),
        ("explicit", Method::Explicit),
        ("dopri5", Method::Explicit),
        ("rosenbrock", Method::Rosenbrock),
    ] {
        assert_eq!(flow_args(&["--method", name]).method, method);
        assert_eq!(Method::from_name(name), Some(method));
    }
    assert_eq!(
        flow_args(&["--explicit", "dopri5"]).explicit,
        Explicit::Dopri5
    );
    assert_eq!(flow_args(&["--stiff", "ros4"]).stiff, Stiff::Ros4);
    // Negative control: names of the other flags, and case variants, are not accepted.
    for (flag, bad) in [
        ("--method", "ros4"),
        ("--explicit", "auto"),
        ("--stiff", "RODAS5"),
    ] {
        let argv = ["predhead", "flow", "--config", "c.toml", flag, bad];
        assert!(parse(argv).is_err(), "{flag} {bad}");
    }
}

#[test]
fn a_bad_value_is_one_line_naming_the_accepted_ones() {
    for (flag, bad, expected) in [
        ("--method", "euler", "auto, explicit or rosenbrock"),
        ("--explicit", "rk4", "dop853 or dopri5"),
        ("--stiff", "radau5", "rodas5 or ros4"),
    ] {
        let err = assert_bad_input(&["flow", "--config", "c.toml", flag, bad]);
        assert_eq!(
            err.trim_end(),
            format!("predhead: {flag}: invalid value '{bad}': expected {expected}")
        );
    }
}
