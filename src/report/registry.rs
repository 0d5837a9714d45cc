//! The claim registry (issue 21): one entry per claim of Sections 4-5 of the paper that the
//! reports check, each with its observable, the section whose verdict rule decides it (the
//! rule's thresholds are the spec's `[options.rule]`, fixed before the run), the
//! assumption check of that section, and a **falsifier**: a negative control run through
//! the *same* builder, hence the same rule, which must say `fails`. A claim whose falsifier
//! does not fail is reported as `broken check`, whatever its own verdict.
//!
//! Falsifiers are of two kinds: a rerun (the spec's `[options.falsifier]` grid, a
//! [`Spec::variant`] swept into its own results file, e.g. the frozen head under Theorem
//! 4.1's rule), or a transform of the report's own records (e.g. the values of each `d`
//! moved to the mirrored `d`, so that a decaying series grows).
//!
//! # Examples
//!
//! ```
//! use predhead::report::registry::{Row, CLAIMS};
//! use predhead::report::table::Verdict;
//!
//! // Every report kind with a claim of the paper has entries.
//! assert!(CLAIMS.iter().any(|c| c.report == "theorem41"));
//! // A rule that does not fail on its falsifier is a broken check.
//! let row = Row {
//!     verdict: Some(Verdict::Holds),
//!     falsifier_outcome: Some(Verdict::Holds),
//!     ..Row::default()
//! };
//! assert_eq!(row.status(), "broken check");
//! ```

use super::claims::{Body, Section};
use super::regime::{REGIME, REGIME43};
use super::scaled::COROLLARY42_SCALED;
use super::table::{Table, Verdict};
use crate::error::{Error, Result};
use crate::setting::HeadMode;
use crate::sweep::{Record, Spec};
use serde_json::Value;

/// A negative control of a claim's rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Falsifier {
    /// The spec's `[options.falsifier]` grid ([`Spec::variant`]), swept like the report.
    Rerun,
    /// The runs of the `k`-th smallest `d` moved to the `k`-th largest (a decaying series
    /// grows, a growing one decays).
    ReverseD,
    /// Lemma 5.3: the rates with the head replaced by those with the head reset to `I`.
    ResetHead,
    /// Every run's outcome class (E7) set to each of these classes in turn (contract outcome
    /// `collapse`); fails only if the rule fails on every one.
    Relabel(&'static [&'static str]),
    /// The trained head's runs and the frozen head's runs exchanged.
    SwapHeads,
}

/// One claim of the paper checked by a report.
#[derive(Clone, Copy, Debug)]
pub struct Claim {
    /// The claim (paper numbering).
    pub claim: &'static str,
    /// The report (spec `report` key).
    pub report: &'static str,
    /// The observable the rule reads.
    pub observable: &'static str,
    /// The heading of the section whose verdict decides the claim; `None`: not checked.
    pub section: Option<&'static str>,
    /// The falsifier, `None` when the claim is not checked.
    pub falsifier: Option<Falsifier>,
    /// What the falsifier is, or why the claim is not checked.
    pub control: &'static str,
}

use super::claims::{
    ABLATIONS, COROLLARY42, COROLLARY44, FIGURES23, FOOTNOTE3, HEAD_RATIO, LEMMA51_HEAD,
    LEMMA51_OTHERS, LEMMA51_T1, LEMMA52, LEMMA53_INTERVENTION, PROP54, SECTION53, THEOREM41_RATE,
    THEOREM41_TREND, THEOREM43_RATE,
};

const fn claim(
    claim: &'static str,
    report: &'static str,
    observable: &'static str,
    section: &'static str,
    falsifier: Falsifier,
    control: &'static str,
) -> Claim {
    Claim {
        claim,
        report,
        observable,
        section: Some(section),
        falsifier: Some(falsifier),
        control,
    }
}

const fn unchecked(claim: &'static str, report: &'static str, why: &'static str) -> Claim {
    Claim {
        claim,
        report,
        observable: "-",
        section: None,
        falsifier: None,
        control: why,
    }
}

