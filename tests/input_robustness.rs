//! Regression tests of issue 19, defects 4-10 and 12, through the binary: every reproducer
//! of the issue, with its exit status, exactly one stderr line of bounded length, and an
//! empty stdout for bad input (`docs/cli.md`, "Errors, limits and non-finite runs").

mod common;
use common::{assert_bad_input, predhead, SUMMARY_KEYS};
use predhead::config::parse_config;
use predhead::error::{MAX_FIELD_CHARS, MAX_PROBLEM_CHARS};
use predhead::network::{batch_loss_and_gradient, two_branch_loss, Batch};
use predhead::sgd::{run, RunOptions, Sgd};
use predhead::state::State;
use serde_json::Value;
use std::path::Path;

/// The README configuration (`../shared/contract.md`).
const README: &str = r#"
[setting]
dim = 6
patches = 4
feature_patches = 2
alpha = [4.0, 1.0]
noise_std = 1.0
neurons = 2

[model]
head = "identity-offdiag"
normalization = "batchnorm"
stop_gradient = true
"#;

const README_STATE: &str = r#"{"w": [[0.5, 0.1, 0.2, -0.3, 0.1, 0.0], [0.1, 0.4, -0.2, 0.3, 0.0, 0.2]], "e": [[1.0, 0.1], [-0.05, 1.0]]}"#;

/// Issue 19, defect 4: SGD that diverges within 5 steps.
const DIVERGING: &str = r#"
[setting]
dim = 6
patches = 8
feature_patches = 2
alpha = [2.0, 1.0]
noise_std = 1.0
neurons = 3
[model]
head = "identity-offdiag"
normalization = "none"
stop_gradient = true
[training]
lr = 0.01
batch = 8
steps = 5
"#;

/// The small batch configuration of the README, with `normalization = "none"`.
const SMALL_NONE: &str = r#"
[setting]
dim = 3
patches = 2
feature_patches = 1
alpha = [2.0, 1.0]
noise_std = 1.0
neurons = 2
[model]
head = "linear"
normalization = "none"
stop_gradient = true
"#;

const SMALL_STATE: &str =
    r#"{"w": [[0.9, 0.1, 0.3], [0.2, 0.8, -0.4]], "e": [[1.0, 0.1], [0.0, 1.0]]}"#;
const ONE_SAMPLE: &str = r#"{"x1": [[[2, 0, 0], [0, 0, 0.5]]], "x2": [[[0, 0, 0], [0, 0, -1.3]]]}"#;

