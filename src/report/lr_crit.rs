//! The `lr_crit` report (issue 20, `derivations/sgd_reduced.md` (R12)-(R14)): the largest
//! learning rate at which reduced SGD follows the gradient flow, as a function of `d`, its
//! fitted exponent with a bootstrap interval, beside the derived exponent, and the same rule
//! run on the planted engine without the Wishart term (the falsifier).
//!
//! Records: runners `flow-ref`, `sgd-reduced-ref` and `sgd-reduced-ref-nowishart`
//! ([`super::runner`]) over the axes `dim` and `lr_d` (`lr = lr_d / d`), one batch size.

use super::claims::{dim_of, groups, Body, Context, CONFIDENCE};
use super::runner::{REFERENCE_DIM, REFERENCE_SEED};
use super::stats;
use super::table::{num, Table, Verdict};
use super::{field, summary_of};
use crate::error::{Error, Result};
use crate::sweep::Record;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The SGD engines of the report: `(runner, label)`; the second is the falsifier.
const ENGINES: [(&str, &str); 2] = [
    ("sgd-reduced-ref", "exact"),
    ("sgd-reduced-ref-nowishart", "no Wishart term (falsifier)"),
];

/// The rule's constants, read from the spec's `[options]` (fixed before the run).
struct Rule {
    /// The tolerance on the deviation `D` (R13).
    tol: f64,
    /// The derived exponent (R14).
    expected: f64,
    /// Bootstrap resamples and their seed.
    resamples: usize,
    seed: u64,
}

impl Rule {
    fn from_spec(ctx: &Context) -> Result<Rule> {
        let o = &ctx.spec.options;
        let get = |k: &str| {
            o.get(k)
                .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
                .ok_or_else(|| Error::invalid(format!("options.{k}"), "missing or not a number"))
        };
        Ok(Rule {
            tol: get("tol")?,
            expected: get("expected_exponent")?,
            resamples: get("bootstrap")? as usize,
            seed: get("bootstrap_seed")? as u64,
        })
    }
}

/// One run's relative deviations `t/t_flow - 1` of `t1` and `t3`: `+inf` when SGD never
/// reached the event (a run that does not reach it is as far from the flow as can be).
#[derive(Clone, Copy)]
struct Deviation {
    t1: f64,
    t3: f64,
}

/// The runs of one engine at one `d`: `cells[i]` holds the deviations at `lr_d[i]` (in the
/// grid's descending order), one per seed, seeds in the same order in every cell.
struct Column {
    d: u64,
    lr_d: Vec<f64>,
    cells: Vec<Vec<Deviation>>,
}

