//! Theorem 4.1 in the paper's regime (issue 21, item 3): the both-features rate along one
//! axis of the hypotheses at a time, `alpha1/alpha2` (the weak feature's strength), `P0`
//! (the feature patches) or `lr_head/lr`, each moved away from the scaling family while the
//! rest follows it. Each cell is flagged inside or outside the theorem's hypotheses by
//! conventions fixed in the spec (`[options.rule]`): a rate rule over the inside cells
//! (Holm-adjusted exact binomial tests), a descriptive trend of the failure rate along the
//! axis (Cochran-Armitage, (D6) of `derivations/scaling.md`), the outcome taxonomy, and the
//! median `t3` with its order-statistic interval ((D7)).
//!
//! The same machinery checks Theorem 4.3 in its regime ([`regime43`], report kind
//! `theorem43_regime`): the frozen head's collapse-v1 rate in cells with `alpha1/alpha2`
//! at and beyond `10 m`, and the race law (C4) of `derivations/frozen_head.md` per cell.

use super::claims::{
    cp, dim_of, groups, interval, stopped_early, values, Body, Context, CONFIDENCE,
};
use super::plots::Scatter;
use super::table::{num, opt_num, Table, Verdict};
use super::{field, outcome_of, stats, summary_of, taxonomy};
use crate::error::{Error, Result};
use crate::setting::Config;
use crate::sweep::{Point, Record};
use statrs::distribution::{Binomial, DiscreteCDF};

/// The section of the rate rule.
pub const REGIME: &str = "Both-features rate in the paper's regime";

/// The section of Theorem 4.3's rate rule in its regime.
pub const REGIME43: &str = "Collapse-v1 rate where m <= o(alpha1/alpha2)";

/// Which theorem a regime report checks.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Claim {
    /// Theorem 4.1: the trained head learns both features.
    Both,
    /// Theorem 4.3: the frozen head collapses onto `v1`.
    Collapse,
}

impl Claim {
    /// The outcome class the rate counts.
    fn class(self) -> &'static str {
        match self {
            Claim::Both => "both-features",
            Claim::Collapse => "collapse-v1",
        }
    }

    /// Whether a run counts as a success.
    fn success(self, r: &Record) -> bool {
        match self {
            Claim::Both => outcome_of(r) == "both-features",
            Claim::Collapse => {
                summary_of(r).get("outcome_class").and_then(|v| v.as_str()) == Some("collapse-v1")
            }
        }
    }
}

/// The axis a regime spec moves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Axis {
    /// `alpha1 / alpha2`.
    AlphaRatio,
    /// `P0`.
    FeaturePatches,
    /// `lr_head / lr`.
    HeadRatio,
}

impl Axis {
    /// The axis of `spec`: the first of `alpha_ratio`, `feature_patches`, `head_ratio`
    /// that the full grid sweeps.
    fn of(ctx: &Context) -> Result<Axis> {
        let a = &ctx.spec.axes;
        if !a.alpha_ratio.is_empty() {
            Ok(Axis::AlphaRatio)
        } else if !a.feature_patches.is_empty() {
            Ok(Axis::FeaturePatches)
        } else if !a.head_ratio.is_empty() {
            Ok(Axis::HeadRatio)
        } else {
            Err(Error::invalid(
                "axes",
                "a regime spec sweeps one of alpha_ratio, feature_patches, head_ratio",
            ))
        }
    }

    fn label(self) -> &'static str {
        match self {
            Axis::AlphaRatio => "alpha1/alpha2",
            Axis::FeaturePatches => "P0",
            Axis::HeadRatio => "lr_head/lr",
        }
    }

    /// The axis value of a configuration.
    fn value(self, c: &Config) -> f64 {
        match self {
            Axis::AlphaRatio => c.setting.alpha[0] / c.setting.alpha[1],
            Axis::FeaturePatches => c.setting.feature_patches as f64,
            Axis::HeadRatio => c.training.head_ratio(),
        }
    }
}

