//! The reports of `predhead report`: statistics, plots, the task runner, and one report per
//! claim of the paper (Sections 4-5), each a table with a verdict by a stated rule.
//!
//! A report is built from a sweep spec ([`crate::sweep::Spec`], `reports/<name>.toml`) and
//! its results ([`crate::sweep::Record`]s): [`build`] dispatches on the spec's `report` key
//! to the builders of [`claims`] and returns the Markdown page, the per-run CSV and the SVG
//! figures, all deterministic functions of the results.

pub mod claims;
pub mod local;
pub mod lr_crit;
pub mod plots;
pub mod regime;
pub mod registry;
pub mod runner;
pub mod scaled;
pub mod stats;
pub mod table;
pub mod taxonomy;

use crate::error::{Error, Result};
use crate::sweep::{Record, Spec};
use serde_json::Value;
use table::{csv_num, Table};

/// A built report.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The report's name (file stem).
    pub name: String,
    /// The title (for the index).
    pub title: String,
    /// The Markdown page.
    pub markdown: String,
    /// The tables with their verdicts (the part the snapshot tests hold).
    pub tables: String,
    /// The per-run CSV.
    pub csv: String,
    /// `(file name, SVG text)` of each figure.
    pub figures: Vec<(String, String)>,
    /// The verdicts, in table order.
    pub verdicts: Vec<(String, table::Verdict)>,
    /// `Some((k, n))`: built from only `k` of the spec's `n` tasks ([`mark_partial`]).
    pub partial: Option<(usize, usize)>,
    /// The claim registry's rows of this report ([`registry::evaluate`]).
    pub claims: Vec<registry::Row>,
}

/// Marks `out` as built from only `have` of the spec's `total` tasks (a results file merged
/// with `predhead merge --allow-partial`): a banner under the title of the page and above
/// the tables, and every verdict called provisional, so that no verdict of a partial sweep
/// reads as the verdict of the whole.
pub fn mark_partial(out: &mut Output, have: usize, total: usize) {
    let banner = format!(
        "> **PARTIAL RESULTS: {have} of {total} tasks.** This report was built from an \
         incomplete results file (`predhead merge --allow-partial`): its verdicts are \
         provisional, not those of the full sweep. Complete the file with `predhead sweep \
         SPEC --results FILE` and build the report again.\n\n"
    );
    let verdict = format!("**Provisional verdict ({have} of {total} tasks): ");
    let mark = |text: &str| text.replace("**Verdict: ", &verdict);
    let at = out.markdown.find("\n\n").map_or(0, |i| i + 2);
    let (head, rest) = out.markdown.split_at(at);
    out.markdown = format!("{head}{banner}{}", mark(rest));
    out.tables = format!("{banner}{}", mark(&out.tables));
    out.partial = Some((have, total));
}

/// The report kinds, in index order: `(spec key, title)`.
pub const KINDS: [(&str, &str); 14] = [
    (
        "theorem41",
        "Theorem 4.1 / Corollary 4.2: both features, no collapse",
    ),
    (
        "theorem43",
        "Theorem 4.3 / Corollary 4.4: frozen head collapses",
    ),
    (
        "theorem43_regime",
        "Theorem 4.3 in its regime: alpha1/alpha2 >= 10 m",
    ),
    ("lemma51", "Lemma 5.1: t1 = d^(2+o(1))"),
    (
        "lemma52",
        "Lemma 5.2: substitution is fast, (t2 - t1)/t1 -> 0",
    ),
    ("lemma53", "Lemma 5.3: the acceleration effect"),
    (
        "prop54",
        "Proposition 5.4 and Figures 2-3: rise and fall of the head",
    ),
    (
        "scaled_times",
        "Corollary 4.2 and Proposition 5.4 at T = c d^2",
    ),
    (
        "ablations",
        "Ablations: head x normalization x stop-gradient",
    ),
    ("head_ratio", "Ablations: lr_head / lr, footnote 2"),
    (
        "regime",
        "Theorem 4.1 in the paper's regime: alpha1/alpha2, P0, lr_head/lr",
    ),
    ("footnote3", "Footnote 3: loss_final against the exact OPT"),
    ("flow_vs_sgd", "Flow against SGD at small d"),
    (
        "lr_crit",
        "SGD against the flow: the critical learning rate lr_crit(d)",
    ),
];

