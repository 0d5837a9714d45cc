//! Shared by the command-line tests (`flow_cli.rs`, `sgd_command.rs`): running the binary,
//! the summary keys of `../shared/contract.md`, and its bad-input rule.

use std::process::Command;

/// The summary keys that `flow` and `sgd` both print with `--json`, in the contract's
/// order (`flow` adds `rhs_evals` after them). Transcribed from the contract, not from
/// `predhead::observe`, so that the tests check the code against the contract.
pub const SUMMARY_KEYS: [&str; 13] = [
    "t1",
    "t2",
    "t3",
    "t_end",
    "strong_neuron",
    "offdiag_peak",
    "offdiag_final",
    "corr_final",
    "loss_final",
    "opt",
    "a_final",
    "b_final",
    "outcome",
];

/// Runs the binary; returns `(exit code, stdout, stderr)`.
pub fn predhead(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_predhead"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Asserts the contract's bad-input rule: exit status 2, nothing on stdout, exactly one
/// line on stderr. Returns that line.
pub fn assert_bad_input(args: &[&str]) -> String {
    let (code, out, err) = predhead(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(out.is_empty(), "{args:?}: stdout {out}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    err
}