/// The longest stderr line: `predhead: `, a field and a problem (`src/error.rs`).
const MAX_STDERR: usize = 10 + MAX_FIELD_CHARS + 2 + MAX_PROBLEM_CHARS + 1;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Exit status 2, nothing on stdout, exactly one stderr line of bounded length without
/// control characters, naming `field`. Returns the line.
#[track_caller]
fn bad(args: &[&str], field: &str) -> String {
    let (code, out, err) = predhead(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(out.is_empty(), "{args:?}: stdout {out}");
    assert!(err.ends_with('\n'), "{err:?}");
    let line = &err[..err.len() - 1];
    assert!(!line.chars().any(char::is_control), "{err:?}");
    assert!(line.chars().count() <= MAX_STDERR, "{} chars", line.len());
    assert!(
        line.starts_with("predhead: ") && line.contains(field),
        "{args:?}: {line} should name {field}"
    );
    line.to_string()
}

/// Exit status 0, nothing on stderr, one JSON object on stdout.
#[track_caller]
fn good_json(args: &[&str]) -> Value {
    let (code, out, err) = predhead(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(out.lines().count(), 1);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn defect4_sgd_divergence_ends_non_finite_with_the_last_finite_summary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", DIVERGING);
    let v = good_json(&["sgd", "--config", &cfg, "--seed", "0", "--json"]);
    for key in SUMMARY_KEYS {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["termination"], "non-finite");
    assert_eq!(v["nonfinite_step"], 5);
    assert_eq!(v["nonfinite_tau"], 0.05);
    assert!(v["nonfinite_reason"].as_str().unwrap().contains("overflow"));
    assert_eq!(v["steps"], 4);
    assert_eq!(v["tau_final"], 0.04);
    let loss = v["loss_final"].as_f64().expect("a finite loss_final");
    assert!(loss.is_finite());
    // The summary is that of the run stopped after 4 steps (the last finite state): only
    // the termination keys differ.
    let four = write(
        dir.path(),
        "f.toml",
        &DIVERGING.replace("steps = 5", "steps = 4"),
    );
    let mut w = good_json(&["sgd", "--config", &four, "--seed", "0", "--json"]);
    assert_eq!(w["termination"], "horizon");
    assert!(w.get("nonfinite_step").is_none() && w.get("nonfinite_tau").is_none());
    let mut v = v;
    // The taxonomy (E7) reads the termination: a run that went non-finite stopped early.
    assert_eq!(v["outcome_reason"], "stopped-early");
    for key in [
        "termination",
        "nonfinite_step",
        "nonfinite_tau",
        "nonfinite_reason",
        "outcome_reason",
    ] {
        v.as_object_mut().unwrap().remove(key);
        w.as_object_mut().unwrap().remove(key);
    }
    assert_eq!(v, w);
    // The text summary says it too.
    let (code, out, _) = predhead(&["sgd", "--config", &cfg, "--seed", "0"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("non-finite at step 5 (flow time 0.05)"),
        "{out}"
    );
}

#[test]
fn defect4_library_run_keeps_the_last_finite_state() {
    let config = parse_config(DIVERGING).unwrap();
    let state = predhead::init::explicit(&config.setting, 0).unwrap();
    let mut sgd = Sgd::new(&config, state.clone(), 0).unwrap();
    let options = RunOptions {
        record: predhead::observe::Cadence::EVERY_STEP,
        stop_at_t_end: false,
    };
    let s = run::<std::io::Sink>(&mut sgd, options, None, |_| {}).unwrap();
    assert_eq!((s.steps, s.nonfinite_step), (4, Some(5)));
    // `sgd.state` is the state after 4 steps, bit for bit.
    let mut again = Sgd::new(&config, state, 0).unwrap();
    for _ in 0..4 {
        again.step().unwrap();
    }
    assert_eq!(sgd.state, again.state);
    assert_eq!(sgd.step, 4);
    // Falsifier: the fifth step is the one that overflows.
    assert!(
        again.step().is_err() || {
            let x = predhead::reduced::reduce::<f64>(&again.state, ());
            let k = predhead::moments::population::Constants::<f64>::new(&config.setting, ());
            predhead::sgd::population_overflow(&k, &config.model, &x).is_some()
        }
    );
}

#[test]
fn defect4_flow_that_leaves_the_f64_range_ends_non_finite() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        &DIVERGING.replace("identity-offdiag", "linear"),
    );
    let st = write(
        dir.path(),
        "s.json",
        r#"{"w":[[1e40,1,1,0,0,0],[0,1,0,1,0,0],[1,0,0,0,1,0]],"e":[[1,2,0],[0,1,3],[5,0,1]]}"#,
    );
    let v = good_json(&[
        "flow",
        "--config",
        &cfg,
        "--state",
        &st,
        "--json",
        "--no-error-estimate",
    ]);
    for key in SUMMARY_KEYS {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["termination"], "non-finite");
    assert_eq!(v["nonfinite_tau"], v["tau_final"]);
    assert_eq!(
        v["nonfinite_step"].as_u64().unwrap(),
        v["steps"].as_u64().unwrap() + 1
    );
    assert!(v["loss_final"].as_f64().unwrap().is_finite());
    // Falsifier: a state of ordinary size runs to the horizon without the keys.
    let ok = write(
        dir.path(),
        "o.json",
        r#"{"w":[[0.5,0.5,0.5,0,0,0],[0,0.5,0,0.5,0,0],[0.5,0,0,0,0.5,0]],"e":[[1,2,0],[0,1,3],[5,0,1]]}"#,
    );
    let w = good_json(&[
        "flow",
        "--config",
        &cfg,
        "--state",
        &ok,
        "--json",
        "--no-error-estimate",
    ]);
    assert_eq!(w["termination"], "horizon");
    assert!(w.get("nonfinite_tau").is_none());
}

#[test]
fn defect5_identity_offdiag_diagonal_and_duplicate_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", README);
    for diag in ["0.5", "2", "0", "-1"] {
        let st = write(
            dir.path(),
            "s.json",
            &README_STATE.replace("[[1.0, 0.1]", &format!("[[{diag}, 0.1]")),
        );
        let line = bad(&["eval", "--config", &cfg, "--state", &st], "state.e[0][0]");
        assert!(line.contains(&format!("got {diag}")), "{line}");
        bad(&["flow", "--config", &cfg, "--state", &st], "state.e[0][0]");
        bad(&["sgd", "--config", &cfg, "--state", &st], "state.e[0][0]");
    }
    // Falsifier: the frozen head takes any diagonal.
    let frozen = write(
        dir.path(),
        "f.toml",
        &README.replace("identity-offdiag", "frozen"),
    );
    let st = write(
        dir.path(),
        "s.json",
        &README_STATE.replace("[[1.0, 0.1]", "[[0.5, 0.1]"),
    );
    good_json(&["eval", "--config", &frozen, "--state", &st]);
    // Duplicate keys in STATE.json and BATCH.json.
    let dup = write(
        dir.path(),
        "d.json",
        &README_STATE.replace("\"e\":", "\"w\": [[0,0,0,0,0,0],[0,0,0,0,0,0]], \"e\":"),
    );
    bad(
        &["eval", "--config", &cfg, "--state", &dup],
        "state.w: duplicate key",
    );
    let small = write(dir.path(), "n.toml", SMALL_NONE);
    let small_state = write(dir.path(), "ss.json", SMALL_STATE);
    let batch = write(
        dir.path(),
        "b.json",
        &ONE_SAMPLE.replace("\"x2\":", "\"x1\": [], \"x2\":"),
    );
    bad(
        &[
            "eval",
            "--config",
            &small,
            "--state",
            &small_state,
            "--batch",
            &batch,
        ],
        "batch.x1: duplicate key",
    );
    // TOML refuses duplicates itself; the line names the key's line.
    let twice = write(
        dir.path(),
        "t.toml",
        &README.replace("dim = 6", "dim = 6\ndim = 7"),
    );
    let line = bad(&["eval", "--config", &twice, "--state", &cfg], "config");
    assert!(
        line.contains("duplicate key") && line.contains("dim = 7"),
        "{line}"
    );
}

