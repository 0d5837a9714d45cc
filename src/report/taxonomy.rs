//! The outcome taxonomy (`derivations/phases.md`, (E7)) as a table of counts per group of
//! runs, beside a report's rate table: where the contract's `both-features` /
//! `collapse` / `undecided` lump distinct end states, this table separates them.

use super::summary_of;
use super::table::Table;
use crate::outcome::{OutcomeClass, UndecidedReason};
use crate::sweep::Record;
use serde_json::Value;

/// The rule printed under the table.
pub const RULE: &str = "descriptive, no verdict. Each run's end state is classed by \
    (E7) of derivations/phases.md: `vanished` (largest norm at most 0.1 of the initial), \
    `dead` neurons (norm at most 0.05 of the largest), `both-features` (distinct live \
    neurons with cos1 >= 0.9 and cos2 >= 0.9), `dead-superposed` (a dead neuron beside a \
    live one whose smaller feature cosine is at least 0.1), `collapse-v1` / `collapse-v2` \
    (every live neuron on one feature), else `undecided`, split by reason: noise-dominated, \
    superposed, stopped early. `no class`: runs that failed or predate (E7).";

/// The class of a run, `None` when it failed or its summary has no `outcome_class`.
fn class_of(rec: &Record) -> Option<(OutcomeClass, Option<UndecidedReason>)> {
    let s = summary_of(rec);
    let name = s.get("outcome_class").and_then(Value::as_str)?;
    let class = OutcomeClass::ALL.into_iter().find(|c| c.name() == name)?;
    let reason = s
        .get("outcome_reason")
        .and_then(Value::as_str)
        .and_then(|r| {
            [
                UndecidedReason::NoiseDominated,
                UndecidedReason::Superposed,
                UndecidedReason::StoppedEarly,
            ]
            .into_iter()
            .find(|x| x.name() == r)
        });
    Some((class, reason))
}

/// A table with the `labels` columns, then `runs` and the count of every class and reason,
/// one row per `(label values, runs)` group.
pub fn table(labels: &[&str], groups: &[(Vec<String>, Vec<&Record>)]) -> Table {
    let mut head: Vec<&str> = labels.to_vec();
    head.extend([
        "runs",
        "both-features",
        "collapse-v1",
        "collapse-v2",
        "vanished",
        "dead-superposed",
        "undecided: noise",
        "undecided: superposed",
        "undecided: stopped early",
        "no class",
    ]);
    let mut t = Table::new(&head);
    for (label, rs) in groups {
        let classes: Vec<_> = rs.iter().map(|r| class_of(r)).collect();
        let n = |want: OutcomeClass, why: Option<UndecidedReason>| {
            classes
                .iter()
                .filter(|c| matches!(c, Some((k, r)) if *k == want && (why.is_none() || *r == why)))
                .count()
                .to_string()
        };
        let mut row = label.clone();
        row.push(rs.len().to_string());
        for class in &OutcomeClass::ALL[..5] {
            row.push(n(*class, None));
        }
        for why in [
            UndecidedReason::NoiseDominated,
            UndecidedReason::Superposed,
            UndecidedReason::StoppedEarly,
        ] {
            row.push(n(OutcomeClass::Undecided, Some(why)));
        }
        row.push(classes.iter().filter(|c| c.is_none()).count().to_string());
        t.push(row);
    }
    t
}

/// The cosine cutoffs of [`cutoff_table`] (issue 21, item 5).
pub const CUTOFFS: [f64; 3] = [0.9, 0.99, 0.999];

