//! `predhead sgd` follows the contract (`../shared/contract.md`): the summary keys of
//! `flow` (without `rhs_evals`), times in flow time, the trajectory CSV, `--state` and
//! `--seed`, and bad input as exit status 2 with one stderr line.

mod common;
use common::{assert_bad_input, predhead, SUMMARY_KEYS};
use std::path::Path;

const CONFIG: &str = r#"
[setting]
dim = 24
patches = 4
feature_patches = 2
alpha = [3.0, 2.0]
noise_std = 1.0
neurons = 2
[model]
head = "identity-offdiag"
normalization = "batchnorm"
stop_gradient = true
[training]
lr = 0.02
lr_head = 0.02
batch = 64
steps = 300
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn json_summary_has_the_contract_keys_and_csv_has_the_requested_rows() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", CONFIG);
    let csv = dir.path().join("t.csv");
    let (code, out, err) = predhead(&[
        "sgd",
        "--config",
        &cfg,
        "--seed",
        "3",
        "--json",
        "--out",
        csv.to_str().unwrap(),
        "--record-every",
        "50",
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        err.is_empty(),
        "no progress bar when stderr is not a terminal: {err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in SUMMARY_KEYS {
        assert!(v.get(key).is_some(), "missing key {key} in {out}");
    }
    assert!(v.get("rhs_evals").is_none(), "rhs_evals is flow-only");
    assert_eq!(v["a_final"].as_array().unwrap().len(), 2);
    // Times are flow times: multiples of lr = 0.02, at most steps * lr = 6.
    if let Some(t1) = v["t1"].as_f64() {
        assert!(t1 <= 6.0 + 1e-12);
        let k = t1 / 0.02;
        assert!((k - k.round()).abs() < 1e-9, "t1 = {t1} is not a step time");
    }
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("tau,a_0,a_1,b_0,b_1"));
    let steps = v["steps"].as_u64().unwrap();
    // Rows at step 0, every 50 steps, and the last step.
    let expect = 1 + steps / 50 + u64::from(!steps.is_multiple_of(50));
    assert_eq!(lines.len() as u64, 1 + expect, "{text}");
    // Same seed, same output (determinism through the binary).
    let (_, again, _) = predhead(&["sgd", "--config", &cfg, "--seed", "3", "--json"]);
    assert_eq!(out, again);
}

#[test]
fn state_input_and_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", CONFIG);
    let w0: Vec<f64> = (0..24).map(|i| if i == 0 { 0.3 } else { 0.05 }).collect();
    let w1: Vec<f64> = (0..24).map(|i| if i == 1 { 0.3 } else { -0.04 }).collect();
    let state = serde_json::json!({"w": [w0, w1], "e": [[1.0, 0.0], [0.0, 1.0]]});
    let st = write(dir.path(), "s.json", &state.to_string());
    let (code, out, err) = predhead(&["sgd", "--config", &cfg, "--state", &st]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("outcome = "), "{out}");
    assert!(out.contains("t1 = "), "{out}");
}

#[test]
fn bad_input_exits_2_with_one_stderr_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", CONFIG);
    let bad_batch = write(
        dir.path(),
        "b.toml",
        &CONFIG.replace("batch = 64", "batch = 1"),
    );
    let bad_lr = write(
        dir.path(),
        "l.toml",
        &CONFIG.replace("lr = 0.02\n", "lr = -1.0\n"),
    );
    // Sizes whose arrays cannot be allocated: refused, not an allocation abort.
    let huge_m = write(
        dir.path(),
        "m.toml",
        &CONFIG.replace("neurons = 2", "neurons = 1000000000000"),
    );
    let huge_d = write(
        dir.path(),
        "d.toml",
        &CONFIG.replace("dim = 24", "dim = 100000000"),
    );
    let short = write(
        dir.path(),
        "s.json",
        r#"{"w": [[1.0], [2.0]], "e": [[1,0],[0,1]]}"#,
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["sgd", "--config", &bad_batch], "training.batch"),
        (vec!["sgd", "--config", &bad_lr], "training.lr"),
        (vec!["sgd", "--config", &huge_m], "setting.neurons"),
        // The explicit engine refuses it (without --engine the reduced engine runs it).
        (
            vec!["sgd", "--config", &huge_d, "--engine", "explicit"],
            "setting.dim",
        ),
        (
            vec!["sgd", "--config", &cfg, "--state", &short],
            "state.w[0]",
        ),
        (
            vec!["sgd", "--config", &cfg, "--record-every", "0"],
            "--record-every",
        ),
        (
            vec!["sgd", "--config", &cfg, "--seed", "1", "--state", &short],
            "--state",
        ),
        (
            vec!["sgd", "--config", "/nonexistent/c.toml"],
            "/nonexistent/c.toml",
        ),
    ];
    for (args, field) in cases {
        let err = assert_bad_input(&args);
        assert!(err.contains(field), "{args:?}: {err} should name {field}");
    }
}