/// The registry, in paper order.
pub const CLAIMS: [Claim; 20] = [
    claim(
        "Theorem 4.1 (both features w.p. 1 - o(1))",
        "theorem41",
        "both-features rate at the largest d",
        THEOREM41_RATE,
        Falsifier::Rerun,
        "the head frozen at E = I (Theorem 4.3's setting), same family",
    ),
    claim(
        "Theorem 4.1 (the failure rate falls with d)",
        "theorem41",
        "trend of the not-both-features rate against ln d (Cochran-Armitage)",
        THEOREM41_TREND,
        Falsifier::ReverseD,
        "the runs' d mirrored (a falling failure rate grows)",
    ),
    claim(
        "Corollary 4.2 (abs(Corr) <= O(d^-1/2))",
        "theorem41",
        "exponent of abs(corr_final) against d, both-features runs",
        COROLLARY42,
        Falsifier::ReverseD,
        "the runs' d mirrored (the series read backwards in d)",
    ),
    claim(
        "Corollary 4.2 at T = c d^2",
        "scaled_times",
        "exponent of abs(Corr) against d at flow times c d^2, both-features runs, per c",
        COROLLARY42_SCALED,
        Falsifier::ReverseD,
        "the runs' d mirrored",
    ),
    claim(
        "Theorem 4.3 (frozen head: collapse onto v1 w.p. 1 - o(1))",
        "theorem43",
        "collapse-v1 rate (E7) at the largest d, per m",
        THEOREM43_RATE,
        Falsifier::Rerun,
        "the trained head (Theorem 4.1's setting), m = 2, same family",
    ),
    claim(
        "Theorem 4.3 in its regime (alpha1/alpha2 >= 10 m)",
        "theorem43_regime",
        "collapse-v1 rate per cell with alpha1/alpha2 >= 10 m",
        REGIME43,
        Falsifier::Rerun,
        "the trained head (Theorem 4.1's setting) in the same cells",
    ),
    claim(
        "Corollary 4.4 (1 - abs(Corr) <= O(d^-1/2))",
        "theorem43",
        "exponent of 1 - abs(Corr) (MPFR) against d, collapse runs, per m",
        COROLLARY44,
        Falsifier::ReverseD,
        "the runs' d mirrored",
    ),
    claim(
        "Lemma 5.1 (i): t1 = d^(2 + o(1))",
        "lemma51",
        "exponent of median t1 against d",
        LEMMA51_T1,
        Falsifier::ReverseD,
        "the runs' d mirrored",
    ),
    claim(
        "Lemma 5.1 (ii): the other features stay o(1) until T1",
        "lemma51",
        "exponent in d of the largest other feature coordinate at t1",
        LEMMA51_OTHERS,
        Falsifier::ReverseD,
        "the runs' d mirrored",
    ),
    claim(
        "Lemma 5.1 (iii): the Frobenius norm of E - I is at most d^-Omega(1) at T1",
        "lemma51",
        "exponent in d of the Frobenius norm of E - I at t1",
        LEMMA51_HEAD,
        Falsifier::ReverseD,
        "the runs' d mirrored",
    ),
    claim(
        "Lemma 5.2 ((t2 - t1)/t1 -> 0)",
        "lemma52",
        "slope of ln median (t2 - t1)/t1 against ln d",
        LEMMA52,
        Falsifier::ReverseD,
        "the runs' d mirrored",
    ),
    claim(
        "Lemma 5.3 (the head accelerates v2 in the substituted neuron)",
        "lemma53",
        "time from t2 until abs(b_k) >= 0.5, head trained against E reset to I",
        LEMMA53_INTERVENTION,
        Falsifier::ResetHead,
        "the head reset to I (the trained arm replaced by the reset arm)",
    ),
    claim(
        "Proposition 5.4 (the head converges, L -> OPT)",
        "prop54",
        "loss_final - OPT at the end of the run",
        PROP54,
        Falsifier::Rerun,
        "runs stopped before the fall (horizon 0.005 d^2)",
    ),
    claim(
        "Figures 2-3 (the off-diagonal head rises)",
        "prop54",
        "peak Frobenius norm of E - diag(E), and its fall",
        FIGURES23,
        Falsifier::Rerun,
        "runs stopped before the fall (horizon 0.005 d^2)",
    ),
    claim(
        "Figure 1 ablations (head x normalization x stop-gradient)",
        "ablations",
        "predicted outcome's rate per predicted row",
        ABLATIONS,
        Falsifier::SwapHeads,
        "the trained and the frozen head's runs exchanged",
    ),
    claim(
        "Section 5.3 (without output normalization v1 dominates)",
        "ablations",
        "collapse-v1 rate (E7), trained head without normalization",
        SECTION53,
        Falsifier::Relabel(&["vanished", "collapse-v2"]),
        "every run relabelled W -> 0 (vanished), then leftover v2 (collapse-v2)",
    ),
    claim(
        "Theorem 4.1's range of lr_head / lr",
        "head_ratio",
        "both-features rate per lr_head/lr <= 1/ln d",
        HEAD_RATIO,
        Falsifier::Rerun,
        "the head frozen at E = I",
    ),
    claim(
        "Theorem 4.1 in the paper's regime (alpha1/alpha2, P0, lr_head/lr)",
        "regime",
        "both-features rate per cell inside the hypotheses, one axis moved at a time",
        REGIME,
        Falsifier::Rerun,
        "the head frozen at E = I, same cells",
    ),
    unchecked(
        "Footnote 2 (lr_head = lr, under another noise model)",
        "head_ratio",
        "a conjecture under a modified noise model: reported descriptively under the \
         head_ratio table",
    ),
    claim(
        "Footnote 3 (L <= OPT + 1/poly(d))",
        "footnote3",
        "median loss_final - OPT at the largest d, all runs",
        FOOTNOTE3,
        Falsifier::Rerun,
        "runs stopped before learning (horizon 0.05 d^2)",
    ),
];

