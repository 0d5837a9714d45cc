//! A deterministic fuzz test of the input side (issue 19): mutated configurations, states
//! and batches, from a fixed-seed mutator (delete, duplicate and rename keys, wrong types,
//! huge and tiny numbers, NaN and infinity spelled as strings, control characters, long
//! strings, wrong shapes, huge sizes, CR line endings, truncation).
//!
//! - In-process, [`IN_PROCESS`] cases of each kind go through the library's parse-and-
//!   validate entry points (`parse_config`, `State::parse` + `State::check_model`,
//!   `Batch::parse`, and the evaluations they feed) under `catch_unwind`: no panic, and
//!   every error is one line of bounded length ([`check_line`]).
//! - Through the binary, [`THROUGH_BINARY`] `eval` runs on mutated files and mutated
//!   argument lists: exit status 0 (one JSON line on stdout, nothing on stderr) or 2
//!   (nothing on stdout, exactly one checked line on stderr); never a signal (an abort).
//!
//! Deterministic: every case comes from `ChaCha8Rng::seed_from_u64` of fixed seeds, so a
//! failure reproduces, and the test cannot fail by chance.

use predhead::config::parse_config;
use predhead::error::{MAX_FIELD_CHARS, MAX_PROBLEM_CHARS};
use predhead::moments::population::Constants;
use predhead::network::{batch_loss_and_gradient, Batch};
use predhead::reduced::evaluate_explicit;
use predhead::setting::Config;
use predhead::state::State;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;

/// Cases of each kind (configs, states, batches) run in-process: 3 x 4000 >= 1e4.
const IN_PROCESS: usize = 4000;
/// Runs of the binary (files and argument lists).
const THROUGH_BINARY: usize = 300;

/// The longest error message: a field, `: `, a problem (`src/error.rs`).
const MAX_MESSAGE: usize = MAX_FIELD_CHARS + 2 + MAX_PROBLEM_CHARS;

const CONFIG: &str = r#"[setting]
dim = 3
patches = 2
feature_patches = 1
alpha = [2.0, 1.0]
noise_std = 1.0
neurons = 2

[model]
head = "linear"
normalization = "batchnorm"
stop_gradient = true

[training]
lr = 0.01
lr_head = 0.001
batch = 16
steps = 10
horizon = 1.0

[phases]
t1 = 0.5
t3 = 0.9
"#;

const STATE: &str = r#"{"w": [[0.9, 0.1, 0.3], [0.2, 0.8, -0.4]], "e": [[1.0, 0.1], [0.0, 1.0]]}"#;

const BATCH: &str = r#"{"x1": [[[2, 0, 0], [0, 0, 0.7]], [[0, 0, 0], [0, 0, 0.7]], [[0, 0, 0], [0, -1, 0]]],
 "x2": [[[0, 0, 0], [0, 0, -1.3]], [[0, 0, 0], [0, 2, 0]], [[0, 0, 0.4], [0, 0, 0]]]}"#;

/// Whether `message` is one line of bounded length that names something: no control
/// character or line separator, at most [`MAX_MESSAGE`] characters, a `field: problem`
/// form. The fuzz test's checker; `checker_rejects_planted_defects` is its falsifier.
fn check_line(message: &str) -> Result<(), String> {
    if message.is_empty() {
        return Err("empty message".into());
    }
    if let Some(c) = message
        .chars()
        .find(|&c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
    {
        return Err(format!("control character {c:?} in {message:?}"));
    }
    let n = message.chars().count();
    if n > MAX_MESSAGE {
        return Err(format!("{n} characters, more than {MAX_MESSAGE}"));
    }
    if !message.contains(": ") {
        return Err(format!("no `field: problem` form: {message:?}"));
    }
    Ok(())
}

/// A failure report cut to 400 characters (cases hold values of up to 50,000).
fn short(report: &str) -> String {
    report.chars().take(400).collect()
}

/// Runs `f` and turns a panic into an error naming the case.
fn no_panic<T>(case: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("panic on {case}: {what}")
    })
}