/// Builds the report of `spec` from its records (`quick`: the spec's `[quick]` grid),
/// without the records of its falsifier variant: a claim with a rerun falsifier then reads
/// `broken check` (falsifier not run). See [`build_with`].
pub fn build(spec: &Spec, records: &[Record], quick: bool) -> Result<Output> {
    build_with(spec, records, None, quick)
}

/// Builds the report of `spec` from its records and, for the claim registry, the records
/// of its falsifier variant (`rerun`, [`registry::falsifier_spec`]).
pub fn build_with(
    spec: &Spec,
    records: &[Record],
    rerun: Option<&[Record]>,
    quick: bool,
) -> Result<Output> {
    let recs: Vec<&Record> = records.iter().collect();
    let ctx = claims::Context { spec, quick };
    let build = |s: &Spec, rs: &[&Record]| body(s, rs, quick);
    let mut body = build(spec, &recs)?;
    let rerun: Option<Vec<&Record>> = rerun.map(|r| r.iter().collect());
    let rows = registry::evaluate(spec, &body, &recs, rerun.as_deref(), &build)?;
    if !rows.is_empty() {
        body.sections.push(claims::Section {
            heading: registry::HEADING.into(),
            table: registry::table(&rows, false),
            verdict: None,
            rule: registry::RULE.into(),
            notes: String::new(),
        });
    }
    assemble(spec, &ctx, &recs, body, rows)
}

/// The body of the report of `spec`: the builder of its kind.
fn body(spec: &Spec, recs: &[&Record], quick: bool) -> Result<claims::Body> {
    let ctx = claims::Context { spec, quick };
    let recs = recs.to_vec();
    Ok(match spec.report.as_str() {
        "theorem41" => claims::theorem41(&ctx, &recs)?,
        "theorem43" => claims::theorem43(&ctx, &recs)?,
        "theorem43_regime" => regime::regime43(&ctx, &recs)?,
        "lemma51" => claims::lemma51(&ctx, &recs)?,
        "lemma52" => claims::lemma52(&ctx, &recs)?,
        "lemma53" => claims::lemma53(&ctx, &recs)?,
        "prop54" => claims::prop54(&ctx, &recs)?,
        "scaled_times" => scaled::scaled_times(&ctx, &recs)?,
        "ablations" => claims::ablations(&ctx, &recs)?,
        "head_ratio" => claims::head_ratio(&ctx, &recs)?,
        "regime" => regime::regime(&ctx, &recs)?,
        "footnote3" => claims::footnote3(&ctx, &recs)?,
        "flow_vs_sgd" => claims::flow_vs_sgd(&ctx, &recs)?,
        "lr_crit" => lr_crit::lr_crit(&ctx, &recs)?,
        other => {
            return Err(Error::invalid(
                "report",
                format!(
                    "unknown report \"{other}\", expected one of {}",
                    KINDS.map(|k| k.0).join(", ")
                ),
            ))
        }
    })
}

/// The output of a built body.
fn assemble(
    spec: &Spec,
    ctx: &claims::Context,
    recs: &[&Record],
    body: claims::Body,
    claims: Vec<registry::Row>,
) -> Result<Output> {
    let title = KINDS
        .iter()
        .find(|k| k.0 == spec.report)
        .map_or(spec.report.clone(), |k| k.1.to_string());
    let mut md = format!("# {title}\n\n");
    md.push_str(&ctx.header());
    md.push_str(&body.text);
    let mut tables = String::new();
    for s in &body.sections {
        md.push_str(&s.render());
        tables.push_str(&s.render_table());
    }
    for (file, _) in &body.figures {
        md.push_str(&format!("![{file}]({file})\n\n"));
    }
    md.push_str(&format!(
        "Per-run data: [`{0}.csv`]({0}.csv). Regenerate with `predhead report --only {0}`.\n",
        spec.name
    ));
    Ok(Output {
        name: spec.name.clone(),
        title,
        markdown: md,
        tables,
        csv: per_run_csv(spec, recs),
        figures: body.figures,
        verdicts: body
            .sections
            .iter()
            .filter_map(|s| s.verdict.map(|v| (s.heading.clone(), v)))
            .collect(),
        partial: None,
        claims,
    })
}

