//! The claim registry's falsifiers (issue 21): every checked claim's rule must say `fails` on
//! its negative control. The committed index `reports/README.md` holds the registry of the
//! full grids (reproduced by `tests/reports.rs::committed_reports_are_reproduced`); this test
//! fails if any row there is a `broken check`, and shows on a planted rule that always
//! passes that the registry does flag it.

use predhead::report::claims::{Body, Section};
use predhead::report::registry::{evaluate, Row, CLAIMS};
use predhead::report::table::{Table, Verdict};
use predhead::sweep::{Point, Record, Spec};
use std::path::Path;

/// The registry rows of the committed index: `(claim, falsifier outcome, verdict)`.
fn committed_rows() -> Vec<(String, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let index = std::fs::read_to_string(root.join("reports/README.md")).unwrap();
    let at = index
        .find("## Claim registry")
        .expect("the registry section");
    index[at..]
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| claim"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let n = cells.len();
            (cells[0].into(), cells[n - 2].into(), cells[n - 1].into())
        })
        .collect()
}

#[test]
fn every_committed_falsifier_fails() {
    let rows = committed_rows();
    // One row per registry entry and spec of its report (the regime claim has three specs).
    for c in CLAIMS {
        assert!(
            rows.iter().any(|r| r.0 == c.claim),
            "{}: no row in reports/README.md",
            c.claim
        );
    }
    assert!(rows.iter().all(|r| CLAIMS.iter().any(|c| c.claim == r.0)));
    for (claim, outcome, verdict) in &rows {
        if verdict == "not checked" {
            assert_eq!(outcome, "-", "{claim}");
            continue;
        }
        assert_eq!(outcome, "fails", "{claim}: its falsifier does not fail");
        assert_ne!(verdict, "broken check", "{claim}");
    }
    // Every claim with a rule has a falsifier, every one without says why.
    for c in CLAIMS {
        assert_eq!(c.section.is_some(), c.falsifier.is_some(), "{}", c.claim);
        assert!(!c.control.is_empty(), "{}", c.claim);
    }
}

fn body(heading: &str, v: Verdict) -> Body {
    let mut b = Body::default();
    b.sections.push(Section {
        heading: heading.into(),
        table: Table::new(&["x"]),
        verdict: Some(v),
        rule: String::new(),
        notes: String::new(),
    });
    b
}

/// The registry catches a rule that cannot fail: a planted builder that always says
/// `holds` is a `broken check` under every transform falsifier, and one that reads the data
/// is not.
#[test]
fn a_planted_rule_that_always_passes_is_a_broken_check() {
    for c in CLAIMS.iter().filter(|c| {
        c.falsifier
            .is_some_and(|f| f != predhead::report::registry::Falsifier::Rerun)
    }) {
        let spec = Spec::parse(
            &format!(
                "report = \"{}\"\nseeds = 1\n[base.setting]\ndim = 100\npatches = 4\n\
                 feature_patches = 2\nalpha = [4.0, 1.0]\nneurons = 2\nnoise_std = 1.0\n\
                 [base.model]\nhead = \"identity-offdiag\"\nnormalization = \"batchnorm\"\n\
                 stop_gradient = true\n[base.training]\nlr = 1e-3\n",
                c.report
            ),
            "x",
            Path::new("."),
        )
        .unwrap();
        let heading = c.section.unwrap();
        let recs: Vec<Record> = [100, 1000]
            .iter()
            .map(|&d| Record {
                task: 0,
                key: String::new(),
                seed: 0,
                point: Point {
                    runner: "flow".into(),
                    dim: Some(d),
                    head: Some(predhead::setting::HeadMode::IdentityOffdiag),
                    ..Point::default()
                },
                result: serde_json::json!({
                    "summary": {"outcome": "both-features", "outcome_class": "collapse-v1"},
                    "weak_head": 2.0, "weak_identity": 1.0, "d": d,
                }),
            })
            .collect();
        let refs: Vec<&Record> = recs.iter().collect();
        let main = body(heading, Verdict::Holds);
        let always = |_: &Spec, _: &[&Record]| Ok(body(heading, Verdict::Holds));
        let rows: Vec<Row> = evaluate(&spec, &main, &refs, None, &always).unwrap();
        let row = rows.iter().find(|r| r.claim == c.claim).unwrap();
        assert_eq!(row.status(), "broken check", "{}", c.claim);
        // The same rows with a builder that fails everything but the original records.
        let picky = |_: &Spec, rs: &[&Record]| {
            let same = rs.len() == refs.len() && rs.iter().zip(&refs).all(|(a, b)| a == b);
            Ok(body(
                heading,
                if same { Verdict::Holds } else { Verdict::Fails },
            ))
        };
        let rows = evaluate(&spec, &main, &refs, None, &picky).unwrap();
        let row = rows.iter().find(|r| r.claim == c.claim).unwrap();
        assert_eq!(row.status(), "holds", "{}", c.claim);
    }
}