/// TOML literals for replaced values: wrong types, extreme numbers, NaN and infinities
/// (bare and as strings), control characters, long strings, huge sizes.
fn toml_value(rng: &mut ChaCha8Rng) -> String {
    const POOL: &[&str] = &[
        "0",
        "-1",
        "1",
        "2",
        "3",
        "4",
        "6",
        "0.5",
        "2.5",
        "-0.0",
        "1e12",
        "1e19",
        "1e308",
        "-1e308",
        "1.7e308",
        "5e-324",
        "1e-320",
        "1e-60",
        "nan",
        "-nan",
        "inf",
        "-inf",
        "\"nan\"",
        "\"inf\"",
        "\"NaN\"",
        "9223372036854775807",
        "-9223372036854775808",
        "1048574",
        "1048576",
        "1000000000000",
        "100000000",
        "true",
        "false",
        "[]",
        "[1]",
        "[4.0, 1.0]",
        "[1e300, 1e300]",
        "[1.0, 1e-60]",
        "[1.0, 2.0, 3.0]",
        "[\"a\", 1]",
        "[[1]]",
        "{}",
        "{a = 1}",
        "\"\"",
        "\"lin\\near\"",
        "\"\"\"6\n7\"\"\"",
        "'''x\ry'''",
        "\"\\u0000\\u001b[31m\"",
        "\"\\u2028\"",
        "1979-05-27",
        "0x10",
        "0o7",
        "\"linear\"",
        "\"frozen\"",
        "\"none\"",
        "\"batchnorm\"",
        "\"identity-offdiag\"",
    ];
    match rng.random_range(0..10) {
        0 => format!("\"{}\"", "x".repeat(rng.random_range(100..20_000))),
        1 => format!("{:e}", f64::from_bits(rng.random::<u64>())),
        2 => rng.random::<u64>().to_string(),
        _ => POOL[rng.random_range(0..POOL.len())].to_string(),
    }
}

/// A key name: known, unknown, or odd (quoted with control characters, very long).
fn toml_key(rng: &mut ChaCha8Rng) -> String {
    const KEYS: &[&str] = &[
        "dim",
        "patches",
        "feature_patches",
        "alpha",
        "noise_std",
        "neurons",
        "head",
        "normalization",
        "stop_gradient",
        "lr",
        "lr_head",
        "batch",
        "steps",
        "horizon",
        "t1",
        "t2",
        "t3",
        "t_end",
        "outcome_cos",
        "extra",
        "\"a\\nb\"",
        "\"a\\rb\"",
        "\"\"",
        "\"\\u0007\"",
    ];
    if rng.random_range(0..20) == 0 {
        format!("\"{}\"", "k".repeat(rng.random_range(100..5000)))
    } else {
        KEYS[rng.random_range(0..KEYS.len())].to_string()
    }
}

/// A control or unusual character for textual mutations.
fn odd_char(rng: &mut ChaCha8Rng) -> char {
    const CHARS: &[char] = &[
        '\n', '\r', '\t', '\0', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{2028}', '\u{2029}',
        '\u{feff}', '"', '\'', '[', ']', '{', '}', '=', ',', '#', '\\', 'é', '∞',
    ];
    CHARS[rng.random_range(0..CHARS.len())]
}

/// Textual mutations shared by TOML and JSON: control characters, truncation, CR line
/// endings, a duplicated or deleted line.
fn mutate_text(rng: &mut ChaCha8Rng, text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = rng.random_range(0..=chars.len());
    match rng.random_range(0..6) {
        0 => {
            let mut c = chars.clone();
            c.insert(at, odd_char(rng));
            c.into_iter().collect()
        }
        1 => chars[..at].iter().collect(),
        2 => text.replace('\n', "\r"),
        3 => text.replace('\n', "\r\n"),
        4 if !text.is_empty() => {
            let lines: Vec<&str> = text.lines().collect();
            let i = rng.random_range(0..lines.len());
            let mut out: Vec<&str> = lines.clone();
            out.insert(i, lines[i]);
            out.join("\n")
        }
        _ => {
            let mut c = chars.clone();
            if at < c.len() {
                c.remove(at);
            }
            c.into_iter().collect()
        }
    }
}

/// One mutation of a TOML configuration, line by line.
fn mutate_toml(rng: &mut ChaCha8Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let keyed: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains(" = "))
        .collect();
    if keyed.is_empty() {
        return mutate_text(rng, text);
    }
    let i = keyed[rng.random_range(0..keyed.len())];
    let key = lines[i].split(" = ").next().unwrap_or_default().to_string();
    match rng.random_range(0..8) {
        // Delete a key.
        0 => {
            lines.remove(i);
        }
        // Duplicate a key (with another value).
        1 => {
            let v = toml_value(rng);
            lines.insert(i + 1, format!("{key} = {v}"));
        }
        // Another key name (unknown, odd or known elsewhere).
        2 => {
            let v = lines[i].split(" = ").nth(1).unwrap_or_default().to_string();
            lines[i] = format!("{} = {v}", toml_key(rng));
        }
        // Rename or drop a table header.
        3 => {
            let headers: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].starts_with('['))
                .collect();
            if headers.is_empty() {
                return mutate_text(rng, text);
            }
            let h = headers[rng.random_range(0..headers.len())];
            lines[h] = match rng.random_range(0..4) {
                0 => String::new(),
                1 => "[settings]".to_string(),
                2 => "[[setting]]".to_string(),
                _ => "[model.extra]".to_string(),
            };
        }
        // Textual damage.
        4 => return mutate_text(rng, &lines.join("\n")),
        // Replace a value (the common case).
        _ => lines[i] = format!("{key} = {}", toml_value(rng)),
    }
    lines.join("\n") + "\n"
}

