//! The global error estimate of the event times and its refinement
//! (`derivations/numerics.md`, "Global error of the event times", eq. (G1);
//! `predhead::flow::global_error`). Every run here is deterministic.

use predhead::config::parse_config;
use predhead::error::Error;
use predhead::flow::global_error::{checked, compare, Check, Role};
use predhead::flow::{integrate, Options, Run};
use predhead::observe::{Event, Outcome};
use predhead::setting::Config;

/// The run at relative tolerance `rtol` with the default absolute tolerances (what
/// `predhead flow --rtol` runs).
fn run_at(config: &Config, seed: u64, rtol: f64) -> Run {
    run_scaled(config, seed, rtol, 1.0)
}

/// [`run_at`] with the head's absolute tolerance multiplied by `head_scale` (what
/// [`checked`] asks for after an unresolved event, eq. (G3)).
fn run_scaled(config: &Config, seed: u64, rtol: f64, head_scale: f64) -> Run {
    let x0 = predhead::init::reduced(&config.setting, seed).unwrap();
    let mut tol = Options::default_tolerance(rtol, config.setting.dim);
    tol.atol_head *= head_scale;
    let opts = Options {
        tol,
        ..Options::new(config)
    };
    integrate(config, &x0, &opts, &mut |_, _| Ok(())).unwrap()
}

fn config(setting: &str, lr_head: f64, horizon: Option<f64>) -> Config {
    let horizon = horizon.map_or(String::new(), |h| format!("horizon = {h:e}\n"));
    parse_config(&format!(
        "[setting]\n{setting}\n[model]\nhead = \"identity-offdiag\"\n\
         normalization = \"batchnorm\"\nstop_gradient = true\n\n\
         [training]\nlr = 1e-3\nlr_head = {lr_head:e}\n{horizon}"
    ))
    .unwrap()
}

/// The default test setting (`P = 8`, `P0 = 2`, `alpha = [2, 1]`, `s = 1`, `m = 2`,
/// `lr_head / lr = 0.2`) at dimension `dim`.
fn paper_setting(dim: u64) -> Config {
    config(
        &format!(
            "dim = {dim}\npatches = 8\nfeature_patches = 2\nalpha = [2.0, 1.0]\n\
             noise_std = 1.0\nneurons = 2"
        ),
        2e-4,
        None,
    )
}

fn relative(x: f64, reference: f64) -> f64 {
    (x - reference).abs() / reference.abs()
}

/// The held-out run that missed the 1e-6 criterion (seed-103 sweep, case 122:
/// `m = 3`, `d = 3.1e11`, the paper's head at `lr_head / lr = 0.2`, seed 65; the horizon
/// is cut to `4e20`, after `t3`, which leaves `t1 .. t3` as they are and spares the slow
/// end). Its `t3` is decided by a neuron that has shrunk to `|b| ~ 1e-5` while the others
/// are of order 1, and the global error grows 2000-fold over the local tolerance: at the
/// default `rtol = 1e-9` it is `1.9e-6` late although every step met its tolerance.
///
/// Reference: `t3 = 2.5905696165e20` from the default pair at rtol 1e-13 and the
/// exact-rational pairs (Dormand-Prince 5(4), Shampine's method) at rtol 1e-12, which
/// agree to 4.5e-11 (2.3 s and 2.8 s; quoted).
///
/// The companion at rtol 1e-8 estimates the error of the rtol-1e-9 run at 5.5e-5 (true:
/// 1.9e-6); the first refinement's estimate, 1.6e-6, is still above the target, and the
/// second (rtol 1e-11) is reported with the estimate 2.5e-7 and a true error of 4e-9.
/// Without the refinement the test fails (the rtol-1e-9 assertion below).
#[test]
fn refinement_brings_an_ill_conditioned_t3_within_the_target() {
    let c = config(
        "dim = 309967453400\npatches = 10\nfeature_patches = 6\n\
         alpha = [3.626355758753302, 0.9065889396883255]\n\
         noise_std = 0.6910081698091095\nneurons = 3",
        2e-4,
        Some(4e20),
    );
    let t3_ref = 2.590_569_616_5e20;
    let plain = run_at(&c, 65, 1e-9);
    let plain_err = relative(plain.summary.t3.unwrap(), t3_ref);
    assert!(
        plain_err > 1e-6,
        "the case: rtol 1e-9 misses 1e-6 ({plain_err:e})"
    );

    let mut rtols = Vec::new();
    let check = Check::default();
    let ch = checked(1e-9, &check, &mut |rtol, head, role| {
        rtols.push((rtol, role));
        Ok(run_scaled(&c, 65, rtol, head))
    })
    .unwrap();
    assert_eq!(
        rtols,
        [
            (1e-8, Role::Companion),
            (1e-9, Role::Reported),
            (1e-10, Role::Reported),
            (1e-11, Role::Reported)
        ]
    );
    assert_eq!(ch.refinements, 2);
    assert_eq!(ch.rtol, 1e-11);
    assert_eq!(ch.compared_rtol, Some(1e-10));
    assert!(ch.met(check.target));
    let cmp = ch.comparison.as_ref().unwrap();
    let t3 = ch.run.summary.t3.unwrap();
    let err = relative(t3, t3_ref);
    let est = cmp.errors.t3.unwrap();
    assert!(err <= 1e-6, "t3 {t3} vs {t3_ref}: {err:e}");
    assert!(
        err <= est && est <= check.target,
        "estimate {est:e}, error {err:e}"
    );
    // The refined run is the run at rtol 1e-11, bit for bit.
    assert_eq!(ch.run.summary, run_at(&c, 65, 1e-11).summary);
}

