//! `predhead flow` on the command line (contract: `../shared/contract.md`).

mod common;
use common::{assert_bad_input, predhead, SUMMARY_KEYS};

const CONFIG: &str = r#"
[setting]
dim = 30
patches = 8
feature_patches = 2
alpha = [2.0, 1.0]
noise_std = 1.0
neurons = 2

[model]
head = "identity-offdiag"
normalization = "batchnorm"
stop_gradient = true

[training]
lr = 1e-3
lr_head = 2e-4
"#;

/// `--json` prints one object with the contract keys in the contract's order; `--out`
/// writes the documented CSV; `--state` and `--seed` both work.
#[test]
fn json_summary_and_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let csv = dir.path().join("t.csv");
    let (code, out, err) = predhead(&[
        "flow",
        "--config",
        cfg.to_str().unwrap(),
        "--seed",
        "3",
        "--json",
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1);
    let keys: Vec<&str> = SUMMARY_KEYS.iter().copied().chain(["rhs_evals"]).collect();
    let pos: Vec<usize> = keys
        .iter()
        .map(|k| {
            out.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} in {out}"))
        })
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["rhs_evals"].as_u64().unwrap() > 0);
    // The integrators' extras: the defaults, and the steps split between them.
    assert_eq!(v["method"], "auto");
    assert_eq!(v["explicit"], "dop853");
    assert_eq!(v["stiff"], "rodas5");
    assert_eq!(
        v["explicit_steps"].as_u64().unwrap() + v["rosenbrock_steps"].as_u64().unwrap(),
        v["steps"].as_u64().unwrap()
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let header = text.lines().next().unwrap();
    assert_eq!(
        header,
        "tau,a_0,a_1,b_0,b_1,g_0_0,g_0_1,g_1_1,e_0_0,e_0_1,e_1_0,e_1_1,loss,offdiag,corr_0_1"
    );
    assert!(text.lines().count() > 10);

    // --state: the explicit initialization of seed 3, reduced.
    let s = predhead::config::parse_config(CONFIG).unwrap();
    let st = predhead::init::explicit(&s.setting, 3).unwrap();
    let state = dir.path().join("s.json");
    std::fs::write(&state, serde_json::to_string(&st).unwrap()).unwrap();
    let (code, out, err) = predhead(&[
        "flow",
        "--config",
        cfg.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("phases (flow time): t1 = "), "{out}");
}

/// Bad input: exit status 2, nothing on stdout, one line on stderr.
#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let state = dir.path().join("s.json");
    std::fs::write(&state, r#"{"w": [[1.0]], "e": [[1.0]]}"#).unwrap();
    // A neuron that is exactly zero: batch-norm variance 0 at the start.
    let zero = dir.path().join("z.json");
    let w0 = vec![0.0; 30];
    let w1: Vec<f64> = (0..30).map(|i| 0.1 + 0.01 * i as f64).collect();
    std::fs::write(
        &zero,
        serde_json::json!({"w": [w0, w1], "e": [[1.0, 0.0], [0.0, 1.0]]}).to_string(),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let s = state.to_str().unwrap();
    let z = zero.to_str().unwrap();
    for args in [
        vec!["flow", "--config", c, "--seed", "1", "--state", s],
        vec!["flow", "--config", c, "--method", "euler"],
        vec!["flow", "--config", c, "--explicit", "rk4"],
        vec!["flow", "--config", c, "--stiff", "radau5"],
        vec!["flow", "--config", c, "--rtol", "-1"],
        vec!["flow", "--config", c, "--state", s],
        vec!["flow", "--config", "/nonexistent.toml"],
        vec!["flow", "--config", c, "--state", z],
    ] {
        assert_bad_input(&args);
    }
}
