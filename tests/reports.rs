//! Snapshot tests of every report: the quick grid of each spec in `reports/` runs through the
//! production path (sweep -> exact flow / SGD -> statistics -> tables) and its tables, with
//! their verdicts, must match `tests/snapshots/`. A change anywhere upstream that moves a
//! number fails a snapshot. Accept intended changes with `INSTA_UPDATE=always cargo test
//! --release --test reports` and review the diff.

use predhead::commands::report::{generate, spec_files};
use predhead::sweep::{self, Spec};
use std::path::Path;

#[test]
fn every_report_matches_its_snapshot() {
    let specs = spec_files(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("reports")
            .as_path(),
    )
    .expect("reports/ holds the specs");
    let kinds: Vec<&str> = predhead::report::KINDS.iter().map(|k| k.0).collect();
    let mut seen = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    for path in specs {
        let spec = Spec::load(&path).unwrap();
        let results = dir.path().join(format!("{}.jsonl", spec.name));
        let out = generate(&spec, &results, true, false).unwrap();
        // Every report states its family and gives a verdict by a stated rule.
        assert!(out.markdown.contains("- Scaling family: "), "{}", spec.name);
        assert!(!out.verdicts.is_empty(), "{} has no verdict", spec.name);
        assert!(out.tables.contains("Rule: "), "{}", spec.name);
        // Building again from the same results gives the same bytes.
        let recs: Vec<sweep::Record> = sweep::read_results(&results, false)
            .unwrap()
            .lines
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        let rerun: Option<Vec<sweep::Record>> =
            predhead::commands::report::falsifier_results(&spec, &results, true)
                .unwrap()
                .map(|(_, path)| {
                    sweep::read_results(&path, false)
                        .unwrap()
                        .lines
                        .into_iter()
                        .map(|(r, _)| r)
                        .collect()
                });
        let again = predhead::report::build_with(&spec, &recs, rerun.as_deref(), true).unwrap();
        // Every report with a claim of the paper states its registry section.
        assert_eq!(
            out.tables.contains(predhead::report::registry::HEADING),
            !out.claims.is_empty(),
            "{}",
            spec.name
        );
        assert_eq!(again, out, "{} is not deterministic", spec.name);
        insta::assert_snapshot!(spec.name.clone(), out.tables);
        seen.push(spec.report.clone());
    }
    // One spec for every report kind.
    seen.sort();
    seen.dedup();
    let mut want: Vec<String> = kinds.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(seen, want);
}

/// The README's headline table is the committed Theorem 4.1 table.
#[test]
fn readme_headline_is_the_committed_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let report = std::fs::read_to_string(root.join("reports/theorem41.md")).unwrap();
    let start = report.find("| d | P |").expect("the table");
    let end = report[start..]
        .find("\n\n")
        .map_or(report.len(), |e| start + e);
    assert!(
        readme.contains(&report[start..end]),
        "README.md's headline table differs from reports/theorem41.md: copy it again"
    );
}

/// The committed reports are what `predhead report` produces (the full grids: about
/// 30 s on 2 cores). Run with `cargo test --release --test reports -- --ignored`.
#[test]
#[ignore]
fn committed_reports_are_reproduced() {
    use predhead::commands::report::{run, Args};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports");
    let dir = tempfile::tempdir().unwrap();
    for spec in spec_files(&root).unwrap() {
        std::fs::copy(&spec, dir.path().join(spec.file_name().unwrap())).unwrap();
    }
    run(&Args {
        dir: dir.path().to_path_buf(),
        only: None,
        quick: false,
        fresh: true,
    })
    .unwrap();
    let mut compared = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ["md", "csv", "svg"].contains(&ext) {
            let name = p.file_name().unwrap();
            let committed = std::fs::read_to_string(root.join(name)).unwrap();
            let fresh = std::fs::read_to_string(&p).unwrap();
            assert!(
                committed == fresh,
                "reports/{} differs",
                name.to_string_lossy()
            );
            compared += 1;
        }
    }
    assert!(compared >= 30, "only {compared} files compared");
}