/// A JSON value for replacements: wrong types, extreme numbers, NaN spelled as strings,
/// control characters, long strings, deep nesting, huge shapes.
fn json_value(rng: &mut ChaCha8Rng) -> Value {
    match rng.random_range(0..16) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => Value::from("NaN"),
        3 => Value::from("inf"),
        4 => Value::from("a\nb\r\u{0}\u{2028}c"),
        5 => Value::from("z".repeat(rng.random_range(100..50_000))),
        6 => Value::from(f64::MAX),
        7 => Value::from(5e-324),
        8 => Value::from(-1e300),
        9 => Value::from(u64::MAX),
        10 => Value::from(i64::MIN),
        11 => serde_json::json!({"w": [1], "x1": []}),
        12 => Value::Array(vec![Value::from(1.0); rng.random_range(0..2000)]),
        13 => {
            let mut v = Value::from(1.0);
            for _ in 0..rng.random_range(1..100) {
                v = Value::Array(vec![v]);
            }
            v
        }
        14 => Value::Array(vec![]),
        _ => Value::from(f64::from_bits(rng.random::<u64>()).clamp(-1e300, 1e300)),
    }
}

/// A random node of `v`, to mutate in place: the root, or (4 times in 5) a random child's
/// random node.
fn random_node<'a>(rng: &mut ChaCha8Rng, v: &'a mut Value) -> &'a mut Value {
    let descend = rng.random_range(0..5) > 0;
    let len = match &*v {
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        _ => 0,
    };
    if !descend || len == 0 {
        return v;
    }
    let i = rng.random_range(0..len);
    match v {
        Value::Array(a) => random_node(rng, &mut a[i]),
        Value::Object(o) => match o.values_mut().nth(i) {
            Some(child) => random_node(rng, child),
            None => panic!("object of {len} values has no value {i}"),
        },
        other => other,
    }
}

/// One mutation of a JSON document (structural or textual); `keys` are its known keys, for
/// duplicates written into the text.
fn mutate_json(rng: &mut ChaCha8Rng, text: &str, keys: &[&str]) -> String {
    // After a textual mutation the text may no longer be JSON: damage it further.
    let Ok(mut v) = serde_json::from_str::<Value>(text) else {
        return mutate_text(rng, text);
    };
    match rng.random_range(0..10) {
        0 => {
            let key = keys[rng.random_range(0..keys.len())];
            if let Some(o) = v.as_object_mut() {
                o.remove(key);
            }
        }
        1 => {
            // A duplicate key: the text says it twice (a Value cannot).
            let key = keys[rng.random_range(0..keys.len())];
            let dup = json_value(rng);
            return text.replacen(
                &format!("\"{key}\":"),
                &format!("\"{key}\": {dup}, \"{key}\":"),
                1,
            );
        }
        2 => {
            let odd = ["a\nb", "", "w ", "x1\r", "\u{0}", "E"][rng.random_range(0..6)];
            if let Some(o) = v.as_object_mut() {
                o.insert(odd.to_string(), json_value(rng));
            }
        }
        3 => {
            let node = random_node(rng, &mut v);
            if let Value::Array(a) = node {
                a.pop();
            }
        }
        4 => {
            let node = random_node(rng, &mut v);
            if let Value::Array(a) = node {
                let extra = a.last().cloned().unwrap_or(Value::from(0.0));
                a.push(extra);
            }
        }
        5 => {
            let node = random_node(rng, &mut v);
            *node = Value::Array(vec![node.clone()]);
        }
        6 => return mutate_text(rng, text),
        7 => {
            // Non-JSON number spellings.
            let bad = [
                "NaN",
                "Infinity",
                "-Infinity",
                "1e999",
                "01",
                ".5",
                "+1",
                "0x10",
            ];
            return text.replacen("1.0", bad[rng.random_range(0..bad.len())], 1);
        }
        _ => {
            let node = random_node(rng, &mut v);
            *node = json_value(rng);
        }
    }
    v.to_string()
}