/// The spec's conventions for Theorem 4.1's hypotheses at one `d` (`[options.rule]`):
/// `polylog(d)` read as `(ln d)^c` with `0 < c <= ratio_log_power`, `Theta(log d)` as a
/// factor `p0_factor` either way, and `eta_E in [eta / alpha1^O(1), eta / polylog(d)]` as
/// `alpha1^-head_ratio_power <= lr_head/lr <= 1 / ln d`.
/// Theorem 4.3's only hypothesis that a grid can miss, `m <= o(alpha1/alpha2)`, is read as
/// `alpha1/alpha2 >= alpha_ratio_per_neuron m` (Theorem 4.3's `[options.rule]`).
enum Hypotheses {
    /// Theorem 4.1's conventions.
    Both {
        ratio_log_power: f64,
        p0_factor: f64,
        head_ratio_power: f64,
    },
    /// Theorem 4.3's.
    Collapse { per_neuron: f64 },
}

impl Hypotheses {
    fn from(ctx: &Context, claim: Claim) -> Result<Hypotheses> {
        Ok(match claim {
            Claim::Both => Hypotheses::Both {
                ratio_log_power: ctx.rule("ratio_log_power")?,
                p0_factor: ctx.rule("p0_factor")?,
                head_ratio_power: ctx.rule("head_ratio_power")?,
            },
            Claim::Collapse => Hypotheses::Collapse {
                per_neuron: ctx.rule("alpha_ratio_per_neuron")?,
            },
        })
    }

    /// The hypotheses a cell violates, empty when it is inside.
    fn violated(&self, c: &Config) -> Vec<String> {
        match *self {
            Hypotheses::Both {
                ratio_log_power,
                p0_factor,
                head_ratio_power,
            } => both_violated(c, ratio_log_power, p0_factor, head_ratio_power),
            Hypotheses::Collapse { per_neuron } => {
                let s = &c.setting;
                if s.alpha[0] / s.alpha[1] >= per_neuron * s.neurons as f64 {
                    Vec::new()
                } else {
                    vec![format!("alpha1/alpha2 < {} m", num(per_neuron))]
                }
            }
        }
    }

    fn describe(&self) -> String {
        match *self {
            Hypotheses::Both {
                ratio_log_power,
                p0_factor,
                head_ratio_power,
            } => format!(
                "Theorem 4.1's hypotheses at each d, by the spec's conventions: \
                 `alpha2 = alpha1/polylog(d)` read as `1 < alpha1/alpha2 <= (ln d)^{}`; \
                 `P0 = Theta(log d)` as `ln d / {k} <= P0 <= {k} ln d`; \
                 `eta_E in [eta/alpha1^O(1), eta/polylog(d)]` as \
                 `alpha1^-{} <= lr_head/lr <= 1/ln d`",
                num(ratio_log_power),
                num(head_ratio_power),
                k = num(p0_factor),
            ),
            Hypotheses::Collapse { per_neuron } => format!(
                "Theorem 4.3 asks `m <= o(alpha1/alpha2)`, read as `alpha1/alpha2 >= {} m`",
                num(per_neuron)
            ),
        }
    }
}

/// The conventions of Theorem 4.1 that a cell violates (see [`Hypotheses::Both`]).
fn both_violated(
    c: &Config,
    ratio_log_power: f64,
    p0_factor: f64,
    head_ratio_power: f64,
) -> Vec<String> {
    {
        let ln_d = (c.setting.dim as f64).ln();
        let s = &c.setting;
        let ratio = s.alpha[0] / s.alpha[1];
        let head = c.training.head_ratio();
        let mut out = Vec::new();
        if !(ratio > 1.0 && ratio <= ln_d.powf(ratio_log_power)) {
            out.push(format!(
                "alpha1/alpha2 not in (1, (ln d)^{}]",
                num(ratio_log_power)
            ));
        }
        let p0 = s.feature_patches as f64;
        if !(p0 >= ln_d / p0_factor && p0 <= ln_d * p0_factor) {
            out.push(format!(
                "P0 not in [ln d / {k}, {k} ln d]",
                k = num(p0_factor)
            ));
        }
        let lower = s.alpha[0].powf(-head_ratio_power);
        if !(head >= lower && head <= 1.0 / ln_d) {
            out.push(format!(
                "lr_head/lr not in [alpha1^-{}, 1/ln d]",
                num(head_ratio_power)
            ));
        }
        out
    }
}