#[test]
fn defect6_one_sample_without_batchnorm_is_valid_and_correct() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", SMALL_NONE);
    let st = write(dir.path(), "s.json", SMALL_STATE);
    let b = write(dir.path(), "b.json", ONE_SAMPLE);
    let v = good_json(&["eval", "--config", &cfg, "--state", &st, "--batch", &b]);
    // By hand: f(X^(1)) = (1.8^3 + 0.15^3, 0.4^3 - 0.2^3), f(X^(2)) = (-0.39^3, 0.52^3),
    // F = E f(X^(1)), L = sum_j (F_j - f_j(X^(2)))^2 (N = 1, no normalization).
    let f1 = [
        1.8f64.powi(3) + 0.15f64.powi(3),
        0.4f64.powi(3) - 0.2f64.powi(3),
    ];
    let f2 = [(-0.39f64).powi(3), 0.52f64.powi(3)];
    let big_f = [f1[0] + 0.1 * f1[1], f1[1]];
    let want = (big_f[0] - f2[0]).powi(2) + (big_f[1] - f2[1]).powi(2);
    let loss = v["loss"].as_f64().unwrap();
    assert!((loss - want).abs() <= 1e-12 * want, "{loss} vs {want}");
    // The gradient against central differences of the batch loss (the library), the
    // target branch held at the given W (stop_gradient = true, derivations/network.md (B5)).
    let config = parse_config(SMALL_NONE).unwrap();
    let state = State::parse(SMALL_STATE, &config.setting).unwrap();
    let batch = Batch::parse(ONE_SAMPLE, &config.setting).unwrap();
    let ev = batch_loss_and_gradient(&config.setting, &config.model, &state, &batch).unwrap();
    assert_eq!(loss.to_bits(), ev.loss.to_bits());
    let h = 1e-6;
    for j in 0..2 {
        for k in 0..3 {
            let at = |dx: f64| {
                let mut s = state.clone();
                s.w[j][k] += dx;
                two_branch_loss(&config.setting, &config.model, &s, &state.w, &batch).unwrap()
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            let g = ev.grad_w[j][k];
            assert!(
                (fd - g).abs() <= 1e-6 * (1.0 + g.abs()),
                "w[{j}][{k}]: {fd} vs {g}"
            );
        }
        for r in 0..2 {
            let at = |dx: f64| {
                let mut s = state.clone();
                s.e[j][r] += dx;
                two_branch_loss(&config.setting, &config.model, &s, &state.w, &batch).unwrap()
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            let g = ev.grad_e[j][r];
            assert!(
                (fd - g).abs() <= 1e-6 * (1.0 + g.abs()),
                "e[{j}][{r}]: {fd} vs {g}"
            );
        }
    }
    // Batch normalization with one sample stays bad input.
    let bn = write(
        dir.path(),
        "bn.toml",
        &SMALL_NONE.replace("\"none\"", "\"batchnorm\""),
    );
    bad(
        &["eval", "--config", &bn, "--state", &st, "--batch", &b],
        "batch.x1: needs at least 2 samples",
    );
    // SGD with batch = 1: valid without batchnorm, refused with it.
    let sgd1 = write(
        dir.path(),
        "g.toml",
        &format!("{SMALL_NONE}[training]\nbatch = 1\nsteps = 20\n"),
    );
    let v = good_json(&["sgd", "--config", &sgd1, "--json"]);
    assert_eq!(v["termination"], "horizon");
    assert_eq!(v["steps"], 20);
    let sgd1bn = write(
        dir.path(),
        "h.toml",
        &format!("{README}[training]\nbatch = 1\n"),
    );
    bad(&["sgd", "--config", &sgd1bn], "training.batch");
}

#[test]
fn defect7_8_sizes_from_the_input_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        &format!("{README}[training]\nbatch = 1000000000000\n"),
    );
    bad(&["sgd", "--config", &cfg], "training.batch");
    // One sample of 1,048,574 empty patch rows at dim 10000.
    let huge = write(
        dir.path(),
        "h.toml",
        &SMALL_NONE
            .replace("dim = 3", "dim = 10000")
            .replace("patches = 2", "patches = 1048574")
            .replace("neurons = 2", "neurons = 1")
            .replace("feature_patches = 1048574", "feature_patches = 1"),
    );
    let w: Vec<String> = (0..10000).map(|_| "0.1".to_string()).collect();
    let st = write(
        dir.path(),
        "s.json",
        &format!("{{\"w\": [[{}]], \"e\": [[1.0]]}}", w.join(",")),
    );
    let rows = vec!["[]"; 1_048_574].join(",");
    let b = write(
        dir.path(),
        "b.json",
        &format!("{{\"x1\": [[{rows}]], \"x2\": [[{rows}]]}}"),
    );
    bad(
        &["eval", "--config", &huge, "--state", &st, "--batch", &b],
        "setting.dim",
    );
    // The exact overlap moments cost time and memory in proportion to (P0 + 1) P: a
    // config far beyond the budget is refused at once (it used to run for hours).
    let overlap = write(
        dir.path(),
        "o.toml",
        &README
            .replace("\npatches = 4", "\npatches = 1048574")
            .replace("feature_patches = 2", "feature_patches = 524287"),
    );
    let t = std::time::Instant::now();
    bad(
        &["eval", "--config", &overlap, "--state", &st],
        "setting.feature_patches",
    );
    assert!(t.elapsed().as_secs() < 10);
    // Falsifier: within the budget (P0 = 100 at P = 1048574) the config is accepted.
    let fine = predhead::config::parse_config(
        &README
            .replace("\npatches = 4", "\npatches = 1048574")
            .replace("feature_patches = 2", "feature_patches = 100"),
    );
    assert!(fine.is_ok(), "{fine:?}");
    // Input files are read up to a limit (a device without end included).
    bad(
        &["eval", "--config", "/dev/zero", "--state", &st],
        "/dev/zero",
    );
    let small = write(dir.path(), "n.toml", SMALL_NONE);
    bad(
        &["eval", "--config", &small, "--state", "/dev/zero"],
        "larger than",
    );
    // Many neurons: refused by the explicit initialization's budget, not an abort.
    let many = write(
        dir.path(),
        "m.toml",
        &README
            .replace("neurons = 2", "neurons = 100000")
            .replace("dim = 6", "dim = 100000")
            .replace("identity-offdiag", "frozen"),
    );
    bad(&["sgd", "--config", &many], "setting.");
}

