//! The `predhead eval` contract (`../shared/contract.md`), checked on the binary: good
//! population and batch cases (keys, shapes, and the numbers against the library), and
//! every validation rule: exit status 2, exactly one line on stderr naming the field,
//! nothing on stdout.

use predhead::config::parse_config;
use predhead::data::batch_views;
use predhead::moments::population::Constants;
use predhead::network::{batch_loss_and_gradient, Batch};
use predhead::reduced::evaluate_explicit;
use predhead::state::State;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const CONFIG: &str = r#"
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

[training]
lr = 0.01
"#;

const STATE: &str = r#"{"w": [[0.5, 0.1, 0.2, -0.3, 0.1, 0.0], [0.1, 0.4, -0.2, 0.3, 0.0, 0.2]],
 "e": [[1.0, 0.1], [-0.05, 1.0]]}"#;

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `predhead eval` on temporary files holding the given texts, plus extra arguments.
fn eval(config: &str, state: &str, batch: Option<&str>, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let c = write("config.toml", config);
    let s = write("state.json", state);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_predhead"));
    cmd.arg("eval")
        .arg("--config")
        .arg(&c)
        .arg("--state")
        .arg(&s);
    if let Some(b) = batch {
        cmd.arg("--batch").arg(write("batch.json", b));
    }
    let out = cmd.args(extra).output().unwrap();
    Output {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[track_caller]
fn expect_error(out: Output, field: &str) {
    assert_eq!(out.code, Some(2), "exit status; stderr: {}", out.stderr);
    assert!(out.stdout.is_empty(), "stdout not empty: {}", out.stdout);
    assert!(out.stderr.ends_with('\n'), "stderr: {:?}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "stderr: {:?}", out.stderr);
    assert!(
        out.stderr.contains(field),
        "stderr does not name {field}: {}",
        out.stderr
    );
}

#[track_caller]
fn config_error(config: &str, field: &str) {
    expect_error(eval(config, STATE, None, &[]), field);
}

fn with(from: &str, to: &str) -> String {
    assert!(CONFIG.contains(from), "{from}");
    CONFIG.replace(from, to)
}

fn numbers(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Parses the one JSON line, checks the keys (in the contract's order) and the shapes.
fn parse_output(out: &Output, m: usize, d: usize) -> Value {
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(out.stderr.is_empty());
    assert_eq!(out.stdout.lines().count(), 1);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "keys {keys:?}");
    let pos = |k: &str| out.stdout.find(&format!("\"{k}\"")).unwrap();
    assert!(pos("loss") < pos("grad_w") && pos("grad_w") < pos("grad_e"));
    let gw = v["grad_w"].as_array().unwrap();
    assert_eq!(gw.len(), m);
    assert!(gw.iter().all(|r| r.as_array().unwrap().len() == d));
    let ge = v["grad_e"].as_array().unwrap();
    assert_eq!(ge.len(), m);
    assert!(ge.iter().all(|r| r.as_array().unwrap().len() == m));
    v
}

#[test]
fn population_case_matches_the_library() {
    let out = eval(CONFIG, STATE, None, &[]);
    let v = parse_output(&out, 2, 6);
    let config = parse_config(CONFIG).unwrap();
    let state = State::parse(STATE, &config.setting).unwrap();
    let k = Constants::<f64>::new(&config.setting, ());
    let ev = evaluate_explicit::<f64>(&k, &config.model, &state, ()).unwrap();
    // Shortest round-trip printing: the numbers come back bit for bit.
    assert_eq!(v["loss"].as_f64().unwrap().to_bits(), ev.loss.to_bits());
    assert_eq!(numbers(&v["grad_w"]), ev.grad_w);
    assert_eq!(numbers(&v["grad_e"]), ev.grad_e);
    // identity-offdiag: the diagonal of grad_e is 0.
    assert_eq!(ev.grad_e[0][0], 0.0);
    assert_eq!(ev.grad_e[1][1], 0.0);
}

#[test]
fn precision_case_prints_every_digit_and_agrees_with_f64() {
    let f64_out = eval(CONFIG, STATE, None, &[]);
    let f = parse_output(&f64_out, 2, 6);
    let out = eval(CONFIG, STATE, None, &["--precision", "200"]);
    let v = parse_output(&out, 2, 6);
    let loss = v["loss"].as_str().unwrap();
    // 200 bits are 61 decimal digits; to_decimal prints ceil(200 log10 2) + 1 = 62.
    let digits = loss.chars().filter(char::is_ascii_digit).count();
    assert!(digits >= 61, "{loss}");
    let hi: f64 = loss.parse().unwrap();
    let lo = f["loss"].as_f64().unwrap();
    assert!((hi - lo).abs() <= 1e-12 * lo.abs(), "{hi} vs {lo}");
    for (row_hi, row_lo) in v["grad_w"]
        .as_array()
        .unwrap()
        .iter()
        .zip(numbers(&f["grad_w"]))
    {
        for (x, y) in row_hi.as_array().unwrap().iter().zip(row_lo) {
            let x: f64 = x.as_str().unwrap().parse().unwrap();
            assert!((x - y).abs() <= 1e-10 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
}

#[test]
fn batch_case_matches_the_library() {
    for (head, norm, sg) in [
        ("identity-offdiag", "batchnorm", "true"),
        ("linear", "none", "false"),
        ("frozen", "batchnorm", "false"),
    ] {
        let text = CONFIG
            .replace("\"identity-offdiag\"", &format!("\"{head}\""))
            .replace("\"batchnorm\"", &format!("\"{norm}\""))
            .replace("stop_gradient = true", &format!("stop_gradient = {sg}"));
        let config = parse_config(&text).unwrap();
        let (x1, x2) = batch_views(&config.setting, 5, 0, 12);
        let batch = Batch::new(&config.setting, x1, x2).unwrap();
        let out = eval(&text, STATE, Some(&batch.to_json()), &[]);
        let v = parse_output(&out, 2, 6);
        let state = State::parse(STATE, &config.setting).unwrap();
        let ev = batch_loss_and_gradient(&config.setting, &config.model, &state, &batch).unwrap();
        assert_eq!(v["loss"].as_f64().unwrap().to_bits(), ev.loss.to_bits());
        assert_eq!(numbers(&v["grad_w"]), ev.grad_w);
        assert_eq!(numbers(&v["grad_e"]), ev.grad_e);
    }
}

#[test]
fn setting_rules() {
    config_error(&with("dim = 6", "dim = 2"), "setting.dim");
    config_error(&with("patches = 4", "patches = 5"), "setting.patches");
    config_error(&with("patches = 4", "patches = 0"), "setting.patches");
    config_error(
        &with("feature_patches = 2", "feature_patches = 0"),
        "setting.feature_patches",
    );
    config_error(
        &with("feature_patches = 2", "feature_patches = 5"),
        "setting.feature_patches",
    );
    config_error(&with("[4.0, 1.0]", "[1.0, 4.0]"), "setting.alpha");
    config_error(&with("[4.0, 1.0]", "[-1.0, 1.0]"), "setting.alpha[0]");
    config_error(&with("[4.0, 1.0]", "[4.0, 0.0]"), "setting.alpha[1]");
    config_error(&with("[4.0, 1.0]", "[4.0]"), "setting.alpha");
    config_error(&with("[4.0, 1.0]", "[inf, 1.0]"), "setting.alpha[0]");
    config_error(&with("[4.0, 1.0]", "[4.0, nan]"), "setting.alpha[1]");
    config_error(
        &with("noise_std = 1.0", "noise_std = 0.0"),
        "setting.noise_std",
    );
    config_error(
        &with("noise_std = 1.0", "noise_std = -1.0"),
        "setting.noise_std",
    );
    config_error(
        &with("noise_std = 1.0", "noise_std = nan"),
        "setting.noise_std",
    );
    config_error(
        &with("noise_std = 1.0", "noise_std = inf"),
        "setting.noise_std",
    );
    config_error(&with("dim = 6", "dim = 6.5"), "setting.dim");
    config_error(&with("dim = 6", "dim = \"six\""), "setting.dim");
    // The paper's head needs two neurons.
    config_error(&with("neurons = 2", "neurons = 1"), "setting.neurons");
    config_error(&with("neurons = 2", "neurons = 0"), "setting.neurons");
}

#[test]
fn training_rules() {
    config_error(&with("lr = 0.01", "lr = 0.0"), "training.lr");
    config_error(&with("lr = 0.01", "lr = -0.1"), "training.lr");
    config_error(&with("lr = 0.01", "lr = nan"), "training.lr");
    config_error(&with("lr = 0.01", "lr = inf"), "training.lr");
    config_error(&with("lr = 0.01", "lr_head = 0.0"), "training.lr_head");
    config_error(&with("lr = 0.01", "batch = 1"), "training.batch");
    config_error(&with("lr = 0.01", "horizon = -inf"), "training.horizon");
}

#[test]
fn unknown_and_missing_keys_and_values() {
    config_error(&format!("extra = 1\n{CONFIG}"), "extra");
    config_error(
        &with("dim = 6", "dim = 6\ndimension = 6"),
        "setting.dimension",
    );
    config_error(
        &with("lr = 0.01", "lr = 0.01\nmomentum = 0.9"),
        "training.momentum",
    );
    config_error(
        &with(
            "stop_gradient = true",
            "stop_gradient = true\nepsilon = 0.0",
        ),
        "model.epsilon",
    );
    config_error(
        &format!("{CONFIG}\n[optimizer]\nname = \"adam\"\n"),
        "optimizer",
    );
    config_error(&with("\"identity-offdiag\"", "\"mlp\""), "model.head");
    config_error(
        &with("\"batchnorm\"", "\"layernorm\""),
        "model.normalization",
    );
    config_error(
        &with("stop_gradient = true", "stop_gradient = \"yes\""),
        "model.stop_gradient",
    );
    config_error(&with("dim = 6\n", ""), "setting.dim");
    config_error(&with("neurons = 2\n", ""), "setting.neurons");
    config_error(&with("alpha = [4.0, 1.0]\n", ""), "setting.alpha");
    config_error(&with("stop_gradient = true\n", ""), "model.stop_gradient");
    config_error(&with("head = \"identity-offdiag\"\n", ""), "model.head");
    let no_model = CONFIG.split("[model]").next().unwrap().to_string();
    config_error(&no_model, "model");
    config_error(&with("[setting]", "[settings]"), "setting");
    config_error("this is = not toml [", "config");
}

#[test]
fn state_rules() {
    let e = r#""e": [[1.0, 0.1], [-0.05, 1.0]]"#;
    let w = r#""w": [[0.5, 0.1, 0.2, -0.3, 0.1, 0.0], [0.1, 0.4, -0.2, 0.3, 0.0, 0.2]]"#;
    let run = |state: &str, field: &str| expect_error(eval(CONFIG, state, None, &[]), field);
    run(
        &format!(r#"{{"w": [[0.5, 0.1, 0.2, -0.3, 0.1, 0.0]], {e}}}"#),
        "state.w",
    );
    run(
        &format!(r#"{{"w": [[0.5, 0.1, 0.2, -0.3, 0.1, 0.0], [0.1, 0.4, -0.2, 0.3, 0.0]], {e}}}"#),
        "state.w[1]",
    );
    run(
        &format!(
            r#"{{"w": [[0.5, 0.1, 0.2, -0.3, 0.1, "nan"], [0.1, 0.4, -0.2, 0.3, 0.0, 0.2]], {e}}}"#
        ),
        "state.w[0][5]",
    );
    run(
        &format!(r#"{{{w}, "e": [[1.0], [0.0, 1.0]]}}"#),
        "state.e[0]",
    );
    run(&format!(r#"{{{w}, "e": [[1.0, 0.0]]}}"#), "state.e");
    run(&format!(r#"{{{w}}}"#), "state.e");
    run(&format!(r#"{{{e}}}"#), "state.w");
    run(&format!(r#"{{{w}, {e}, "b": [0.0, 0.0]}}"#), "state.b");
    run(
        &format!(r#"{{{w}, "e": [[1.0, 1e999], [0.0, 1.0]]}}"#),
        "state",
    );
    run("[1, 2]", "state");
    run("{\"w\": ", "state");
}

/// A batch for the base config (P = 4, d = 6), given as nested arrays.
fn batch_text(n: usize, edit: impl Fn(&mut Value)) -> String {
    let config = parse_config(CONFIG).unwrap();
    let (x1, x2) = batch_views(&config.setting, 3, 0, n);
    let mut v: Value =
        serde_json::from_str(&Batch::new(&config.setting, x1, x2).unwrap().to_json()).unwrap();
    edit(&mut v);
    v.to_string()
}

#[test]
fn batch_rules() {
    let run = |batch: &str, field: &str| expect_error(eval(CONFIG, STATE, Some(batch), &[]), field);
    // Shape mismatches against the config.
    run(
        &batch_text(5, |v| {
            v["x1"][3][1].as_array_mut().unwrap().pop();
        }),
        "batch.x1[3][1]: expected 6 numbers (dim), got 5",
    );
    run(
        &batch_text(5, |v| {
            v["x2"][2].as_array_mut().unwrap().pop();
        }),
        "batch.x2[2]",
    );
    run(
        &batch_text(5, |v| {
            v["x2"].as_array_mut().unwrap().pop();
        }),
        "batch.x2",
    );
    run(
        &batch_text(5, |v| {
            v["x1"][0][0][0] = Value::String("nan".into());
        }),
        "batch.x1[0][0][0]",
    );
    run(
        &batch_text(2, |v| {
            v["x1"].as_array_mut().unwrap().pop();
            v["x2"].as_array_mut().unwrap().pop();
        }),
        "batch.x1: needs at least 2 samples",
    );
    run(
        &batch_text(5, |v| {
            v.as_object_mut().unwrap().remove("x2");
        }),
        "batch.x2",
    );
    run(
        &batch_text(5, |v| {
            v["labels"] = Value::from(vec![0, 1]);
        }),
        "batch.labels",
    );
    // A batch of another dimension: the config says d = 6.
    let wrong_dim = {
        let mut c = parse_config(CONFIG).unwrap();
        c.setting.dim = 5;
        let (x1, x2) = batch_views(&c.setting, 3, 0, 4);
        Batch::new(&c.setting, x1, x2).unwrap().to_json()
    };
    run(&wrong_dim, "batch.x1[0][0]");
    // Zero batch-norm variance: all-zero views, and identical samples.
    let zero = format!(
        "{{\"x1\": {z}, \"x2\": {z}}}",
        z = serde_json::to_string(&vec![vec![vec![0.0; 6]; 4]; 3]).unwrap()
    );
    run(&zero, "batch.x1");
    run(
        &batch_text(4, |v| {
            let first = v["x1"][0].clone();
            for s in v["x1"].as_array_mut().unwrap() {
                *s = first.clone();
            }
        }),
        "batch.x1",
    );
    run(
        &batch_text(4, |v| {
            let first = v["x2"][0].clone();
            for s in v["x2"].as_array_mut().unwrap() {
                *s = first.clone();
            }
        }),
        "batch.x2",
    );
    run("{\"x1\": [", "batch");
}

#[test]
fn argument_rules() {
    let batch = batch_text(4, |_| {});
    expect_error(
        eval(CONFIG, STATE, Some(&batch), &["--precision", "128"]),
        "--precision",
    );
    expect_error(
        eval(CONFIG, STATE, None, &["--precision", "52"]),
        "--precision",
    );
    expect_error(
        eval(CONFIG, STATE, None, &["--precision", "100001"]),
        "--precision",
    );
    expect_error(
        eval(CONFIG, STATE, None, &["--precision", "many"]),
        "--precision",
    );
    // A file that does not exist.
    let out = Command::new(env!("CARGO_BIN_EXE_predhead"))
        .args(["eval", "--config"])
        .arg(Path::new("/nonexistent/config.toml"))
        .args(["--state", "/nonexistent/state.json"])
        .output()
        .unwrap();
    expect_error(
        Output {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        },
        "/nonexistent/config.toml",
    );
}