/// One cell: its `d`, axis value, configuration, runs and count of the claim's class.
struct Cell<'a> {
    d: u64,
    x: f64,
    config: Config,
    runs: Vec<&'a Record>,
    both: usize,
    violated: Vec<String>,
}

/// The one-sided exact binomial p-value of `k` successes in `n` trials against a rate of
/// at least `p`: `P(X <= k)` under `Binomial(n, p)`.
fn p_below(k: usize, n: usize, p: f64) -> Result<f64> {
    let b =
        Binomial::new(p, n as u64).map_err(|e| Error::numerical("binomial test", e.to_string()))?;
    Ok(b.cdf(k as u64))
}

/// The rate rule over the inside cells, each `(both-features, runs, inside)`: per inside
/// cell the one-sided exact binomial test of `rate >= rate_min`, Holm-adjusted over the
/// inside cells. Fails when some adjusted p-value is below `alpha`; holds when every inside
/// cell's 95% Clopper-Pearson lower bound is at least `rate_min`; inconclusive otherwise,
/// or without an inside cell. The verdict and the adjusted p-values (`None` outside).
fn rate_rule(
    cells: &[(usize, usize, bool)],
    rate_min: f64,
    alpha: f64,
) -> Result<(Verdict, Vec<Option<f64>>)> {
    let inside: Vec<usize> = (0..cells.len()).filter(|&i| cells[i].2).collect();
    let raw = inside
        .iter()
        .map(|&i| p_below(cells[i].0, cells[i].1, rate_min))
        .collect::<Result<Vec<f64>>>()?;
    let adjusted = stats::holm(&raw);
    let mut out = vec![None; cells.len()];
    for (&i, &p) in inside.iter().zip(&adjusted) {
        out[i] = Some(p);
    }
    let mut lower_ok = !inside.is_empty();
    for &i in &inside {
        lower_ok &= cp(cells[i].0, cells[i].1)?.lo >= rate_min;
    }
    let verdict = if adjusted.iter().any(|&p| p < alpha) {
        Verdict::Fails
    } else if lower_ok {
        Verdict::Holds
    } else {
        Verdict::Inconclusive
    };
    Ok((verdict, out))
}

/// [`rate_rule`] over the cells' counts (inside: no hypothesis violated).
fn cells_rule(cells: &[Cell], rate_min: f64, alpha: f64) -> Result<(Verdict, Vec<Option<f64>>)> {
    let counts: Vec<(usize, usize, bool)> = cells
        .iter()
        .map(|c| (c.both, c.runs.len(), c.violated.is_empty()))
        .collect();
    rate_rule(&counts, rate_min, alpha)
}

/// The cells of the records, in grid order.
fn cells<'a>(
    ctx: &Context,
    recs: &[&'a Record],
    axis: Axis,
    claim: Claim,
) -> Result<Vec<Cell<'a>>> {
    let hyp = Hypotheses::from(ctx, claim)?;
    let key = |r: &Record| -> Point { r.point.clone() };
    groups(recs, key)
        .into_iter()
        .map(|(_, runs)| {
            let config = ctx.spec.config_for(&runs[0].point)?;
            Ok(Cell {
                d: dim_of(ctx, runs[0]),
                x: axis.value(&config),
                violated: hyp.violated(&config),
                both: runs.iter().filter(|r| claim.success(r)).count(),
                config,
                runs,
            })
        })
        .collect()
}