/// Checks an error message and counts it.
fn checked_error(case: &str, e: &predhead::Error) -> Result<(), String> {
    check_line(&e.to_string()).map_err(|m| format!("{case}: {m}"))
}

/// One configuration case in-process: parse and validate, then the size checks that the
/// commands run before allocating.
fn config_case(text: &str) -> Result<(), String> {
    let result = no_panic("config", || parse_config(text))?;
    match result {
        Ok(config) => no_panic("check_size", || predhead::sgd::check_size(&config))?
            .or_else(|e| checked_error("check_size", &e)),
        Err(e) => checked_error("config", &e),
    }
}

/// One state case in-process: parse, check against the model, evaluate the population.
fn state_case(config: &Config, text: &str) -> Result<(), String> {
    let k = Constants::<f64>::new(&config.setting, ());
    no_panic("state", || {
        let state = State::parse(text, &config.setting)?;
        state.check_model(&config.model)?;
        evaluate_explicit::<f64>(&k, &config.model, &state, ()).map(|_| ())
    })?
    .or_else(|e| checked_error("state", &e))
}

/// One batch case in-process: parse, evaluate the batch loss with both normalizations.
fn batch_case(config: &Config, state: &State, text: &str) -> Result<(), String> {
    no_panic("batch", || {
        let batch = Batch::parse(text, &config.setting)?;
        let mut model = config.model;
        let first = batch_loss_and_gradient(&config.setting, &model, state, &batch);
        model.normalization = predhead::setting::Normalization::None;
        let second = batch_loss_and_gradient(&config.setting, &model, state, &batch);
        first.and(second).map(|_| ())
    })?
    .or_else(|e| checked_error("batch", &e))
}

#[test]
fn mutated_inputs_in_process_never_panic_and_errors_are_one_line() {
    let config = parse_config(CONFIG).unwrap();
    let state = State::parse(STATE, &config.setting).unwrap();
    let mut failures = Vec::new();
    let mut errors = [0usize; 3];
    for case in 0..IN_PROCESS {
        let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
        let mutations = rng.random_range(1..4);
        let (mut c, mut s, mut b) = (CONFIG.to_string(), STATE.to_string(), BATCH.to_string());
        for _ in 0..mutations {
            c = mutate_toml(&mut rng, &c);
            s = mutate_json(&mut rng, &s, &["w", "e"]);
            b = mutate_json(&mut rng, &b, &["x1", "x2"]);
        }
        for r in [
            config_case(&c),
            state_case(&config, &s),
            batch_case(&config, &state, &b),
        ] {
            if let Err(m) = r {
                failures.push(short(&format!("case {case}: {m}")));
            }
        }
        errors[0] += usize::from(parse_config(&c).is_err());
        errors[1] += usize::from(State::parse(&s, &config.setting).is_err());
        errors[2] += usize::from(Batch::parse(&b, &config.setting).is_err());
    }
    assert!(
        failures.is_empty(),
        "{} failures: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    // The mutator does reach the error paths (and leaves some inputs valid).
    for (kind, n) in ["configs", "states", "batches"].iter().zip(errors) {
        assert!(
            n > IN_PROCESS / 4 && n < IN_PROCESS,
            "{n} of {IN_PROCESS} {kind} refused"
        );
    }
}

/// Runs the binary and checks the exit rule ([`check_output`]); returns the exit code.
fn run_binary(args: &[&std::ffi::OsStr]) -> Result<i32, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_predhead"))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    check_output(&format!("{args:?}"), out.status.code(), &stdout, &stderr)
}

/// The exit rule: status 0 with one JSON line on stdout and nothing on stderr, or status 2
/// with nothing on stdout and exactly one `predhead: ` line on stderr that passes
/// [`check_line`]. Anything else (a signal, as an abort gives, or another status) fails.
fn check_output(case: &str, code: Option<i32>, stdout: &str, stderr: &str) -> Result<i32, String> {
    let code = code.ok_or_else(|| format!("{case}: killed by a signal (abort?)"))?;
    match code {
        0 => {
            if !stderr.is_empty() || stdout.lines().count() != 1 {
                return Err(format!("{case}: exit 0 with stderr {stderr:?}"));
            }
            serde_json::from_str::<Value>(stdout).map_err(|e| format!("{case}: {e}"))?;
        }
        2 => {
            if !stdout.is_empty() {
                return Err(format!("{case}: exit 2 with stdout {stdout:?}"));
            }
            let line = stderr
                .strip_suffix('\n')
                .ok_or_else(|| format!("{case}: stderr {stderr:?}"))?;
            let message = line
                .strip_prefix("predhead: ")
                .ok_or_else(|| format!("{case}: stderr {stderr:?}"))?;
            check_line(message).map_err(|m| format!("{case}: {m}"))?;
        }
        other => return Err(format!("{case}: exit status {other}, stderr {stderr:?}")),
    }
    Ok(code)
}