/// The summary object of a record: `result.summary` for runners that add measurements,
/// else `result` itself.
pub fn summary_of(rec: &Record) -> &Value {
    rec.result.get("summary").unwrap_or(&rec.result)
}

/// A number field of a JSON object.
pub fn field(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// The outcome of a record (`error` when the runner failed).
pub fn outcome_of(rec: &Record) -> &str {
    if rec.result.get("error").is_some() {
        return "error";
    }
    summary_of(rec)
        .get("outcome")
        .and_then(Value::as_str)
        .unwrap_or("error")
}

/// One row per run: the grid point, the resolved setting and the summary's scalars.
fn per_run_csv(spec: &Spec, recs: &[&Record]) -> String {
    let mut t = Table::new(&[
        "task",
        "seed",
        "runner",
        "d",
        "P",
        "P0",
        "alpha1",
        "alpha2",
        "m",
        "head",
        "normalization",
        "stop_gradient",
        "lr",
        "lr_head",
        "batch",
        "outcome",
        "t1",
        "t2",
        "t3",
        "t_end",
        "strong_neuron",
        "offdiag_peak",
        "offdiag_final",
        "corr_final",
        "corr_gap_final",
        "loss_final",
        "opt",
        "termination",
        "tau_final",
        "error",
    ]);
    for r in recs {
        let s = summary_of(r);
        let c = spec.config_for(&r.point).ok();
        let cfg =
            |f: &dyn Fn(&crate::setting::Config) -> String| c.as_ref().map_or(String::new(), f);
        let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        t.push(vec![
            r.task.to_string(),
            r.seed.to_string(),
            r.point.runner.clone(),
            cfg(&|c| c.setting.dim.to_string()),
            cfg(&|c| c.setting.patches.to_string()),
            cfg(&|c| c.setting.feature_patches.to_string()),
            cfg(&|c| format!("{:?}", c.setting.alpha[0])),
            cfg(&|c| format!("{:?}", c.setting.alpha[1])),
            cfg(&|c| c.setting.neurons.to_string()),
            cfg(&|c| c.model.head.name().to_string()),
            cfg(&|c| c.model.normalization.name().to_string()),
            cfg(&|c| c.model.stop_gradient.to_string()),
            cfg(&|c| format!("{:?}", c.training.lr)),
            cfg(&|c| format!("{:?}", c.training.lr_head)),
            cfg(&|c| c.training.batch.to_string()),
            outcome_of(r).to_string(),
            csv_num(field(s, "t1")),
            csv_num(field(s, "t2")),
            csv_num(field(s, "t3")),
            csv_num(field(s, "t_end")),
            s.get("strong_neuron")
                .and_then(Value::as_u64)
                .map_or(String::new(), |v| v.to_string()),
            csv_num(field(s, "offdiag_peak")),
            csv_num(field(s, "offdiag_final")),
            csv_num(field(s, "corr_final")),
            csv_num(field(&r.result, "corr_gap_final")),
            csv_num(field(s, "loss_final")),
            csv_num(field(s, "opt")),
            text("termination"),
            csv_num(field(s, "tau_final")),
            r.result
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ]);
    }
    t.csv()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_report_calls_no_verdict_final() {
        let mut out = Output {
            name: "x".into(),
            title: "X".into(),
            markdown: "# X\n\nintro\n\n**Verdict: holds.** Rule: r.\n\n".into(),
            tables: "**Verdict: holds.** Rule: r.\n".into(),
            csv: String::new(),
            figures: Vec::new(),
            verdicts: vec![("h".into(), table::Verdict::Holds)],
            partial: None,
            claims: Vec::new(),
        };
        mark_partial(&mut out, 6, 9);
        assert_eq!(out.partial, Some((6, 9)));
        assert!(out
            .markdown
            .starts_with("# X\n\n> **PARTIAL RESULTS: 6 of 9 tasks.**"));
        assert!(!out.markdown.contains("**Verdict: "));
        assert!(!out.tables.contains("**Verdict: "));
        assert!(out
            .tables
            .contains("**Provisional verdict (6 of 9 tasks): holds.**"));
    }
}