/// The rate table: one row per cell.
fn rate_table(cells: &[Cell], p: &[Option<f64>], claim: Claim) -> Result<Table> {
    let mut t = Table::new(&[
        "d",
        "alpha1",
        "alpha2",
        "alpha1/alpha2",
        "P0",
        "lr_head/lr",
        "m",
        "inside the hypotheses",
        "runs",
        claim.class(),
        "rate",
        "95% CI",
        "p (rate >= rate_min), Holm",
        "runs with t3",
        "median t3",
        "95% CI (median t3)",
        "stopped early",
    ]);
    for (c, p) in cells.iter().zip(p) {
        let s = &c.config.setting;
        let n = c.runs.len();
        let t3 = values(&c.runs, |r| field(summary_of(r), "t3"));
        let ci = stats::median_ci(&t3, CONFIDENCE)?;
        t.push(vec![
            c.d.to_string(),
            num(s.alpha[0]),
            num(s.alpha[1]),
            num(s.alpha[0] / s.alpha[1]),
            s.feature_patches.to_string(),
            num(c.config.training.head_ratio()),
            s.neurons.to_string(),
            if c.violated.is_empty() {
                "yes".into()
            } else {
                format!("no: {}", c.violated.join("; "))
            },
            n.to_string(),
            c.both.to_string(),
            num(c.both as f64 / n as f64),
            interval(cp(c.both, n)?),
            p.map_or("-".into(), num),
            t3.len().to_string(),
            opt_num(stats::median(&t3)?),
            ci.map_or("-".into(), interval),
            stopped_early(&c.runs).to_string(),
        ]);
    }
    Ok(t)
}

/// The trend table: per `d`, the Cochran-Armitage test of the failure rate against the
/// logarithm of the axis value over every cell of that `d` (descriptive).
fn trend_table(axis: Axis, cells: &[Cell]) -> Table {
    let mut t = Table::new(&[
        "d",
        "m",
        "cells",
        "runs",
        "failures",
        &format!("failure rate, smallest {}", axis.label()),
        &format!("failure rate, largest {}", axis.label()),
        "z (Cochran-Armitage)",
        "p (rate grows)",
        "p (rate falls)",
    ]);
    let mut ds: Vec<(u64, usize)> = cells
        .iter()
        .map(|c| (c.d, c.config.setting.neurons))
        .collect();
    ds.sort_unstable();
    ds.dedup();
    for (d, m) in ds {
        let mut cs: Vec<&Cell> = cells
            .iter()
            .filter(|c| c.d == d && c.config.setting.neurons == m)
            .collect();
        cs.sort_by(|a, b| a.x.total_cmp(&b.x));
        let groups: Vec<(f64, u64, u64)> = cs
            .iter()
            .map(|c| {
                let n = c.runs.len() as u64;
                (c.x.ln(), n - c.both as u64, n)
            })
            .collect();
        let tr = stats::cochran_armitage(&groups).ok();
        let rate = |c: Option<&&Cell>| {
            c.map_or("-".into(), |c| {
                num(1.0 - c.both as f64 / c.runs.len() as f64)
            })
        };
        t.push(vec![
            d.to_string(),
            m.to_string(),
            cs.len().to_string(),
            groups.iter().map(|g| g.2).sum::<u64>().to_string(),
            groups.iter().map(|g| g.1).sum::<u64>().to_string(),
            rate(cs.first()),
            rate(cs.last()),
            tr.map_or("-".into(), |t| num(t.z)),
            tr.map_or("-".into(), |t| num(t.p_increasing)),
            tr.map_or("-".into(), |t| num(t.p_decreasing)),
        ]);
    }
    t
}

