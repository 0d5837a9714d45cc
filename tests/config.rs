//! The configuration parser (`src/config.rs`): defaults, round trip, and the error of every
//! validation rule at the library level (the binary's side is `tests/eval_contract.rs`).

use predhead::config::{parse_config, validate};
use predhead::setting::{HeadMode, Normalization, Training};
use predhead::Error;

const BASE: &str = r#"
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

fn err(text: &str) -> Error {
    match parse_config(text) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn invalid(from: &str, to: &str, field: &str) {
    assert!(BASE.contains(from), "{from}");
    match err(&BASE.replace(from, to)) {
        Error::Invalid { field: f, .. } => assert_eq!(f, field),
        other => panic!("{from} -> {to}: expected Invalid({field}), got {other:?}"),
    }
}

#[test]
fn defaults_and_values() {
    let c = parse_config(BASE).unwrap();
    assert_eq!(c.setting.dim, 6);
    assert_eq!(c.setting.patches, 4);
    assert_eq!(c.setting.feature_patches, 2);
    assert_eq!(c.setting.alpha, [4.0, 1.0]);
    assert_eq!(c.setting.neurons, 2);
    assert_eq!(c.model.head, HeadMode::IdentityOffdiag);
    assert_eq!(c.model.normalization, Normalization::Batchnorm);
    assert!(c.model.stop_gradient);
    assert_eq!(c.training, Training::defaults(6));
    assert_eq!(c.training.horizon, 1e3 * 36.0);
    assert_eq!(c.training.lr_head, c.training.lr / 10.0);
    // lr alone sets lr_head = lr / 10; lr_head overrides it.
    let c = parse_config(&format!("{BASE}\n[training]\nlr = 0.5\n")).unwrap();
    assert_eq!((c.training.lr, c.training.lr_head), (0.5, 0.05));
    let c = parse_config(&format!("{BASE}\n[training]\nlr = 0.5\nlr_head = 0.2\n")).unwrap();
    assert_eq!((c.training.lr, c.training.lr_head), (0.5, 0.2));
    // An integral float is an integer; dim may be huge (the flow runs at d = 1e12).
    let c = parse_config(&BASE.replace("dim = 6", "dim = 1e12")).unwrap();
    assert_eq!(c.setting.dim, 1_000_000_000_000);
}

#[test]
fn round_trip_through_toml() {
    let text = format!(
        "{}\n[training]\nlr = 0.25\nbatch = 64\nsteps = 10\nhorizon = 7.5\n\n[phases]\nt1 = 0.4\n",
        BASE.replace("\"batchnorm\"", "\"none\"")
            .replace("\"identity-offdiag\"", "\"linear\"")
    );
    let c = parse_config(&text).unwrap();
    assert_eq!(c.model.head, HeadMode::Linear);
    assert_eq!(c.model.normalization, Normalization::None);
    assert_eq!(c.phases.t1, 0.4);
    let back = parse_config(&c.to_toml()).unwrap();
    assert_eq!(back, c);
    validate(&back).unwrap();
}

#[test]
fn every_rule_is_an_invalid_error_naming_its_field() {
    invalid("dim = 6", "dim = 2", "setting.dim");
    invalid("patches = 4", "patches = 3", "setting.patches");
    invalid(
        "feature_patches = 2",
        "feature_patches = 0",
        "setting.feature_patches",
    );
    invalid(
        "feature_patches = 2",
        "feature_patches = 5",
        "setting.feature_patches",
    );
    invalid("[4.0, 1.0]", "[1.0, 4.0]", "setting.alpha");
    invalid("[4.0, 1.0]", "[-1.0, 1.0]", "setting.alpha[0]");
    invalid("[4.0, 1.0]", "[4.0, nan]", "setting.alpha[1]");
    invalid("[4.0, 1.0]", "[4.0, 1.0, 0.5]", "setting.alpha");
    invalid("noise_std = 1.0", "noise_std = 0", "setting.noise_std");
    invalid("noise_std = 1.0", "noise_std = inf", "setting.noise_std");
    invalid("neurons = 2", "neurons = 1", "setting.neurons");
    invalid("neurons = 2", "neurons = -2", "setting.neurons");
    invalid("\"identity-offdiag\"", "\"mlp\"", "model.head");
    invalid("\"batchnorm\"", "\"layernorm\"", "model.normalization");
    invalid(
        "stop_gradient = true",
        "stop_gradient = 1",
        "model.stop_gradient",
    );
    let training = |line: &str, field: &str| {
        invalid(
            "stop_gradient = true",
            &format!("stop_gradient = true\n[training]\n{line}"),
            field,
        )
    };
    training("lr = 0", "training.lr");
    training("lr = nan", "training.lr");
    training("lr_head = -1", "training.lr_head");
    training("batch = 1", "training.batch");
    training("steps = 0", "training.steps");
    training("horizon = inf", "training.horizon");
    // A single neuron is fine when the head is not the paper's.
    parse_config(
        &BASE
            .replace("neurons = 2", "neurons = 1")
            .replace("\"identity-offdiag\"", "\"frozen\""),
    )
    .unwrap();
}

#[test]
fn unknown_and_missing_keys() {
    let unknown = |text: String, field: &str| match err(&text) {
        Error::UnknownKey { field: f } => assert_eq!(f, field),
        other => panic!("expected UnknownKey({field}), got {other:?}"),
    };
    unknown(format!("seed = 1\n{BASE}"), "seed");
    unknown(BASE.replace("dim = 6", "dim = 6\nd = 6"), "setting.d");
    unknown(
        BASE.replace("stop_gradient = true", "stop_gradient = true\neps = 0"),
        "model.eps",
    );
    unknown(
        format!("{BASE}\n[training]\nmomentum = 0.9\n"),
        "training.momentum",
    );
    unknown(format!("{BASE}\n[phases]\nt4 = 1.0\n"), "phases.t4");
    let missing = |text: String, field: &str| match err(&text) {
        Error::Missing { field: f } => assert_eq!(f, field),
        other => panic!("expected Missing({field}), got {other:?}"),
    };
    missing(BASE.replace("noise_std = 1.0\n", ""), "setting.noise_std");
    missing(
        BASE.replace("normalization = \"batchnorm\"\n", ""),
        "model.normalization",
    );
    missing(BASE.split("[model]").next().unwrap().to_string(), "model");
    assert!(matches!(err("[setting"), Error::Parse { .. }));
}
