//! Corollary 4.2 and Proposition 5.4 at scale-aware times (issue 21, item 5): the state of
//! the flow read at flow times `T = c d^2` for the fixed multiples `c` of
//! [`super::runner::SCALED_TIMES`] (runner `flow-at`), instead of at `t_end`, whose place
//! on the `d^2` scale moves with `d`. Per `c`, the exponents of `abs(Corr)`, `||E - I||_F`,
//! the noise fraction and the feature leak against `d`, fitted over the runs classed
//! `both-features` at `T`; Corollary 4.2's rule reads the `abs(Corr)` exponents.

use super::claims::{
    combine, dim_of, exponent_rule, exponent_verdict, fit, groups, interval, Body, Context,
};
use super::runner::SCALED_TIMES;
use super::table::{num, Table};
use crate::error::Result;
use crate::sweep::Record;
use serde_json::Value;

/// The section of Corollary 4.2's rule at `T = c d^2`.
pub const COROLLARY42_SCALED: &str = "Exponents in d at T = c d^2 (Corollary 4.2)";

/// The observables read at each `T`: `(result key, label, the paper's exponent)`.
const OBSERVABLES: [(&str, &str, Option<f64>); 4] = [
    ("corr", "abs(Corr(f_1, f_2))", Some(-0.5)),
    ("head", "||E - I||_F", None),
    ("noise", "max_j ||u_j|| / ||w_j||", None),
    ("leak", "max_j min(abs(a_j), abs(b_j)) / ||w_j||", None),
];

/// The entry of a run's `at` list for the multiple `c`.
fn at(r: &Record, c: f64) -> Option<&Value> {
    r.result
        .get("at")?
        .as_array()?
        .iter()
        .find(|e| e.get("c").and_then(Value::as_f64) == Some(c))
}

/// Whether the run is classed `both-features` at `T = c d^2`.
fn both_at(r: &Record, c: f64) -> bool {
    at(r, c).and_then(|e| e.get("class")?.as_str()) == Some("both-features")
}

/// The both-features rate at each `T = c d^2` (rows) per d (columns).
fn rate_table(ctx: &Context, recs: &[&Record]) -> Table {
    let by_d = groups(recs, |r| dim_of(ctx, r));
    let mut head = vec!["c".to_string()];
    head.extend(
        by_d.iter()
            .map(|(d, _)| format!("both-features rate, d = {d}")),
    );
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut t = Table::new(&head);
    for c in SCALED_TIMES {
        let mut row = vec![num(c)];
        for (_, rs) in &by_d {
            let n = rs.iter().filter(|r| at(r, c).is_some()).count();
            let k = rs.iter().filter(|r| both_at(r, c)).count();
            row.push(if n == 0 {
                "-".into()
            } else {
                num(k as f64 / n as f64)
            });
        }
        t.push(row);
    }
    t
}

/// Corollary 4.2 and Proposition 5.4 at `T = c d^2`.
pub fn scaled_times(ctx: &Context, recs: &[&Record]) -> Result<Body> {
    let (exponent, margin) = (ctx.rule("corr_exponent")?, ctx.rule("exponent_margin")?);
    let mut t = Table::new(&[
        "observable",
        "c",
        "fitted exponent",
        "95% CI",
        "points",
        "paper's exponent",
    ]);
    let mut verdicts = Vec::new();
    for (key, label, paper) in OBSERVABLES {
        for c in SCALED_TIMES {
            let pts: Vec<(f64, f64)> = recs
                .iter()
                .filter(|r| both_at(r, c))
                .filter_map(|r| {
                    let v = at(r, c)?.get(key)?.as_f64()?;
                    Some((dim_of(ctx, r) as f64, v))
                })
                .collect();
            let f = fit(&pts)?;
            if paper.is_some() {
                verdicts.push(exponent_verdict(&f, exponent, margin));
            }
            t.push(vec![
                label.to_string(),
                num(c),
                f.as_ref().map_or("-".into(), |f| num(f.slope)),
                f.as_ref().map_or("-".into(), |f| interval(f.slope_ci)),
                f.as_ref().map_or("0".into(), |f| f.points.to_string()),
                paper.map_or("-".into(), num),
            ]);
        }
    }
    let mut body = Body::claim(
        "Claim (Corollary 4.2, read at fixed multiples of d^2): with the trained head, \
         `abs(Corr(f_1, f_2)) <= O(1/sqrt(d))` once both features are learned. `t_end` sits \
         at a multiple of `d^2` that moves with `d` (about 1.3 at `d = 100`, 0.06 at \
         `d = 1e9` in the paper family), so here the state is read at `T = c d^2` for fixed \
         `c`, over the runs classed `both-features` there. Beside it, descriptively, the \
         exponents of `||E - I||_F` (Proposition 5.4: the head returns to `I`), of the noise \
         fraction and of the feature leak.\n\n",
    );
    body.section(
        COROLLARY42_SCALED,
        t,
        Some(combine(&verdicts)),
        format!(
            "per c, {} Only the `abs(Corr)` rows have a verdict; the report holds if every \
             c holds, fails if some c fails.",
            exponent_rule("abs(Corr) at T = c d^2", exponent, margin)
        ),
    );
    body.section(
        "Both-features rate at T = c d^2",
        rate_table(ctx, recs),
        None,
        "descriptive, no verdict: the fraction of runs classed `both-features` (E7) at \
         `T = c d^2`; the fits above use those runs only.",
    );
    Ok(body)
}
