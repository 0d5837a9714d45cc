//! The integrator layer `src/ode` knows nothing of the paper: its code names no module of
//! the crate but `ode`, `scalar`, `error` and `double_double` (no `setting`, `moments`,
//! `observe`, `flow`, ...). Comments are not code: a doc link to the paper's side is
//! allowed. Falsifier: the same check on a source with a planted import fails.

use std::path::Path;

/// The crate modules `src/ode` may use.
const ALLOWED: [&str; 4] = ["ode", "scalar", "error", "double_double"];

/// The code of a Rust source without its comments (line comments and doc comments; the
/// layer has no block comments).
fn code(source: &str) -> String {
    source
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate modules a source reaches by `crate::`, `super::super::` or `predhead::`
/// paths that are not allowed, grouped imports (`crate::{a, b::c}`) included.
fn violations(source: &str) -> Vec<String> {
    let code = code(source);
    let flat: String = code.split_whitespace().collect();
    let mut out = Vec::new();
    for root in ["crate::", "predhead::"] {
        let mut rest = flat.as_str();
        while let Some(i) = rest.find(root) {
            rest = &rest[i + root.len()..];
            let firsts: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(',')
                    .map(|p| p.split("::").next().unwrap_or(""))
                    .collect()
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                vec![&rest[..end]]
            };
            for m in firsts {
                if !m.is_empty() && !ALLOWED.contains(&m) {
                    out.push(format!("{root}{m}"));
                }
            }
        }
    }
    if flat.contains("super::super") {
        out.push("super::super".into());
    }
    out
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src/ode") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_ode_layer_imports_nothing_of_the_paper() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ode");
    let files = sources(&dir);
    assert!(files.len() >= 8, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let bad = violations(&text);
        assert!(bad.is_empty(), "{}: {bad:?}", f.display());
    }
}

/// Falsifier: planted imports of the paper's modules, in each form, are caught; allowed
/// ones and comments are not.
#[test]
fn a_planted_import_is_caught() {
    let clean =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ode/explicit.rs"))
            .expect("read");
    assert!(violations(&clean).is_empty());
    for (planted, module) in [
        ("use crate::setting::Config;\n", "crate::setting"),
        (
            "use crate::{scalar::Scalar, moments::population::Reduced};\n",
            "crate::moments",
        ),
        (
            "fn g() { let _ = crate::observe::offdiag_norm; }\n",
            "crate::observe",
        ),
        ("use crate::flow::Problem;\n", "crate::flow"),
        (
            "use crate::{\n    error::Result,\n    flow::integrate,\n};\n",
            "crate::flow",
        ),
        ("use predhead::sgd::run;\n", "predhead::sgd"),
    ] {
        let bad = violations(&format!("{clean}\n{planted}"));
        assert_eq!(bad, vec![module.to_string()], "{planted}");
    }
    assert!(!violations("use super::super::flow::Problem;\n").is_empty());
    // A doc link to the paper's side is a comment, not an import.
    assert!(violations("//! See [`crate::flow`].\nuse crate::scalar::Scalar;\n").is_empty());
}