#[test]
fn defect9_echoed_values_are_escaped_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let st = write(dir.path(), "s.json", README_STATE);
    let cases: Vec<(String, &str)> = vec![
        (format!("{README}\"a\\nb\" = 1\n"), "a\\nb: unknown key"),
        (
            README.replace("\"identity-offdiag\"", "\"lin\\near\""),
            "lin\\near",
        ),
        (
            README.replace("dim = 6", "dim = \"\"\"6\n7\"\"\""),
            "setting.dim",
        ),
        (README.replace('\n', "\r"), "config"),
        (
            README.replace(
                "\"identity-offdiag\"",
                &format!("\"{}\"", "x".repeat(900_000)),
            ),
            "model.head",
        ),
    ];
    for (text, field) in cases {
        let cfg = write(dir.path(), "c.toml", &text);
        let line = bad(&["eval", "--config", &cfg, "--state", &st], field);
        assert!(line.len() < 1000, "{}", line.len());
    }
    // A 10 MB value in a JSON state.
    let cfg = write(dir.path(), "r.toml", README);
    let long = write(
        dir.path(),
        "l.json",
        &README_STATE.replacen("0.5", &format!("\"{}\\n\"", "y".repeat(10_000_000)), 1),
    );
    let line = bad(
        &["eval", "--config", &cfg, "--state", &long],
        "state.w[0][0]",
    );
    assert!(line.contains("..."), "{line}");
    // A path with a newline.
    let odd = dir.path().join("a\nb.toml");
    bad(
        &["eval", "--config", odd.to_str().unwrap(), "--state", &st],
        "a\\nb.toml",
    );
}

