//! `predhead sgd --engine reduced` (`docs/cli.md`, "sgd --engine reduced"): the contract's
//! summary keys plus `engine`, the engine rule, `--state` and `--data-seed`, determinism, the
//! CSV, `non-finite` termination, and bad input.

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

fn json(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = predhead(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

/// The reduced engine prints the contract's keys, then `engine`; it is
/// deterministic; the default rule picks explicit at `d = 24` (no `engine` key: the output
/// is the explicit engine's) and reduced at `d = 1e12`.
#[test]
fn summary_keys_engine_rule_and_determinism() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", CONFIG);
    let args = [
        "sgd", "--config", &cfg, "--seed", "3", "--engine", "reduced", "--json",
    ];
    let v = json(&args);
    for k in SUMMARY_KEYS {
        assert!(v.get(k).is_some(), "{k}");
    }
    // The order of the text: the contract's keys first, `engine` last.
    let (_, text, _) = predhead(&args);
    assert!(text.find("\"t1\"") < text.find("\"outcome\""));
    assert!(
        text.trim_end().ends_with("\"engine\":\"reduced\"}"),
        "{text}"
    );
    assert_eq!(v["engine"], "reduced");
    assert_eq!(v["steps"], 300);
    assert_eq!(predhead(&args).1, predhead(&args).1);
    let explicit = json(&["sgd", "--config", &cfg, "--seed", "3", "--json"]);
    assert!(explicit.get("engine").is_none());
    let big = write(
        dir.path(),
        "big.toml",
        &CONFIG
            .replace("dim = 24", "dim = 1000000000000")
            .replace("lr = 0.02\nlr_head = 0.02", "lr = 1e-12\nlr_head = 1e-12")
            .replace("steps = 300", "steps = 20"),
    );
    let v = json(&["sgd", "--config", &big, "--json"]);
    assert_eq!(v["engine"], "reduced");
    assert_eq!(v["termination"], "horizon");
}

/// `--state` reduces an explicit state, `--data-seed` picks the stream.
#[test]
fn state_and_data_seed() {
    let dir = tempfile::tempdir().unwrap();
    // One step at lr = 1e-300 moves no coordinate by an ulp: the final a, b are the
    // state's, G is its Gram block to rounding (the factor R^T R of eq. (R10)).
    let zero = write(
        dir.path(),
        "z.toml",
        &CONFIG
            .replace("steps = 300", "steps = 1")
            .replace("lr = 0.02\nlr_head = 0.02", "lr = 1e-300\nlr_head = 1e-300"),
    );
    let cfg = write(dir.path(), "c.toml", CONFIG);
    let w0: Vec<f64> = (0..24).map(|i| 0.1 + 0.01 * i as f64).collect();
    let w1: Vec<f64> = (0..24).map(|i| 0.05 - 0.02 * (i % 5) as f64).collect();
    let gram01: f64 = w0[2..].iter().zip(&w1[2..]).map(|(x, y)| x * y).sum();
    let state = serde_json::json!({"w": [w0, w1], "e": [[1.0, 0.0], [0.0, 1.0]]});
    let st = write(dir.path(), "s.json", &state.to_string());
    let v = json(&[
        "sgd", "--config", &zero, "--state", &st, "--engine", "reduced", "--json",
    ]);
    assert_eq!(v["a_final"][0], 0.1);
    assert_eq!(v["b_final"][1], 0.05 - 0.02);
    let g01 = v["gram_final"][0][1].as_f64().unwrap();
    assert!((g01 - gram01).abs() < 1e-15, "{g01} {gram01}");
    let run = |seed: &str| {
        json(&[
            "sgd",
            "--config",
            &cfg,
            "--state",
            &st,
            "--engine",
            "reduced",
            "--json",
            "--data-seed",
            seed,
        ])
    };
    assert_eq!(run("5"), run("5"));
    assert_ne!(run("5")["a_final"], run("6")["a_final"]);
}

/// The CSV has the explicit engine's header and the requested rows; a diverging run ends
/// with termination `non-finite`, the last finite state and its step count.
#[test]
fn csv_and_non_finite_termination() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", CONFIG);
    let csv = dir.path().join("r.csv");
    let csv_s = csv.to_str().unwrap();
    let common = [
        "sgd",
        "--config",
        &cfg,
        "--seed",
        "1",
        "--record-every",
        "100",
    ];
    let (code, _, err) =
        predhead(&[&common[..], &["--out", csv_s, "--engine", "reduced"]].concat());
    assert_eq!(code, 0, "{err}");
    let reduced = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(reduced.lines().count(), 1 + 4, "{reduced}");
    let (code, _, err) =
        predhead(&[&common[..], &["--out", csv_s, "--engine", "explicit"]].concat());
    assert_eq!(code, 0, "{err}");
    let explicit = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(reduced.lines().next(), explicit.lines().next());

    let wild = write(
        dir.path(),
        "w.toml",
        &CONFIG
            .replace("lr = 0.02\nlr_head = 0.02", "lr = 1e3\nlr_head = 1e3")
            .replace("batchnorm", "none"),
    );
    let v = json(&["sgd", "--config", &wild, "--engine", "reduced", "--json"]);
    assert_eq!(v["termination"], "non-finite");
    let steps = v["steps"].as_u64().unwrap();
    assert!(steps < 300, "{steps}");
    assert!(v["a_final"][0].as_f64().unwrap().is_finite());
    // Where and why, as the explicit engine says it: the failed step is the next one.
    assert_eq!(v["nonfinite_step"].as_u64(), Some(steps + 1));
    assert_eq!(v["nonfinite_tau"].as_f64(), Some(1e3 * (steps + 1) as f64));
    assert!(v["nonfinite_reason"].is_string());
    // A finite run has none of these keys.
    let fine = json(&["sgd", "--config", &cfg, "--engine", "reduced", "--json"]);
    assert!(fine.get("nonfinite_step").is_none(), "{fine}");
}

/// Bad input: exit status 2, one stderr line naming the field.
#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", CONFIG);
    let huge_n = write(
        dir.path(),
        "n.toml",
        &CONFIG.replace("batch = 64", "batch = 100000000000"),
    );
    let short = write(
        dir.path(),
        "s.json",
        r#"{"w": [[1.0], [2.0]], "e": [[1,0],[0,1]]}"#,
    );
    for (args, field) in [
        (
            vec!["sgd", "--config", &huge_n, "--engine", "reduced"],
            "training.batch",
        ),
        (
            vec![
                "sgd", "--config", &cfg, "--engine", "reduced", "--state", &short,
            ],
            "state.w[0]",
        ),
        (
            vec![
                "sgd",
                "--config",
                &cfg,
                "--engine",
                "reduced",
                "--record-every",
                "0",
            ],
            "--record-every",
        ),
        (
            vec!["sgd", "--config", &cfg, "--engine", "fast"],
            "--engine",
        ),
    ] {
        let err = assert_bad_input(&args);
        assert!(err.contains(field), "{args:?}: {err}");
    }
}