#[test]
fn mutated_files_and_arguments_through_the_binary_exit_0_or_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (c0, s0, b0) = (
        write("c0.toml", CONFIG),
        write("s0.json", STATE),
        write("b0.json", BATCH),
    );
    let mut failures = Vec::new();
    let mut codes = [0usize; 2];
    for case in 0..THROUGH_BINARY {
        let mut rng = ChaCha8Rng::seed_from_u64(1_000_000 + case as u64);
        let (c, s, b) = match case % 3 {
            0 => (
                write("c.toml", &mutate_toml(&mut rng, CONFIG)),
                s0.clone(),
                b0.clone(),
            ),
            1 => (
                c0.clone(),
                write("s.json", &mutate_json(&mut rng, STATE, &["w", "e"])),
                b0.clone(),
            ),
            _ => (
                c0.clone(),
                s0.clone(),
                write("b.json", &mutate_json(&mut rng, BATCH, &["x1", "x2"])),
            ),
        };
        let mut args: Vec<std::ffi::OsString> = ["eval", "--config"].map(Into::into).to_vec();
        args.push(c.into());
        args.push("--state".into());
        args.push(s.into());
        if case % 3 == 2 || rng.random_range(0..2) == 0 {
            args.push("--batch".into());
            args.push(b.into());
        }
        // Argument damage: a dropped, doubled, unknown or odd argument.
        match rng.random_range(0..8) {
            0 => {
                let i = rng.random_range(0..args.len());
                args.remove(i);
            }
            1 => args.push("--precision".into()),
            2 => args.push(format!("--{}", toml_key(&mut rng)).into()),
            3 => {
                args.push("--precision".into());
                args.push(
                    ["-1", "0", "64", "1e3", "x\ny", "99999999999"][rng.random_range(0..6)].into(),
                );
            }
            _ => {}
        }
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        match run_binary(&refs) {
            Ok(code) => codes[usize::from(code == 2)] += 1,
            Err(m) => failures.push(short(&format!("case {case}: {m}"))),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    assert!(
        codes[0] > 0 && codes[1] > THROUGH_BINARY / 4,
        "exit 0 / 2 counts {codes:?}"
    );
}

/// The falsifier of the checks above: the same checker rejects a planted message with a
/// newline, a carriage return, a line separator, an overlong one and one naming nothing;
/// `no_panic` reports a planted panic; `run_binary` rejects a planted two-line stderr.
#[test]
fn checker_rejects_planted_defects() {
    assert!(check_line("state.w: fine").is_ok());
    for planted in [
        "state.w: a\nb",
        "state.w: a\rb",
        "state.w: a\u{2028}b",
        "state.w: \u{1b}[31m",
    ] {
        assert!(check_line(planted).is_err(), "{planted:?}");
    }
    assert!(check_line(&format!("state.w: {}", "x".repeat(MAX_MESSAGE))).is_err());
    assert!(check_line("no field").is_err());
    // The crate's escaping makes the same planted text pass: Display escapes and cuts.
    let e = predhead::Error::invalid("a\nb", format!("got {}", "x\r".repeat(10_000)));
    assert!(check_line(&e.to_string()).is_ok(), "{e}");
    // A panic is caught and reported, not passed.
    let r = no_panic("planted", || -> u32 { panic!("planted panic") });
    assert!(r.unwrap_err().contains("planted panic"));
    // The exit rule rejects a two-line stderr (clap's old usage error), an abort (no exit
    // status, or 134), output on stdout with an error, and accepts the two good forms.
    let two = "predhead: error: the following required arguments were not provided:\n  --config <CONFIG>\n";
    assert!(check_output("planted", Some(2), "", two).is_err());
    assert!(check_output("planted", None, "", "").is_err());
    assert!(check_output("planted", Some(134), "", "memory allocation failed\n").is_err());
    assert!(check_output("planted", Some(2), "{}\n", "predhead: a: b\n").is_err());
    assert!(check_output("planted", Some(0), "{\"loss\":1}\n", "x\n").is_err());
    assert_eq!(check_output("good", Some(2), "", "predhead: a: b\n"), Ok(2));
    assert_eq!(check_output("good", Some(0), "{\"loss\":1}\n", ""), Ok(0));
}