/// Theorem 4.1 along one axis of its hypotheses (see the module documentation).
///
/// # Errors
/// A missing `[options.rule]` key, a spec that sweeps none of the regime axes, or a
/// configuration the spec cannot resolve.
pub fn regime(ctx: &Context, recs: &[&Record]) -> Result<Body> {
    let axis = Axis::of(ctx)?;
    let (rate_min, alpha) = (ctx.rule("rate_min")?, ctx.rule("alpha")?);
    let hyp = Hypotheses::from(ctx, Claim::Both)?;
    let cells = cells(ctx, recs, axis, Claim::Both)?;
    let (verdict, p) = cells_rule(&cells, rate_min, alpha)?;
    let mut body = Body::claim(&format!(
        "Claim (Theorem 4.1): inside its hypotheses, with probability 1 - o(1) the two \
         neurons learn different features. Here {} moves away from the scaling family, one \
         value per cell, while d, P, and the other parameters follow the family; each cell's \
         seeds are drawn independently (`seed_streams = \"per-cell\"`).\n\n",
        axis.label()
    ));
    body.section(
        REGIME,
        rate_table(&cells, &p, Claim::Both)?,
        Some(verdict),
        format!(
            "over the cells inside the hypotheses, the exact one-sided binomial test of \
             `rate >= rate_min` (the spec's rate_min = {rm}) per cell, Holm-adjusted over \
             those cells: fails when some adjusted p-value is below the spec's alpha = {a}; \
             holds when every inside cell's 95% Clopper-Pearson lower bound is at least \
             rate_min; inconclusive otherwise, or without an inside cell. {h}. The median t3 \
             is over the runs that reached t3 (`runs with t3`), with its order-statistic \
             interval (eq. (D7) of derivations/scaling.md).",
            rm = num(rate_min),
            a = num(alpha),
            h = hyp.describe()
        ),
    );
    let flagged = cells.iter().filter(|c| !c.violated.is_empty()).count();
    body.assume(REGIME, flagged, cells.len(), hyp.describe());
    body.section(
        &format!("Failure rate along {}", axis.label()),
        trend_table(axis, &cells),
        None,
        format!(
            "descriptive, no verdict (the theorem does not say how the rate moves along {} \
             inside its range). A failure is a run not classed `both-features`; the \
             Cochran-Armitage test (eq. (D6) of derivations/scaling.md) of the failure rate \
             against ln({}) over every cell of each d, inside the hypotheses or not, with \
             its two one-sided p-values.",
            axis.label(),
            axis.label()
        ),
    );
    let by_cell: Vec<(Vec<String>, Vec<&Record>)> = cells
        .iter()
        .map(|c| (vec![c.d.to_string(), num(c.x)], c.runs.clone()))
        .collect();
    body.section(
        &format!("Outcome taxonomy (E7) along {}", axis.label()),
        taxonomy::table(&["d", axis.label()], &by_cell),
        None,
        taxonomy::RULE,
    );
    let mut series: Vec<Scatter> = Vec::new();
    for c in &cells {
        let label = format!("d = {}", c.d);
        let pt = (c.x, (c.both as f64 / c.runs.len() as f64).max(1e-3));
        match series.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push(pt),
            None => series.push(Scatter {
                label,
                points: vec![pt],
                fit: None,
            }),
        }
    }
    body.loglog_figure(
        ctx,
        &format!(
            "Both-features rate versus {} (rate 0 drawn at 1e-3)",
            axis.label()
        ),
        axis.label(),
        "both-features rate",
        &series,
    )?;
    Ok(body)
}