/// The median of values that may be `+inf` (never NaN here).
fn median_inf(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The deviation statistic (R13) of the runs `idx` of a cell:
/// `D = max(abs(median(t1 dev)), abs(median(t3 dev)))`.
fn statistic(cell: &[Deviation], idx: &[usize]) -> f64 {
    let mut a: Vec<f64> = idx.iter().map(|&i| cell[i].t1).collect();
    let mut b: Vec<f64> = idx.iter().map(|&i| cell[i].t3).collect();
    median_inf(&mut a).abs().max(median_inf(&mut b).abs())
}

/// `lr_crit` of one column from the statistics `dev` (grid order, `lr` descending):
/// the first grid point from the largest `lr` down whose `D <= tol`, interpolated in
/// `(ln lr, ln D)` with the failing point above it (R13). When that point's `D` is `+inf`
/// (a run there never reached an event) the crossing is bracketed by the two grid points
/// but cannot be interpolated: the geometric midpoint of the bracket (an error of at most
/// half a grid step in `ln lr`, the resolution of the grid). `None` when it is censored: no
/// point passes (`lr_crit` is below the grid), or the largest does (above it).
fn crit(lr: &[f64], dev: &[f64], tol: f64) -> Option<f64> {
    let k = dev.iter().position(|&x| x <= tol)?;
    if k == 0 {
        return None;
    }
    if !dev[k - 1].is_finite() || dev[k] <= 0.0 {
        return Some((lr[k - 1] * lr[k]).sqrt());
    }
    let (x0, x1) = (lr[k - 1].ln(), lr[k].ln());
    let (y0, y1) = (dev[k - 1].ln(), dev[k].ln());
    Some((x0 + (tol.ln() - y0) * (x1 - x0) / (y1 - y0)).exp())
}

/// `lr_crit` of each column with the seeds `pick` (the same in every column).
fn crits(cols: &[Column], pick: &[usize], tol: f64) -> Vec<Option<f64>> {
    cols.iter()
        .map(|c| {
            let lr: Vec<f64> = c.lr_d.iter().map(|x| x / c.d as f64).collect();
            let dev: Vec<f64> = c.cells.iter().map(|cell| statistic(cell, pick)).collect();
            crit(&lr, &dev, tol)
        })
        .collect()
}

/// The least-squares slope of `ln lr_crit` against `ln d`; `None` unless every column has
/// a value and there are two or more.
fn slope(cols: &[Column], lr_crit: &[Option<f64>]) -> Option<f64> {
    let pts: Option<Vec<(f64, f64)>> = cols
        .iter()
        .zip(lr_crit)
        .map(|(c, l)| l.map(|l| ((c.d as f64).ln(), l.ln())))
        .collect();
    let (x, y): (Vec<f64>, Vec<f64>) = pts?.into_iter().unzip();
    // Fewer than two points, or one d only: no slope.
    stats::ols(&x, &y, CONFIDENCE).ok().map(|f| f.slope)
}

/// The fitted exponent and its bootstrap: the point estimate, the percentile interval
/// (`None` when fewer than 90% of the resamples give a slope), and the fraction that did.
struct Fit {
    slope: Option<f64>,
    interval: Option<(f64, f64)>,
    defined: f64,
    lr_crit: Vec<Option<f64>>,
    bands: Vec<Option<(f64, f64)>>,
}

/// Resamples the seeds with replacement, `rule.resamples` times, from a fixed ChaCha8
/// stream, and takes the 2.5% and 97.5% points of the slopes. The draw is the same in every
/// cell of every column: a seed is the same data stream at every `lr` and every `d` (and
/// the same initial state), so its runs are paired across both, and the resampling keeps
/// the pairs (resampling each `d` on its own would treat correlated columns as independent).
///
/// # Errors
/// Columns, or cells, with different numbers of seeds (the pairing is then undefined).
fn bootstrap(cols: &[Column], rule: &Rule) -> Result<Fit> {
    let n = cols
        .first()
        .map_or(0, |c| c.cells.first().map_or(0, Vec::len));
    if cols
        .iter()
        .flat_map(|c| &c.cells)
        .any(|cell| cell.len() != n)
    {
        return Err(Error::invalid(
            "seeds",
            "the lr_crit report pairs seeds across d and lr: every cell needs the same seeds",
        ));
    }
    let all: Vec<usize> = (0..n).collect();
    let lr_crit = crits(cols, &all, rule.tol);
    let mut rng = ChaCha8Rng::seed_from_u64(rule.seed);
    let mut slopes = Vec::new();
    let mut per_col: Vec<Vec<f64>> = vec![Vec::new(); cols.len()];
    for _ in 0..rule.resamples {
        let pick: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
        let l = crits(cols, &pick, rule.tol);
        for (v, x) in per_col.iter_mut().zip(&l) {
            v.extend(x);
        }
        slopes.extend(slope(cols, &l));
    }
    let pct = |v: &mut Vec<f64>| -> Option<(f64, f64)> {
        if (v.len() as f64) < 0.9 * rule.resamples as f64 {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * (v.len() - 1) as f64).round()) as usize];
        Some((at(0.025), at(0.975)))
    };
    let defined = slopes.len() as f64 / rule.resamples.max(1) as f64;
    Ok(Fit {
        slope: slope(cols, &lr_crit),
        interval: pct(&mut slopes),
        defined,
        bands: per_col.iter_mut().map(pct).collect(),
        lr_crit,
    })
}

/// The rule (R14): holds when the interval holds the derived exponent and excludes 0 (the
/// exponent of a `d`-blind engine), fails when it excludes the derived exponent, else (or
/// without an interval) inconclusive.
fn verdict(fit: &Fit, rule: &Rule) -> Verdict {
    match fit.interval {
        Some((lo, hi))
            if lo <= rule.expected && rule.expected <= hi && !(lo <= 0.0 && 0.0 <= hi) =>
        {
            Verdict::Holds
        }
        Some((lo, hi)) if !(lo <= rule.expected && rule.expected <= hi) => Verdict::Fails,
        _ => Verdict::Inconclusive,
    }
}