/// On the paper's setting (`m = 2`, `d = 1e4`, `P = 8`, `P0 = 2`, `alpha = [2, 1]`, `s = 1`,
/// `lr_head / lr = 0.2`), seeds 0..6: no refinement, and each estimate bounds the event
/// time's error against the rtol-1e-12 run from above, and is within a factor 10 of the
/// larger of that error and rtol (the estimate is about the error of the companion at
/// `10 rtol`, 10 times the reported run's when tolerance proportionality holds, plus rtol).
/// Measured: estimate / max(error, rtol) from 1.1 to 5.1, errors 1.6e-11 to 6.9e-10.
#[test]
fn estimate_bounds_the_error_on_the_paper_setting() {
    let c = paper_setting(10000);
    let check = Check::default();
    for seed in 0..6 {
        let ch = checked(1e-9, &check, &mut |rtol, head, _| {
            Ok(run_scaled(&c, seed, rtol, head))
        })
        .unwrap();
        assert_eq!(ch.refinements, 0, "seed {seed}");
        assert!(ch.met(check.target));
        let cmp = ch.comparison.unwrap();
        let reference = run_at(&c, seed, 1e-12).summary;
        let s = &ch.run.summary;
        assert_eq!(s.outcome, Outcome::BothFeatures);
        for (name, t, r, est) in [
            ("t1", s.t1, reference.t1, cmp.errors.t1),
            ("t2", s.t2, reference.t2, cmp.errors.t2),
            ("t3", s.t3, reference.t3, cmp.errors.t3),
            ("t_end", s.t_end, reference.t_end, cmp.errors.t_end),
        ] {
            assert_eq!(t.is_some(), r.is_some(), "seed {seed} {name}");
            let (Some(t), Some(r)) = (t, r) else { continue };
            let est = est.unwrap();
            let err = relative(t, r);
            assert!(
                err <= est && est <= 10.0 * err.max(1e-9),
                "seed {seed} {name}: estimate {est:e}, error {err:e}"
            );
        }
    }
}