/// A claim's row in a report and in the index: what the registry says, and what the run
/// and its falsifier gave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// The claim.
    pub claim: String,
    /// The report.
    pub report: String,
    /// The observable.
    pub observable: String,
    /// The section of the rule (`-`: not checked).
    pub section: String,
    /// The assumption check's result.
    pub assumptions: String,
    /// The falsifier.
    pub falsifier: String,
    /// The verdict of the same rule on the falsifier (`None`: not run or not checked).
    pub falsifier_outcome: Option<Verdict>,
    /// The verdict of the rule on the report's runs (`None`: not checked).
    pub verdict: Option<Verdict>,
}

impl Row {
    /// The claim's status: `not checked`; `broken check` when the falsifier did not say
    /// `fails` (or was not run); else the rule's verdict.
    pub fn status(&self) -> &'static str {
        match (self.verdict, self.falsifier_outcome) {
            (None, _) => "not checked",
            (Some(v), Some(Verdict::Fails)) => v.name(),
            _ => "broken check",
        }
    }

    /// The falsifier outcome as printed.
    pub fn outcome_text(&self) -> &'static str {
        match (self.verdict, self.falsifier_outcome) {
            (None, _) => "-",
            (_, None) => "not run",
            (_, Some(v)) => v.name(),
        }
    }
}

/// Builds a report's body from a spec and records (the dispatch of [`super::build`]).
pub type Builder<'a> = &'a dyn Fn(&Spec, &[&Record]) -> Result<Body>;

/// The registry rows of `spec`'s report: the verdict of each claim's section in `main`, its
/// assumption check, and the verdict of the same section when the builder runs on the
/// claim's falsifier (`rerun`: the records of the spec's falsifier variant, if run).
///
/// # Errors
/// A builder error on a falsifier, a bad `[options.falsifier]`.
pub fn evaluate(
    spec: &Spec,
    main: &Body,
    recs: &[&Record],
    rerun: Option<&[&Record]>,
    build: Builder,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for c in CLAIMS.iter().filter(|c| c.report == spec.report) {
        let mut row = Row {
            claim: c.claim.into(),
            // The spec's name: the report file (a kind may have several specs).
            report: spec.name.clone(),
            observable: c.observable.into(),
            section: c.section.unwrap_or("-").into(),
            assumptions: "-".into(),
            falsifier: c.control.into(),
            falsifier_outcome: None,
            verdict: None,
        };
        if let (Some(section), Some(f)) = (c.section, c.falsifier) {
            row.verdict = verdict_of(&main.sections, section);
            row.assumptions = main
                .assumptions
                .iter()
                .find(|(h, _)| h == section)
                .map_or("none stated".into(), |(_, t)| t.clone());
            row.falsifier_outcome = falsify(spec, f, section, recs, rerun, build)?;
        }
        rows.push(row);
    }
    Ok(rows)
}

fn verdict_of(sections: &[Section], heading: &str) -> Option<Verdict> {
    sections
        .iter()
        .find(|s| s.heading == heading)
        .and_then(|s| s.verdict)
}

/// The verdict of the rule of `section` on the falsifier `f`.
fn falsify(
    spec: &Spec,
    f: Falsifier,
    section: &str,
    recs: &[&Record],
    rerun: Option<&[&Record]>,
    build: Builder,
) -> Result<Option<Verdict>> {
    let on = |s: &Spec, rs: Vec<Record>| -> Result<Option<Verdict>> {
        let refs: Vec<&Record> = rs.iter().collect();
        Ok(verdict_of(&build(s, &refs)?.sections, section))
    };
    match f {
        Falsifier::Rerun => {
            let Some(rs) = rerun else {
                return Ok(None);
            };
            let variant = falsifier_spec(spec)?;
            on(&variant, rs.iter().map(|r| (*r).clone()).collect())
        }
        Falsifier::ReverseD => on(spec, reverse_d(spec, recs)),
        Falsifier::ResetHead => on(spec, reset_head(recs)),
        Falsifier::SwapHeads => on(spec, swap_heads(recs)),
        Falsifier::Relabel(classes) => {
            let mut worst = Some(Verdict::Fails);
            for class in classes {
                let v = on(spec, relabel(recs, class))?;
                if v != Some(Verdict::Fails) {
                    worst = v;
                }
            }
            Ok(worst)
        }
    }
}