#[test]
fn defect10_argument_errors_are_one_line_naming_the_argument() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", README);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["eval"], "--config: required argument missing"),
        (
            vec!["eval", "--config", &cfg],
            "--state: required argument missing",
        ),
        (
            vec!["sgd", "--config", &cfg, "--seed", "-1"],
            "--seed: invalid value '-1'",
        ),
        (
            vec!["sgd", "--config", &cfg, "--seed", "abc"],
            "--seed: invalid value 'abc'",
        ),
        (vec!["sgd", "--config"], "--config: a value is required"),
        (
            vec!["sgd", "--config", &cfg, "--sed", "1"],
            "--sed: unknown argument",
        ),
        (
            vec!["flow", "--config", &cfg, "--seed", "1", "--state", &cfg],
            "--seed: cannot be used with --state",
        ),
        (vec!["frobnicate"], "frobnicate: unknown command"),
        (vec![], "command: missing"),
        (
            vec!["sgd", "--config", &cfg, "--record-every", "x\ny"],
            "--record-every: invalid value 'x\\ny': invalid digit found in string",
        ),
        (vec!["flow", "--config", &cfg, "--rtol", "-1"], "--rtol"),
    ];
    for (args, want) in cases {
        bad(&args, want);
    }
    // The shared rule of the other command tests agrees.
    assert!(assert_bad_input(&["eval"]).contains("--config"));
    // Help and version still print and exit 0.
    let (code, out, _) = predhead(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("predhead"));
}