/// `compare` names the keys on which two runs disagree outright, and any of them fails
/// the target; a disagreement makes `checked` refine.
#[test]
fn disagreements_fail_the_target_and_refine() {
    let c = paper_setting(100);
    let base = run_at(&c, 0, 1e-9).summary;
    assert!(base.t2.is_some() && base.t_end.is_some());
    let same = compare(&base, &base, 1e-9);
    assert!(same.differs.is_empty() && same.met(1e-9) && !same.met(0.9e-9));
    assert_eq!(same.errors.max(), 1e-9);

    let mut other = base.clone();
    other.t2 = None;
    other.strong_neuron = other.strong_neuron.map(|s| 1 - s);
    other.outcome = Outcome::Collapse;
    other.t1 = base.t1.map(|t| t * (1.0 + 1e-3));
    let cmp = compare(&base, &other, 0.0);
    assert_eq!(cmp.differs, ["t2", "strong_neuron", "outcome"]);
    assert_eq!(cmp.errors.t2, None);
    assert!((cmp.errors.t1.unwrap() - 1e-3 / (1.0 + 1e-3)).abs() < 1e-12);
    assert!(!cmp.met(1.0));

    // A companion that loses t2 makes the run refine, and the refinement (which agrees
    // with the run at 1e-9) is reported.
    let mut calls = 0;
    let ch = checked(1e-9, &Check::default(), &mut |rtol, head, role| {
        calls += 1;
        let mut run = run_scaled(&c, 0, rtol, head);
        if role == Role::Companion {
            run.summary.t2 = None;
        }
        Ok(run)
    })
    .unwrap();
    assert_eq!((calls, ch.refinements, ch.rtol), (3, 1, 1e-10));
    assert!(ch.met(1e-6));
}

/// A failing companion or refinement is reported, not fatal (a failing companion is
/// replaced by a refinement); a failing run at the asked tolerance is returned as the
/// error.
#[test]
fn failures_of_the_check_are_reported_not_fatal() {
    let c = paper_setting(100);
    let fail = || Error::numerical("test", "injected");
    // A failed companion: the run is refined once, and the refinement compared with it.
    let ch = checked(
        1e-9,
        &Check::default(),
        &mut |rtol, head, role| match role {
            Role::Companion => Err(fail()),
            Role::Reported => Ok(run_scaled(&c, 1, rtol, head)),
        },
    )
    .unwrap();
    assert_eq!(
        (ch.refinements, ch.rtol, ch.compared_rtol),
        (1, 1e-10, Some(1e-9))
    );
    assert!(ch.met(1e-6));
    assert!(ch.check_error.unwrap().contains("injected"));
    // No run but the one at 1e-9 succeeds: no estimate, not met.
    let ch = checked(1e-9, &Check::default(), &mut |rtol, head, _| {
        if rtol == 1e-9 {
            Ok(run_scaled(&c, 1, rtol, head))
        } else {
            Err(fail())
        }
    })
    .unwrap();
    assert!(ch.comparison.is_none() && !ch.met(1.0));
    assert_eq!((ch.refinements, ch.rtol), (0, 1e-9));
    assert!(ch.check_error.is_some());

    // A target no run meets: the refinement at 1e-10 fails, the run at 1e-9 stays.
    let strict = Check {
        target: 1e-300,
        ..Check::default()
    };
    let ch = checked(1e-9, &strict, &mut |rtol, head, _| {
        if rtol < 1e-9 {
            Err(fail())
        } else {
            Ok(run_scaled(&c, 1, rtol, head))
        }
    })
    .unwrap();
    assert_eq!(
        (ch.refinements, ch.rtol, ch.compared_rtol),
        (0, 1e-9, Some(1e-8))
    );
    assert!(ch.check_error.is_some() && !ch.met(strict.target));

    // The same target without failures stops after `max_refinements`, unmet.
    let ch = checked(1e-9, &strict, &mut |rtol, head, _| {
        Ok(run_scaled(&c, 1, rtol, head))
    })
    .unwrap();
    assert_eq!((ch.refinements, ch.rtol), (2, 1e-11));
    assert!(!ch.met(strict.target) && ch.check_error.is_none());

    let err = checked(1e-9, &Check::default(), &mut |rtol, head, _| {
        if rtol == 1e-9 {
            Err(fail())
        } else {
            Ok(run_scaled(&c, 1, rtol, head))
        }
    });
    assert!(err.is_err());
}