/// The falsifier variant of `spec` (its `[options.falsifier]`).
///
/// # Errors
/// No `[options.falsifier]` table, or a bad one.
pub fn falsifier_spec(spec: &Spec) -> Result<Spec> {
    let t = spec
        .options
        .get("falsifier")
        .and_then(toml::Value::as_table)
        .ok_or(Error::Missing {
            field: "options.falsifier".into(),
        })?;
    spec.variant(t)
}

/// Whether the report of `spec` has a rerun falsifier (so that its grid must be swept).
pub fn needs_rerun(spec: &Spec) -> bool {
    CLAIMS
        .iter()
        .any(|c| c.report == spec.report && c.falsifier == Some(Falsifier::Rerun))
}

fn summary_mut(v: &mut Value) -> &mut Value {
    if v.get("summary").is_some() {
        &mut v["summary"]
    } else {
        v
    }
}

/// [`Falsifier::ReverseD`]: the `k`-th smallest `d` becomes the `k`-th largest; the records
/// are put in reverse order, so that groups by `d` come in increasing `d` again.
fn reverse_d(spec: &Spec, recs: &[&Record]) -> Vec<Record> {
    let dim = |r: &Record| r.point.dim.unwrap_or(spec.base.setting.dim);
    let mut dims: Vec<u64> = recs.iter().map(|r| dim(r)).collect();
    dims.sort_unstable();
    dims.dedup();
    let mut out: Vec<Record> = recs
        .iter()
        .map(|r| {
            let mut r = (*r).clone();
            let k = dims.partition_point(|&d| d < dim(&r));
            r.point.dim = Some(dims[dims.len() - 1 - k]);
            r
        })
        .collect();
    out.reverse();
    out
}

/// [`Falsifier::ResetHead`]: the head's rates replaced by those with `E = I`.
fn reset_head(recs: &[&Record]) -> Vec<Record> {
    recs.iter()
        .map(|r| {
            let mut r = (*r).clone();
            for (to, from) in [
                ("weak_head", "weak_identity"),
                ("strong_head", "strong_identity"),
                ("weak_time_head", "weak_time_reset"),
            ] {
                if let Some(v) = r.result.get(from).cloned() {
                    r.result[to] = v;
                }
            }
            r
        })
        .collect()
}

/// [`Falsifier::SwapHeads`]: trained and frozen head exchanged in every grid point.
fn swap_heads(recs: &[&Record]) -> Vec<Record> {
    recs.iter()
        .map(|r| {
            let mut r = (*r).clone();
            r.point.head = match r.point.head {
                Some(HeadMode::IdentityOffdiag) => Some(HeadMode::Frozen),
                Some(HeadMode::Frozen) => Some(HeadMode::IdentityOffdiag),
                h => h,
            };
            r
        })
        .collect()
}

/// [`Falsifier::Relabel`]: every successful run's class set to `class`, its contract outcome
/// to `collapse`.
fn relabel(recs: &[&Record], class: &str) -> Vec<Record> {
    recs.iter()
        .map(|r| {
            let mut r = (*r).clone();
            if r.result.get("error").is_none() {
                let s = summary_mut(&mut r.result);
                s["outcome_class"] = Value::from(class);
                s["outcome"] = Value::from("collapse");
                if let Some(o) = s.as_object_mut() {
                    o.remove("outcome_reason");
                }
            }
            r
        })
        .collect()
}

/// The heading of the registry section of a report.
pub const HEADING: &str = "Claims: rules, assumption checks and falsifiers";

/// The registry rule printed under the table.
pub const RULE: &str = "each claim's verdict is that of the rule of its section (thresholds \
    from the spec's `[options.rule]`, fixed before the run); the falsifier is a negative \
    control run through the same builder, hence the same rule, and must say `fails`. A claim \
    whose falsifier does not fail (or was not run) is `broken check`, whatever its own \
    verdict. The assumption check flags grid points outside the claim's hypotheses.";