/// The race law (C4) per cell: the collapse count (onto either feature) against
/// `p^m + (1 - p)^m`, exact two-sided binomial tests, Holm-adjusted; fails when one
/// rejects at `level`. Beside it the same test of the rival law `p' = (2/pi)
/// arctan(alpha1/alpha2)` (the law's falsifier): the table, the verdict and how many cells
/// reject the rival.
fn race_law_table(cells: &[Cell], level: f64) -> Result<(Table, Verdict, usize)> {
    let mut rows = Vec::new();
    let (mut raw, mut rival) = (Vec::new(), Vec::new());
    for c in cells {
        let s = &c.config.setting;
        let q = crate::moments::race::collapse_probabilities(s.alpha, s.neurons);
        let n = c.runs.len() as u64;
        let k = c
            .runs
            .iter()
            .filter(|r| outcome_of(r) == "collapse")
            .count() as u64;
        raw.push(stats::binomial_two_sided(k, n, q.v1 + q.v2)?);
        let pr = std::f64::consts::FRAC_2_PI * (s.alpha[0] / s.alpha[1]).atan();
        let m = i32::try_from(s.neurons).unwrap_or(i32::MAX);
        rival.push(stats::binomial_two_sided(
            k,
            n,
            pr.powi(m) + (1.0 - pr).powi(m),
        )?);
        rows.push((c, k, n, q.v1, q.v1 + q.v2));
    }
    let (adj, rival_adj) = (stats::holm(&raw), stats::holm(&rival));
    let mut t = Table::new(&[
        "d",
        "m",
        "alpha1/alpha2",
        "runs",
        "collapse-v1",
        "predicted collapse-v1 rate p^m",
        "collapse",
        "predicted collapse rate (C4)",
        "p-value",
        "Holm",
        "rival law, Holm",
    ]);
    for (i, (c, k, n, v1, both)) in rows.into_iter().enumerate() {
        let s = &c.config.setting;
        t.push(vec![
            c.d.to_string(),
            s.neurons.to_string(),
            num(s.alpha[0] / s.alpha[1]),
            n.to_string(),
            c.both.to_string(),
            num(v1),
            k.to_string(),
            num(both),
            num(raw[i]),
            num(adj[i]),
            num(rival_adj[i]),
        ]);
    }
    let verdict = if adj.iter().any(|&p| p < level) {
        Verdict::Fails
    } else {
        Verdict::Holds
    };
    let rejected = rival_adj.iter().filter(|&&p| p < level).count();
    Ok((t, verdict, rejected))
}