/// (G2) and (G3) on two held-out configurations whose `t1 = t3` (both features learned at
/// one instant) and whose `t2` condition, at `t1`, compares a head entry `E_ks ~ 1e-13`
/// (below the head's absolute tolerance `1e-12` at rtol 1e-9) with a shrunken neuron's own
/// size.
/// - Seed-104 sweep, case 186 (`d = 2.8e8`, seed 606): `t2` is there at rtol 1e-9 and 1e-10
///   and not at 1e-8, 1e-11 or 1e-12. Without (G2) the companion's missing `t2` makes the
///   run refine once, to 1e-10, which agrees with 1e-9 and would be reported with the wrong
///   `t2`. With (G2) alone both are unresolved, the run goes on to 1e-11 and reports
///   `t2 = null` but not the target met (1e-10 and 1e-11 disagree on `t2`). With (G3) the
///   entry (5.2e-13, 0.052 of `10 atol_head`) tightens the head tolerance of the
///   refinements 19-fold beyond their `rtol`: both refinements resolve it, neither has a
///   `t2`, and the run at 1e-11 is reported with the target met.
/// - Seed-100 sweep, case 38 (`d = 2.3e9`, seed 537): `E_ks = 2.26e-13` at `t2`. With
///   (G2) alone it is resolved only at rtol 1e-11 (atol_head 1e-14, two refinements); with
///   (G3) the first refinement (rtol 1e-10, atol_head 2.3e-15) resolves it, has `t2 = t1`
///   as the run at 1e-9 and the one at rtol 1e-12 do, and meets the target.
#[test]
fn events_below_the_head_tolerance_are_refined_until_resolved() {
    let setting = |dim: u64, p: usize, p0: usize, alpha: [f64; 2], s: f64| {
        format!(
            "dim = {dim}\npatches = {p}\nfeature_patches = {p0}\n\
             alpha = [{}, {}]\nnoise_std = {s}\nneurons = 2",
            alpha[0], alpha[1]
        )
    };
    let check = Check::default();

    let c = config(
        &setting(
            284932610,
            10,
            3,
            [0.9523868143728125, 0.6349245429152083],
            0.973360008201608,
        ),
        5e-5,
        None,
    );
    let single = run_at(&c, 606, 1e-9);
    assert!(single.summary.t2.is_some());
    assert!(single.t2_head_entry.unwrap() < 1e-12);
    assert_eq!(*single.unresolved, [Event::T2]);
    let reference = run_at(&c, 606, 1e-12);
    assert_eq!(reference.summary.t2, None);
    let ch = checked(1e-9, &check, &mut |rtol, head, _| {
        Ok(run_scaled(&c, 606, rtol, head))
    })
    .unwrap();
    assert_eq!((ch.refinements, ch.rtol), (2, 1e-11));
    let shortfall = single.t2_head_entry.unwrap() / (10.0 * single.atol_head);
    assert_eq!(ch.head_scale, shortfall);
    assert!(shortfall < 0.06);
    assert_eq!(ch.run.summary.t2, None);
    assert!(ch.run.unresolved.is_empty() && ch.met(check.target));
    assert!(ch.comparison.as_ref().unwrap().differs.is_empty());
    // The reported run is the run at the refined tolerances, bit for bit.
    assert_eq!(
        ch.run.summary,
        run_scaled(&c, 606, 1e-11, ch.head_scale).summary
    );
    for (x, r) in [
        (ch.run.summary.t1, reference.summary.t1),
        (ch.run.summary.t3, reference.summary.t3),
        (ch.run.summary.t_end, reference.summary.t_end),
    ] {
        assert!(relative(x.unwrap(), r.unwrap()) <= 1e-9);
    }

    let c = config(
        &setting(
            2277338035,
            16,
            8,
            [1.0717627043647924, 0.7145084695765282],
            1.743254767435578,
        ),
        1e-3,
        None,
    );
    let ch = checked(1e-9, &check, &mut |rtol, head, _| {
        Ok(run_scaled(&c, 537, rtol, head))
    })
    .unwrap();
    assert_eq!((ch.refinements, ch.rtol), (1, 1e-10));
    assert!(ch.head_scale < 0.03);
    assert!(ch.run.unresolved.is_empty() && ch.met(check.target));
    let reference = run_at(&c, 537, 1e-12).summary;
    let s = &ch.run.summary;
    assert_eq!(s.t2, s.t1);
    assert_eq!(reference.t2, reference.t1);
    assert!(relative(s.t2.unwrap(), reference.t2.unwrap()) <= 1e-9);
}