/// The columns of one engine, and the table rows of its cells.
fn columns(
    ctx: &Context,
    recs: &[&Record],
    engine: &str,
    label: &str,
    t: &mut Table,
) -> Result<Vec<Column>> {
    let flow: Vec<&Record> = recs
        .iter()
        .copied()
        .filter(|r| r.point.runner == "flow-ref")
        .collect();
    let flow_times = |seed: u64| -> Option<(f64, f64)> {
        let f = flow.iter().find(|r| r.seed == seed)?;
        Some((field(summary_of(f), "t1")?, field(summary_of(f), "t3")?))
    };
    let mine: Vec<&Record> = recs
        .iter()
        .copied()
        .filter(|r| r.point.runner == engine)
        .collect();
    let mut out = Vec::new();
    for (d, rs) in groups(&mine, |r| dim_of(ctx, r)) {
        let mut col = Column {
            d,
            lr_d: Vec::new(),
            cells: Vec::new(),
        };
        let mut by_lr = groups(&rs, |r| r.point.lr_d.map(f64::to_bits));
        by_lr.sort_by(|a, b| {
            b.1[0]
                .point
                .lr_d
                .partial_cmp(&a.1[0].point.lr_d)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        for (_, cell) in by_lr {
            let lr_d = cell[0]
                .point
                .lr_d
                .ok_or_else(|| Error::invalid("axes.lr_d", "required by the lr_crit report"))?;
            let c = ctx.spec.config_for(&cell[0].point)?;
            let mut devs = Vec::new();
            for r in &cell {
                // A seed whose flow never reaches t1 or t3 has nothing to compare with: it
                // is left out of every cell alike (the seeds stay paired), and counted.
                let Some((f1, f3)) = flow_times(r.seed) else {
                    continue;
                };
                let s = summary_of(r);
                let rel = |k: &str, f: f64| field(s, k).map_or(f64::INFINITY, |t| t / f - 1.0);
                devs.push(Deviation {
                    t1: rel("t1", f1),
                    t3: rel("t3", f3),
                });
            }
            let all: Vec<usize> = (0..devs.len()).collect();
            let mut m1: Vec<f64> = devs.iter().map(|x| x.t1).collect();
            let mut m3: Vec<f64> = devs.iter().map(|x| x.t3).collect();
            let lr = c.training.lr;
            let k = c.setting.dim as f64
                - 2.0
                - c.setting.neurons.min(c.setting.dim as usize - 2) as f64;
            t.push(vec![
                label.into(),
                d.to_string(),
                num(lr_d),
                num(lr),
                c.training.batch.to_string(),
                num(lr * k / c.training.batch as f64),
                devs.len().to_string(),
                devs.iter().filter(|x| x.t1.is_finite()).count().to_string(),
                devs.iter().filter(|x| x.t3.is_finite()).count().to_string(),
                num(median_inf(&mut m1)),
                num(median_inf(&mut m3)),
                num(statistic(&devs, &all)),
            ]);
            col.lr_d.push(lr_d);
            col.cells.push(devs);
        }
        out.push(col);
    }
    Ok(out)
}

/// The `lr_crit` report.
pub fn lr_crit(ctx: &Context, recs: &[&Record]) -> Result<Body> {
    let rule = Rule::from_spec(ctx)?;
    let mut cells = Table::new(&[
        "engine",
        "d",
        "lr d",
        "lr",
        "N",
        "lr k / N",
        "runs",
        "t1 reached",
        "t3 reached",
        "median t1/flow - 1",
        "median t3/flow - 1",
        "D",
    ]);
    let mut crit_t = Table::new(&["engine", "d", "lr_crit", "95% bootstrap band", "lr_crit d"]);
    let mut fit_t = Table::new(&[
        "engine",
        "fitted exponent",
        "95% bootstrap interval",
        "resamples with a slope",
        "derived",
        "rule says",
    ]);
    let mut says = Vec::new();
    for (engine, label) in ENGINES {
        let cols = columns(ctx, recs, engine, label, &mut cells)?;
        let fit = bootstrap(&cols, &rule)?;
        for ((c, l), b) in cols.iter().zip(&fit.lr_crit).zip(&fit.bands) {
            crit_t.push(vec![
                label.into(),
                c.d.to_string(),
                l.map_or("censored".into(), num),
                b.map_or("-".into(), |(lo, hi)| format!("[{}, {}]", num(lo), num(hi))),
                l.map_or("-".into(), |l| num(l * c.d as f64)),
            ]);
        }
        let v = verdict(&fit, &rule);
        fit_t.push(vec![
            label.into(),
            fit.slope.map_or("-".into(), num),
            fit.interval
                .map_or("-".into(), |(lo, hi)| format!("[{}, {}]", num(lo), num(hi))),
            format!("{:.1}%", 100.0 * fit.defined),
            num(rule.expected),
            v.name().into(),
        ]);
        says.push(v);
    }
    let falsifier_fails = says[1] == Verdict::Fails;
    let verdict = if falsifier_fails {
        says[0]
    } else {
        Verdict::Inconclusive
    };
    let mut body = Body::claim(&format!(
        "Issue 20's open question: for which `lr` does SGD follow the flow, as a function of \
         `d`? Every run starts from the same reduced state, the reduced initialization of seed \
         {REFERENCE_SEED} drawn at d = {REFERENCE_DIM}, so the flow (d-free in reduced \
         coordinates) is the same at every d and the seeds are those of SGD's data, and d enters SGD only through the Wishart degrees of freedom \
         `k = d - 2 - rho` of (R7). The flow's `t1` and `t3` are compared with reduced SGD's \
         (runner `sgd-reduced-ref`, data seed = the run's seed, `lr = lr_d / d`, the batch \
         N of the table) by `D = max(|median(t1/t1_flow - 1)|, |median(t3/t3_flow - 1)|)` \
         over the seeds of a cell (a run that never reaches an event counts as +inf; one \
         that reaches `t3` has a neuron other than `v1`'s carrying `v2`, the flow's outcome, \
         so the rule also compares outcomes). \
         `lr_crit(d)` interpolates, in log-log, between the largest grid `lr` with \
         `D <= tol = {}` and the failing grid point above it (the geometric midpoint of \
         the two when the one above has `D = inf`; censored when no grid point passes or \
         the largest does). Derivation: `derivations/sgd_reduced.md`, (R12)-(R14): the Wishart term \
         adds a drift of order `lr k s^2 (P - P0) / N` per unit of flow time to `G`, so \
         `D ~ beta lr k / N + gamma lr` and `lr_crit = tol / (beta k / N + gamma)`, whose \
         exponent in d tends to {} once `beta k / N >> gamma`. The same rule on the engine \
         without the Wishart term (a d-blind chain: its `lr_crit` is constant in d, \
         exponent 0) is the falsifier.\n\n",
        rule.tol, rule.expected
    ));
    body.section(
        "The deviation of SGD from the flow, cell by cell",
        cells,
        None,
        "",
    );
    body.section("lr_crit(d)", crit_t, None, "the band is the 2.5% and 97.5% points of the bootstrap resamples' lr_crit (shown when at least 90% of them are uncensored).");
    let rule_text = format!(
        "the exponent is the least-squares slope of ln lr_crit on ln d; its interval the \
         2.5% and 97.5% points of {} bootstrap resamples (seeds resampled with replacement \
         with the same draw at every d and lr, since a seed is the same data stream there: \
         paired across d and lr; ChaCha8 seed {}), defined when at least 90% of \
         the resamples give a slope. The claim holds when the interval contains the derived \
         exponent {} and excludes 0, fails when it excludes {}, else inconclusive. The \
         falsifier (no Wishart term) must fail under the same rule; the verdict is that of \
         the exact engine when it does, and inconclusive (a broken check) when it does not. \
         Falsifier outcome: **{}**.",
        rule.resamples,
        rule.seed,
        rule.expected,
        rule.expected,
        if falsifier_fails {
            "fails, as it must"
        } else {
            "does not fail: broken check"
        },
    );
    body.section(
        "The exponent of lr_crit(d)",
        fit_t,
        Some(verdict),
        rule_text,
    );
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A column whose cell `i` has one run per factor in `spread`, each with the
    /// deviation `dev[i] * factor` (in `t1`; `t3` on the flow).
    fn col(d: u64, lr_d: &[f64], dev: &[f64], spread: &[f64]) -> Column {
        Column {
            d,
            lr_d: lr_d.to_vec(),
            cells: dev
                .iter()
                .map(|&x| {
                    spread
                        .iter()
                        .map(|f| Deviation { t1: x * f, t3: 0.0 })
                        .collect()
                })
                .collect(),
        }
    }

    /// `crit` interpolates between the failing and the passing point, takes the bracket's
    /// geometric midpoint when the point above is `+inf`, and censors.
    #[test]
    fn crit_interpolates_and_censors() {
        let lr = [0.04, 0.02, 0.01];
        // D = 0.4, 0.2, 0.05 with tol 0.1: between 0.02 (0.2) and 0.01 (0.05), D ~ lr^2.
        let l = crit(&lr, &[0.4, 0.2, 0.05], 0.1).unwrap();
        assert!((l - 0.02 / 2f64.sqrt()).abs() < 1e-12, "{l}");
        assert_eq!(crit(&lr, &[0.05, 0.02, 0.01], 0.1), None, "largest passes");
        assert_eq!(crit(&lr, &[0.4, 0.3, 0.2], 0.1), None, "none passes");
        let l = crit(&lr, &[f64::INFINITY, 0.05, 0.01], 0.1).unwrap();
        assert!((l - 0.02 * 2f64.sqrt()).abs() < 1e-15, "inf above: {l}");
    }

    /// The rule holds for an exact `lr_crit ∝ 1/d` and fails for a `d`-blind one (its
    /// falsifier), on synthetic columns with `D = lr k / N`-like deviations.
    #[test]
    fn the_rule_tells_the_two_engines_apart() {
        let rule = Rule {
            tol: 0.1,
            expected: -1.0,
            resamples: 200,
            seed: 1,
        };
        let lr_d = [16.0, 8.0, 4.0, 2.0, 1.0, 0.5];
        let make = |blind: bool| -> Vec<Column> {
            [100u64, 200, 400]
                .iter()
                .map(|&d| {
                    // D = 0.1 (lr d) for the exact engine, 0.1 (lr 100) when d-blind.
                    let dev: Vec<f64> = lr_d
                        .iter()
                        .map(|x| {
                            let lr = x / d as f64;
                            0.1 * lr * if blind { 100.0 } else { d as f64 } / 1.5
                        })
                        .collect();
                    // Each d spreads its seeds in its own order, so paired resamples
                    // still move the columns differently.
                    let mut spread = vec![0.7, 0.85, 1.0, 1.2, 1.4];
                    spread.rotate_left((d / 100) as usize);
                    col(d, &lr_d, &dev, &spread)
                })
                .collect()
        };
        let exact = bootstrap(&make(false), &rule).unwrap();
        assert!((exact.slope.unwrap() + 1.0).abs() < 1e-12);
        let (lo, hi) = exact.interval.unwrap();
        assert!(lo < -1.0 && -1.0 < hi && hi < 0.0, "{lo} {hi}");
        let blind = bootstrap(&make(true), &rule).unwrap();
        assert!(blind.slope.unwrap().abs() < 1e-12);
        assert_eq!(verdict(&exact, &rule), Verdict::Holds);
        assert_eq!(verdict(&blind, &rule), Verdict::Fails);
    }

    /// Paired resampling: columns that hold the same runs (a `d`-blind engine whose seeds
    /// are the same streams at every `d`) give the same `lr_crit` in every resample, so a
    /// slope of exactly 0 and an interval that excludes -1 however noisy the seeds are.
    /// Columns with different seed counts cannot be paired and are refused (its falsifier).
    #[test]
    fn paired_resamples_keep_identical_columns_identical() {
        let rule = Rule {
            tol: 0.1,
            expected: -1.0,
            resamples: 200,
            seed: 3,
        };
        let lr_d = [16.0, 8.0, 4.0, 2.0];
        // lr_d is per d, so a d-blind engine on the same lr grid: lr_d scales with d.
        let same = |d: u64| {
            let l: Vec<f64> = lr_d.iter().map(|x| x * d as f64 / 100.0).collect();
            col(d, &l, &[0.5, 0.2, 0.08, 0.05], &[0.3, 0.9, 1.3, 2.0])
        };
        let cols = [same(100), same(200), same(400)];
        let fit = bootstrap(&cols, &rule).unwrap();
        let (lo, hi) = fit.interval.unwrap();
        assert!(lo.abs() < 1e-12 && hi.abs() < 1e-12, "{lo} {hi}");
        assert_eq!(verdict(&fit, &rule), Verdict::Fails);
        let mut short = same(400);
        short.cells[0].pop();
        assert!(bootstrap(&[same(100), short], &rule).is_err());
    }
}
