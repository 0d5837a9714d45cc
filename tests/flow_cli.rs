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

/// The JSON of a `flow` run without the keys of the error estimate, which differ between a
/// refined run and the same run made directly with `--no-error-estimate`.
fn without_check_keys(mut v: serde_json::Value) -> serde_json::Value {
    for k in [
        "rtol_requested",
        "event_error",
        "event_error_met",
        "event_error_target",
        "event_error_differs",
        "compared_rtol",
        "refinements",
        "check_rhs_evals",
        "check_error",
    ] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

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
    // The progress bar is drawn on a terminal only: stderr is not one here.
    assert!(err.is_empty(), "stderr off a terminal: {err}");
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
    // The error estimate of the event times (derivations/numerics.md, "Global error of
    // the event times"): a companion at 10 rtol, no refinement on this case.
    assert_eq!(v["rtol"], 1e-9);
    assert_eq!(v["rtol_requested"], 1e-9);
    assert_eq!(v["compared_rtol"], 1e-8);
    assert_eq!(v["refinements"], 0);
    assert_eq!(v["event_error_met"], true);
    assert_eq!(v["event_error_target"], 1e-6);
    assert!(v["check_rhs_evals"].as_u64().unwrap() > 0);
    for k in ["t1", "t2", "t3", "t_end"] {
        let est = &v["event_error"][k];
        if v[k].is_null() {
            assert!(est.is_null(), "{k}: {out}");
        } else {
            let est = est.as_f64().unwrap();
            assert!((1e-9..=1e-6).contains(&est), "{k}: {est}");
        }
    }
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

/// A refinement: with a target no run can meet, the run is refined twice, to rtol 1e-11,
/// and reported as not meeting it; its JSON (but for the estimate's keys) and its CSV are
/// those of `--rtol 1e-11 --no-error-estimate`, and no partial CSV is left behind.
#[test]
fn refined_run_is_the_run_at_the_refined_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let c = cfg.to_str().unwrap();
    let refined_csv = dir.path().join("refined.csv");
    let direct_csv = dir.path().join("direct.csv");
    let run = |extra: &[&str]| {
        let mut args = vec!["flow", "--config", c, "--seed", "3"];
        args.extend_from_slice(extra);
        let (code, out, err) = predhead(&args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let refined = run(&[
        "--json",
        "--event-rtol",
        "1e-15",
        "--out",
        refined_csv.to_str().unwrap(),
    ]);
    let direct = run(&[
        "--json",
        "--rtol",
        "1e-11",
        "--no-error-estimate",
        "--out",
        direct_csv.to_str().unwrap(),
    ]);
    let r: serde_json::Value = serde_json::from_str(&refined).unwrap();
    let d: serde_json::Value = serde_json::from_str(&direct).unwrap();
    assert_eq!(r["refinements"], 2);
    assert_eq!(r["rtol"], 1e-11);
    assert_eq!(r["rtol_requested"], 1e-9);
    assert_eq!(r["compared_rtol"], 1e-10);
    assert_eq!(r["event_error_met"], false);
    assert!(d["event_error"].is_null() && d["event_error_met"].is_null());
    assert_eq!(d["refinements"], 0);
    assert_eq!(without_check_keys(r), without_check_keys(d));
    assert_eq!(
        std::fs::read(&refined_csv).unwrap(),
        std::fs::read(&direct_csv).unwrap()
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");

    let text = run(&["--event-rtol", "1e-15"]);
    assert!(
        text.contains("NOT within the target 1e-15, after 2 refinement(s) to rtol 1e-11"),
        "{text}"
    );
    let text = run(&[]);
    assert!(text.contains("within the target 1e-6"), "{text}");
}

/// A refinement for an unresolved `t2` ((G2), (G3) of `derivations/numerics.md`) reports the
/// head's absolute tolerance it ran with, and the reported run is the run at `--rtol` and
/// `--atol-head` of the JSON, bit for bit. The case is case 186 of the seed-104 held-out
/// sweep (`tests/flow_global_error.rs::events_below_the_head_tolerance_are_refined_until_resolved`).
#[test]
fn a_refinement_for_an_unresolved_event_reports_its_head_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        CONFIG
            .replace("dim = 30", "dim = 284932610")
            .replace("patches = 8", "patches = 10")
            .replace("feature_patches = 2", "feature_patches = 3")
            .replace(
                "alpha = [2.0, 1.0]",
                "alpha = [0.9523868143728125, 0.6349245429152083]",
            )
            .replace("noise_std = 1.0", "noise_std = 0.973360008201608")
            .replace("lr_head = 2e-4", "lr_head = 5e-5"),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["flow", "--config", c, "--seed", "606", "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = predhead(&args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let r = run(&[]);
    assert_eq!(r["refinements"], 2);
    assert_eq!(r["rtol"], 1e-11);
    assert_eq!(r["event_error_met"], true);
    assert!(r["t2"].is_null());
    let atol_head = r["atol_head"].as_f64().unwrap();
    assert!(atol_head < 1e-3 * 1e-11 / 10.0, "{atol_head:e}");
    let d = run(&[
        "--rtol",
        "1e-11",
        "--atol-head",
        &format!("{atol_head:e}"),
        "--no-error-estimate",
    ]);
    assert_eq!(d["atol_head"], atol_head);
    assert_eq!(without_check_keys(r), without_check_keys(d));
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
    // More neurons than the flow's exact Jacobian affords (and 1e12, which would abort on
    // allocation without the check).
    let many = dir.path().join("many.toml");
    std::fs::write(&many, CONFIG.replace("neurons = 2", "neurons = 74")).unwrap();
    let huge = dir.path().join("huge.toml");
    std::fs::write(
        &huge,
        CONFIG.replace("neurons = 2", "neurons = 1000000000000"),
    )
    .unwrap();
    for path in [&many, &huge] {
        let err = assert_bad_input(&["flow", "--config", path.to_str().unwrap()]);
        assert!(err.contains("setting.neurons"), "{err}");
    }
    let c = cfg.to_str().unwrap();
    let s = state.to_str().unwrap();
    let z = zero.to_str().unwrap();
    for args in [
        vec!["flow", "--config", c, "--seed", "1", "--state", s],
        vec!["flow", "--config", c, "--method", "euler"],
        vec!["flow", "--config", c, "--explicit", "rk4"],
        vec!["flow", "--config", c, "--stiff", "radau5"],
        vec!["flow", "--config", c, "--rtol", "-1"],
        vec!["flow", "--config", c, "--event-rtol", "0"],
        vec!["flow", "--config", c, "--event-rtol", "-1e-6"],
        vec!["flow", "--config", c, "--event-rtol", "nan"],
        vec!["flow", "--config", c, "--max-refinements", "-1"],
        vec!["flow", "--config", c, "--state", s],
        vec!["flow", "--config", "/nonexistent.toml"],
        vec!["flow", "--config", c, "--state", z],
    ] {
        assert_bad_input(&args);
    }
}

/// `--record-every K` (the cadence `flow` shares with `sgd`, `observe::Cadence`): the CSV
/// keeps the start, every K-th accepted step, every event and the end, so its rows are a
/// subset of the default CSV's with the same first and last row, the events' rows among
/// them, and the summary unchanged. `--record-every 1` is the default byte for byte.
/// Falsifier: at K = 7 the CSV is strictly shorter (the check that rows are kept would pass
/// on an unthinned file too, the length check would not), and K = 0 is refused.
#[test]
fn record_every_thins_the_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let run = |name: &str, extra: &[&str]| {
        let csv = dir.path().join(name);
        let args = [
            &[
                "flow",
                "--config",
                cfg.to_str().unwrap(),
                "--json",
                "--stop-at-t-end",
                "--no-error-estimate",
                "--out",
                csv.to_str().unwrap(),
            ],
            extra,
        ]
        .concat();
        let (code, out, err) = predhead(&args);
        assert_eq!(code, 0, "{err}");
        (out, std::fs::read_to_string(csv).unwrap())
    };
    let (json_all, all) = run("all.csv", &[]);
    let (json_one, one) = run("one.csv", &["--record-every", "1"]);
    let (json_seven, seven) = run("seven.csv", &["--record-every", "7"]);
    assert_eq!((&json_one, &one), (&json_all, &all));
    assert_eq!(json_seven, json_all);
    let rows: Vec<&str> = all.lines().collect();
    let kept: Vec<&str> = seven.lines().collect();
    assert!(
        kept.len() < rows.len() / 3,
        "{} of {}",
        kept.len(),
        rows.len()
    );
    assert_eq!((kept[0], kept[1]), (rows[0], rows[1]));
    assert_eq!(kept.last(), rows.last());
    // Every kept row is a row of the full CSV, in the same order.
    let mut it = rows.iter();
    assert!(kept.iter().all(|k| it.any(|r| r == k)));
    // The events' rows are kept: each event time of the summary starts some row.
    let v: serde_json::Value = serde_json::from_str(&json_all).unwrap();
    for key in ["t1", "t2", "t3", "t_end"] {
        let t = v[key].as_f64().unwrap_or_else(|| panic!("{key} happens"));
        let tau = format!("{t:?},");
        assert!(kept.iter().any(|r| r.starts_with(&tau)), "{key} = {t}");
    }
    let err = assert_bad_input(&[
        "flow",
        "--config",
        cfg.to_str().unwrap(),
        "--record-every",
        "0",
    ]);
    assert!(err.contains("--record-every") && err.contains("0"), "{err}");
}