/// Theorem 4.3 in its regime: the frozen head's collapse-v1 rate per cell of `(m,
/// alpha1/alpha2)`, the rule of [`rate_rule`] over the cells with `alpha1/alpha2 >=
/// alpha_ratio_per_neuron m`, and the race law (C4) per cell.
///
/// # Errors
/// A missing `[options.rule]` key, a spec that does not sweep `alpha_ratio`, or a
/// configuration the spec cannot resolve.
pub fn regime43(ctx: &Context, recs: &[&Record]) -> Result<Body> {
    let axis = Axis::of(ctx)?;
    let (rate_min, alpha) = (ctx.rule("rate_min")?, ctx.rule("alpha")?);
    let hyp = Hypotheses::from(ctx, Claim::Collapse)?;
    let cells = cells(ctx, recs, axis, Claim::Collapse)?;
    let (verdict, p) = cells_rule(&cells, rate_min, alpha)?;
    let mut body = Body::claim(
        "Claim (Theorem 4.3): with the head frozen at E = I and `m <= o(alpha1/alpha2)`, with \
         probability 1 - o(1) every neuron learns v1 (`collapse-v1`). The paper family's \
         alpha1/alpha2 (2.3 to 6.9) never reaches `10 m`; here `alpha1/alpha2` moves past \
         it at fixed d, one value per cell, each cell's seeds drawn independently.\n\n",
    );
    body.section(
        REGIME43,
        rate_table(&cells, &p, Claim::Collapse)?,
        Some(verdict),
        format!(
            "over the cells inside the hypothesis, the exact one-sided binomial test of \
             `rate >= rate_min` (the spec's rate_min = {rm}) of the collapse-v1 rate per \
             cell, Holm-adjusted over those cells (eq. (D8) of derivations/scaling.md): \
             fails when some adjusted p-value is below the spec's alpha = {a}; holds when \
             every inside cell's 95% Clopper-Pearson lower bound is at least rate_min; \
             inconclusive otherwise. {h}.",
            rm = num(rate_min),
            a = num(alpha),
            h = hyp.describe()
        ),
    );
    let flagged = cells.iter().filter(|c| !c.violated.is_empty()).count();
    body.assume(REGIME43, flagged, cells.len(), hyp.describe());
    let level = ctx.rule("law_level")?;
    let (law, law_verdict, rival_rejected) = race_law_table(&cells, level)?;
    body.section(
        "The race law (C4) per cell",
        law,
        Some(law_verdict),
        format!(
            "derivations/frozen_head.md predicts collapse-v1 with probability `p^m` and a \
             collapse onto either feature with `p^m + (1 - p)^m`, `p = (2/pi) \
             arctan((alpha1/alpha2)^(3/2))`. Per cell, the exact two-sided binomial test of \
             the collapse count; holds when no Holm-adjusted p-value is below the spec's \
             law_level = {}, fails otherwise. Falsifier: the same test of the rival law \
             `p' = (2/pi) arctan(alpha1/alpha2)` rejects it in {} of {} cells.",
            num(level),
            rival_rejected,
            cells.len()
        ),
    );
    let by_cell: Vec<(Vec<String>, Vec<&Record>)> = cells
        .iter()
        .map(|c| {
            let m = c.config.setting.neurons.to_string();
            (vec![c.d.to_string(), m, num(c.x)], c.runs.clone())
        })
        .collect();
    body.section(
        "Outcome taxonomy (E7) per cell",
        taxonomy::table(&["d", "m", axis.label()], &by_cell),
        None,
        taxonomy::RULE,
    );
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::{p_below, rate_rule};
    use crate::report::table::Verdict;

    /// The rate rule on planted counts: it holds on high rates, fails on one low inside
    /// cell (a negative control), ignores an outside cell, and stays inconclusive on a rate
    /// whose interval straddles rate_min.
    #[test]
    fn rate_rule_fails_on_a_low_inside_cell_only() {
        let v = |cells: &[(usize, usize, bool)]| rate_rule(cells, 0.5, 0.05).unwrap().0;
        let good = [(950, 1000, true), (930, 1000, true)];
        assert_eq!(v(&good), Verdict::Holds);
        // Planted: one inside cell at 0.40 (one-sided p ~ 1e-10, far below 0.05 / 2).
        assert_eq!(v(&[(950, 1000, true), (400, 1000, true)]), Verdict::Fails);
        // The same low cell outside the hypotheses is not read.
        assert_eq!(v(&[(950, 1000, true), (400, 1000, false)]), Verdict::Holds);
        // 0.52 of 100: the lower bound is below 0.5 and the test does not reject.
        assert_eq!(v(&[(52, 100, true)]), Verdict::Inconclusive);
        // Without an inside cell nothing is decided.
        assert_eq!(v(&[(950, 1000, false)]), Verdict::Inconclusive);
        // Holm over two cells: 0.45 of 1000 (raw p ~ 8e-4) still rejects after doubling.
        let (_, p) = rate_rule(&[(450, 1000, true), (950, 1000, true)], 0.5, 0.05).unwrap();
        assert!(p[0].unwrap() < 0.05 && p[1].unwrap() > 0.5, "{p:?}");
    }

    /// The one-sided binomial tail against R's `pbinom(40, 100, 0.5)` = 0.02844396.
    #[test]
    fn binomial_tail_matches_r() {
        let p = p_below(40, 100, 0.5).unwrap();
        assert!((p - 0.028_443_96).abs() < 1e-8, "{p}");
        // Negative control: the upper tail is not what the rule reads.
        assert!((p_below(60, 100, 0.5).unwrap() - 0.028_443_96).abs() > 0.5);
    }
}