/// The registry table of `rows` (with the report column when `with_report`).
pub fn table(rows: &[Row], with_report: bool) -> Table {
    let mut head = vec!["claim"];
    if with_report {
        head.push("report");
    }
    head.extend([
        "observable",
        "rule (section)",
        "assumption check",
        "falsifier",
        "falsifier outcome",
        "verdict",
    ]);
    let mut t = Table::new(&head);
    for r in rows {
        let mut row = vec![r.claim.clone()];
        if with_report {
            row.push(format!("[{0}]({0}.md)", r.report));
        }
        row.extend([
            r.observable.clone(),
            r.section.clone(),
            r.assumptions.clone(),
            r.falsifier.clone(),
            r.outcome_text().into(),
            r.status().into(),
        ]);
        t.push(row);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::Table;
    use crate::sweep::Point;

    fn rec(dim: u64, result: Value) -> Record {
        Record {
            task: 0,
            key: String::new(),
            seed: 0,
            point: Point {
                runner: "flow".into(),
                dim: Some(dim),
                ..Point::default()
            },
            result,
        }
    }

    fn spec() -> Spec {
        Spec::parse(
            "report = \"lemma52\"\nseeds = 1\n[base.setting]\ndim = 100\npatches = 4\n\
                 feature_patches = 2\nalpha = [4.0, 1.0]\nneurons = 2\nnoise_std = 1.0\n\
                 [base.model]\nhead = \"identity-offdiag\"\nnormalization = \"batchnorm\"\n\
                 stop_gradient = true\n[base.training]\nlr = 1e-3\n",
            "x",
            std::path::Path::new("."),
        )
        .unwrap()
    }

    /// A planted rule that always holds is flagged `broken check` by its falsifier, and a
    /// rule that fails on the falsifier keeps its verdict.
    #[test]
    fn a_rule_that_cannot_fail_is_a_broken_check() {
        let s = spec();
        let recs = [rec(100, Value::Null), rec(1000, Value::Null)];
        let refs: Vec<&Record> = recs.iter().collect();
        let body_with = |v: Verdict| {
            let mut b = Body::default();
            b.sections.push(Section {
                heading: LEMMA52.into(),
                table: Table::new(&["x"]),
                verdict: Some(v),
                rule: String::new(),
                notes: String::new(),
            });
            b
        };
        let always = |_: &Spec, _: &[&Record]| Ok(body_with(Verdict::Holds));
        let main = body_with(Verdict::Holds);
        let rows = evaluate(&s, &main, &refs, None, &always).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status(), "broken check");
        assert_eq!(rows[0].outcome_text(), "holds");
        // A rule that reads the trend: holds when the first record has the smallest d.
        let trend = |_: &Spec, rs: &[&Record]| {
            let up = rs[0].point.dim < rs[rs.len() - 1].point.dim;
            Ok(body_with(if up { Verdict::Fails } else { Verdict::Holds }))
        };
        let rows = evaluate(&s, &main, &refs, None, &trend).unwrap();
        // Mirrored and reversed: the first record has the smallest d again, but the runs of
        // d = 1000 now sit at d = 100.
        assert_eq!(rows[0].status(), "holds");
    }

    #[test]
    fn transforms_do_what_they_say() {
        let s = spec();
        let recs = [
            rec(100, serde_json::json!({"v": 1})),
            rec(1000, serde_json::json!({"v": 2})),
            rec(10000, serde_json::json!({"v": 3})),
        ];
        let refs: Vec<&Record> = recs.iter().collect();
        let r = reverse_d(&s, &refs);
        let got: Vec<(u64, i64)> = r
            .iter()
            .map(|r| (r.point.dim.unwrap(), r.result["v"].as_i64().unwrap()))
            .collect();
        assert_eq!(got, vec![(100, 3), (1000, 2), (10000, 1)]);
        let h = rec(
            100,
            serde_json::json!({"weak_head": 5.0, "weak_identity": 1.0,
                "strong_head": 2.0, "strong_identity": 3.0}),
        );
        let out = reset_head(&[&h]);
        assert_eq!(out[0].result["weak_head"], 1.0);
        assert_eq!(out[0].result["strong_head"], 3.0);
        let c = rec(
            100,
            serde_json::json!({"summary": {"outcome_class": "collapse-v1",
                "outcome_reason": null, "outcome": "collapse"}}),
        );
        let out = relabel(&[&c], "vanished");
        assert_eq!(out[0].result["summary"]["outcome_class"], "vanished");
        assert!(out[0].result["summary"].get("outcome_reason").is_none());
    }
}