#[test]
fn defect12_overflows_and_rates_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let st = write(dir.path(), "s.json", README_STATE);
    let cfg = |text: &str| write(dir.path(), "c.toml", text);
    let c = cfg(&README.replace("noise_std = 1.0", "noise_std = 1e300"));
    let line = bad(
        &["eval", "--config", &c, "--state", &st],
        "setting.noise_std",
    );
    assert!(line.contains("overflows"), "{line}");
    bad(&["flow", "--config", &c], "setting.noise_std");
    let c = cfg(&README.replace("alpha = [4.0, 1.0]", "alpha = [4.0, 1e-60]"));
    bad(
        &["eval", "--config", &c, "--state", &st],
        "setting.alpha[1]",
    );
    let c = cfg(&format!("{README}[training]\nlr = 5e-324\n"));
    bad(&["flow", "--config", &c], "training.lr:");
    let c = cfg(&format!(
        "{README}[training]\nlr = 5e-324\nlr_head = 1e-3\n"
    ));
    bad(&["flow", "--config", &c], "training.lr:");
    let c = cfg(&format!("{README}[training]\nlr_head = 1.7e308\n"));
    bad(&["sgd", "--config", &c], "training.lr_head");
    let c = cfg(&format!("{README}[training]\nlr_head = 1.8e308\n"));
    bad(&["sgd", "--config", &c], "lr_head");
    // A state whose population loss overflows is named as the state.
    let big = write(
        dir.path(),
        "b.json",
        &README_STATE.replace("[[0.5,", "[[1e60,"),
    );
    let c = cfg(README);
    bad(&["eval", "--config", &c, "--state", &big], "state: ");
    bad(&["flow", "--config", &c, "--state", &big], "state: ");
    bad(&["sgd", "--config", &c, "--state", &big], "state: ");
}

#[test]
fn defect12_corr_max_final_is_null_with_one_neuron() {
    let dir = tempfile::tempdir().unwrap();
    let c = write(
        dir.path(),
        "c.toml",
        &format!(
            "{}[training]\nbatch = 16\nsteps = 3\n",
            README
                .replace("neurons = 2", "neurons = 1")
                .replace("identity-offdiag", "frozen")
        ),
    );
    for cmd in ["sgd", "flow"] {
        let v = good_json(
            &[cmd, "--config", &c, "--json", "--no-error-estimate"]
                [..if cmd == "sgd" { 4 } else { 5 }],
        );
        // Both correlations are undefined without a second neuron: null, and present.
        assert!(v["corr_final"].is_null(), "{cmd}");
        assert!(v.get("corr_max_final").is_some_and(Value::is_null), "{cmd}");
    }
    // Falsifier: with two neurons both are numbers.
    let c2 = write(
        dir.path(),
        "d.toml",
        &format!("{README}[training]\nbatch = 16\nsteps = 3\n"),
    );
    let v = good_json(&["sgd", "--config", &c2, "--json"]);
    assert!(v["corr_final"].is_number() && v["corr_max_final"].is_number());
}