/// The class (E7) of a run's final state at the cosine cutoff `c` in place of the run's
/// own, recomputed from its `a_final`, `b_final` and `gram_final`; `vanished` (which does
/// not depend on `c`) and a stopped-early run keep their recorded class. `None` when the
/// run failed or its summary lacks the final state.
pub fn class_at(rec: &Record, c: f64) -> Option<OutcomeClass> {
    let (recorded, reason) = class_of(rec)?;
    if recorded == OutcomeClass::Vanished || reason == Some(UndecidedReason::StoppedEarly) {
        return Some(recorded);
    }
    let s = summary_of(rec);
    let vec =
        |k: &str| -> Option<Vec<f64>> { s.get(k)?.as_array()?.iter().map(Value::as_f64).collect() };
    let (a, b) = (vec("a_final")?, vec("b_final")?);
    let rows: Vec<Vec<f64>> = s
        .get("gram_final")?
        .as_array()?
        .iter()
        .map(|r| r.as_array()?.iter().map(Value::as_f64).collect())
        .collect::<Option<_>>()?;
    let m = a.len();
    if b.len() != m || rows.len() != m || rows.iter().any(|r| r.len() != m) {
        return None;
    }
    let x = crate::moments::population::Reduced {
        a,
        b,
        gram: crate::square::Square::from_rows_f64(&rows, ()),
        e: crate::square::Square::identity(m, ()),
    };
    // The initial scale only decides `vanished`, kept above: 0 switches that rule off.
    let class = crate::outcome::classify(&x, 0.0, c, crate::observe::Termination::TEnd);
    Some(class.class)
}

/// The both-features rate per group (columns) at each cosine cutoff of [`CUTOFFS`] (rows),
/// with the runs whose class changes from the recorded one: how the outcome depends on
/// the cutoff. Runs without a final state are left out of the rates.
pub fn cutoff_table(groups: &[(String, Vec<&Record>)]) -> Table {
    let mut head = vec!["cosine cutoff".to_string()];
    head.extend(
        groups
            .iter()
            .map(|(g, _)| format!("both-features rate, {g}")),
    );
    head.push("runs whose class changes".into());
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut t = Table::new(&head);
    for c in CUTOFFS {
        let mut row = vec![super::table::num(c)];
        let mut changed = 0usize;
        for (_, rs) in groups {
            let classes: Vec<OutcomeClass> = rs.iter().filter_map(|r| class_at(r, c)).collect();
            changed += rs
                .iter()
                .filter(|r| {
                    let now = class_at(r, c);
                    now.is_some() && now != class_of(r).map(|x| x.0)
                })
                .count();
            let both = classes
                .iter()
                .filter(|&&k| k == OutcomeClass::BothFeatures)
                .count();
            row.push(if classes.is_empty() {
                "-".into()
            } else {
                super::table::num(both as f64 / classes.len() as f64)
            });
        }
        row.push(changed.to_string());
        t.push(row);
    }
    t
}

/// The rule printed under [`cutoff_table`].
pub const CUTOFF_RULE: &str = "descriptive, no verdict. Each run's final state classed by \
    (E7) again with the cosine cutoff `c` of (E5) at 0.9 (the runs' own), 0.99 and 0.999: \
    `both-features` asks `cos1 >= c` of one live neuron and `cos2 >= c` of another. A rate \
    that falls as `c` grows means the learned neurons still carry noise or the other feature \
    at the end of the run.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::Point;
    use serde_json::json;

    fn record(result: Value) -> Record {
        Record {
            task: 0,
            key: String::new(),
            seed: 0,
            point: Point::default(),
            result,
        }
    }

    /// Every class lands in its own column, and a run without a class is counted as such
    /// (a table that dropped or misfiled one would fail).
    #[test]
    fn counts_each_class_in_its_column() {
        let recs: Vec<Record> = [
            json!({"summary": {"outcome_class": "both-features"}}),
            json!({"summary": {"outcome_class": "collapse-v2"}}),
            json!({"summary": {"outcome_class": "dead-neuron-superposed"}}),
            json!({"summary": {"outcome_class": "undecided", "outcome_reason": "superposed"}}),
            json!({"summary": {"outcome_class": "undecided", "outcome_reason": "stopped-early"}}),
            json!({"error": "failed"}),
        ]
        .into_iter()
        .map(record)
        .collect();
        let refs: Vec<&Record> = recs.iter().collect();
        let t = table(&["d"], &[(vec!["100".into()], refs)]);
        let md = t.markdown();
        let row = md.lines().last().unwrap();
        assert_eq!(
            row, "| 100 | 6 | 1 | 0 | 1 | 0 | 1 | 0 | 1 | 1 | 1 |",
            "{md}"
        );
    }
}
