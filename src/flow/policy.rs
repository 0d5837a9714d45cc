//! The driver's three policies, each a small state machine tested on its own
//! (`derivations/numerics.md`, "Integrators", "Stiffness", "Extended-precision steps"):
//!
//! - [`StiffnessSwitch`]: when [`crate::flow::Method::Auto`] turns from the explicit pair to
//!   the Rosenbrock method and back;
//! - [`FallbackWindow`]: the window of Rosenbrock attempts whose failures make Rodas5 give
//!   way to Shampine's method (or arm the extended-precision probe);
//! - [`ExtendedProbe`]: the probe of extended-precision steps, its budget and its re-arming
//!   after a stall (eq. (X1)).
//!
//! They hold counters and make decisions; the driver ([`crate::flow::integrate()`]) does
//! the work they decide on.

/// The stiffness switch of [`crate::flow::Method::Auto`] (`derivations/numerics.md`,
/// "Stiffness"): the explicit pair is stability-limited when `h rho` exceeds about 3 (its
/// stability interval on the negative real axis is `[-3.3, 0]`, `rho` the spectral radius
/// of the Jacobian), checked every [`StiffnessSwitch::CHECK_EVERY`] accepted explicit steps
/// and after a rejection. Back to the explicit pair after
/// [`StiffnessSwitch::CALM_CHECKS`] checks in a row (every
/// [`StiffnessSwitch::CALM_EVERY`]-th Rosenbrock step) with `h rho < 1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StiffnessSwitch {
    since_check: u32,
    calm: u32,
}

impl StiffnessSwitch {
    /// Accepted explicit steps between two checks.
    pub const CHECK_EVERY: u32 = 25;
    /// `h rho` above which the flow is stiff for the explicit pair.
    pub const STIFF_ABOVE: f64 = 3.0;
    /// `h rho` below which a check in the stiff phase is calm.
    pub const CALM_BELOW: f64 = 1.0;
    /// Calm checks in a row that end the stiff phase.
    pub const CALM_CHECKS: u32 = 4;
    /// A check in the stiff phase on every `CALM_EVERY`-th accepted Rosenbrock step.
    pub const CALM_EVERY: u64 = 5;

    /// After an accepted explicit step (`after_reject`: the step followed a rejection):
    /// whether to check for stiffness now.
    pub fn check_due(&mut self, after_reject: bool) -> bool {
        self.since_check += 1;
        if self.since_check >= Self::CHECK_EVERY || after_reject {
            self.since_check = 0;
            true
        } else {
            false
        }
    }

    /// Whether `h rho` makes the flow stiff for the explicit pair.
    pub fn turns_stiff(h: f64, rho: f64) -> bool {
        h * rho > Self::STIFF_ABOVE
    }

    /// The flow turned stiff: the calm checks start again.
    pub fn entered_stiff(&mut self) {
        self.calm = 0;
    }

    /// Whether a calm check is due after `rosenbrock_steps` accepted Rosenbrock steps.
    pub fn calm_check_due(rosenbrock_steps: u64) -> bool {
        rosenbrock_steps.is_multiple_of(Self::CALM_EVERY)
    }

    /// A check in the stiff phase with step `h` and spectral radius `rho`: whether the run
    /// goes back to the explicit pair (the [`StiffnessSwitch::CALM_CHECKS`]-th calm check
    /// in a row; a NaN `rho` is not calm).
    pub fn calm_check(&mut self, h: f64, rho: f64) -> bool {
        if h * rho < Self::CALM_BELOW {
            self.calm += 1;
            if self.calm >= Self::CALM_CHECKS {
                self.since_check = 0;
                return true;
            }
        } else {
            self.calm = 0;
        }
        false
    }
}

/// The fallback from Rodas5 to Shampine's method (`derivations/numerics.md`,
/// "Integrators", "Fallback"): when [`FallbackWindow::REJECTS`] of
/// [`FallbackWindow::WINDOW`] consecutive Rosenbrock attempts fail (error norm above 1, or
/// a stage left the domain of the flow), the run goes on with Shampine's method, whose
/// stages stay within `2 h` of `y0` (Rodas5's extrapolate up to `41 h`). Under Shampine's
/// method such a window arms the extended-precision probe instead ([`ExtendedProbe`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FallbackWindow {
    attempts: u32,
    fails: u32,
}

impl FallbackWindow {
    /// Attempts per window.
    pub const WINDOW: u32 = 64;
    /// Failed attempts in a window that trigger the fallback.
    pub const REJECTS: u32 = 12;

    /// Records one Rosenbrock attempt (`accepted`: its error norm is finite and at most 1).
    /// Returns whether it closed a window with at least [`FallbackWindow::REJECTS`] failures;
    /// a closed window starts a new one.
    pub fn record(&mut self, accepted: bool) -> bool {
        self.attempts += 1;
        self.fails += u32::from(!accepted);
        if self.attempts < Self::WINDOW {
            return false;
        }
        let failing = self.fails >= Self::REJECTS;
        *self = FallbackWindow::default();
        failing
    }
}

/// The probe of Rodas5 steps in extended precision, with its budget and re-arming
/// (`derivations/numerics.md`, "Extended-precision steps", eq. (X1)).
///
/// Armed (by a failing [`FallbackWindow`] under Shampine's method), the next failed `f64`
/// attempt is repeated in extended precision; when that proves `f64` rounding the limit
/// the probe turns [`ExtendedProbe::active`] and every Rosenbrock attempt is an extended
/// Rodas5 step, until [`ExtendedProbe::BUDGET`] of them are spent. After a spent budget, a
/// stall of the `f64` steps (`ln tau` advancing less than [`ExtendedProbe::STALL_PROGRESS`]
/// over [`ExtendedProbe::STALL_WINDOW`] attempts) arms the probe again with one more
/// budget; not again once a re-armed stint did not advance the flow either.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExtendedProbe {
    armed: bool,
    active: bool,
    budget: u64,
    attempts: u64,
    /// The window of `f64` attempts that watches for a stall: its first attempt and time.
    stall_window: Option<(u64, f64)>,
    /// The flow time of the last re-arming.
    rearmed_at: Option<f64>,
    may_rearm: bool,
    rearms: u64,
}

impl Default for ExtendedProbe {
    fn default() -> Self {
        ExtendedProbe {
            armed: false,
            active: false,
            budget: Self::BUDGET,
            attempts: 0,
            stall_window: None,
            rearmed_at: None,
            may_rearm: true,
            rearms: 0,
        }
    }
}

impl ExtendedProbe {
    /// Extended attempts per budget. Extended attempts are costly (double-double ~0.3 ms
    /// each at m = 3, 4, MPFR ~3 ms). A larger budget was measured and not kept: 50,000
    /// gave no more accurate event times on a held-out m = 3 case and took 7 s instead of
    /// 0.9 (derivations/numerics.md, "Extended-precision steps").
    pub const BUDGET: u64 = 5_000;
    /// `f64` attempts in the window that watches for a stall (eq. (X1)).
    pub const STALL_WINDOW: u64 = 20_000;
    /// The least advance of `ln tau` over [`ExtendedProbe::STALL_WINDOW`] attempts that is
    /// not a stall (eq. (X1)): at that rate the step limit of 2e6 attempts covers 5 e-folds
    /// of `tau`.
    pub const STALL_PROGRESS: f64 = 0.05;

    /// Whether every Rosenbrock attempt is an extended-precision one.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Whether the next failed `f64` attempt is probed.
    pub fn armed(&self) -> bool {
        self.armed
    }

    /// How often a stall armed the probe again.
    pub fn rearms(&self) -> u64 {
        self.rearms
    }

    /// Arms the probe.
    pub fn arm(&mut self) {
        self.armed = true;
    }

    /// Disarms the probe (probed, or no extended precision available).
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// Before deciding on an attempt, after `attempts` accepted and rejected steps at flow
    /// time `t`: watches for a stall after a spent budget and re-arms on one (eq. (X1)).
    /// Returns whether the budget was spent before this call (a re-arming takes effect
    /// from the next attempt).
    pub fn watch(&mut self, attempts: u64, t: f64) -> bool {
        let spent = self.attempts >= self.budget;
        if spent && !self.active && self.may_rearm {
            if self.stall_window.is_none() {
                if let Some(t_r) = self.rearmed_at.take() {
                    self.may_rearm = !stalled(t_r, t);
                }
            }
            let (from, t_from) = *self.stall_window.get_or_insert((attempts, t));
            if self.may_rearm && attempts - from >= Self::STALL_WINDOW {
                self.stall_window = None;
                if stalled(t_from, t) {
                    self.budget += Self::BUDGET;
                    self.armed = true;
                    self.rearmed_at = Some(t);
                    self.rearms += 1;
                }
            }
        }
        spent
    }

    /// Whether this attempt is taken in extended precision: always when active, else when
    /// armed, the `f64` attempt failed (`accepted` false) and the budget was not `spent`.
    pub fn wants(&self, accepted: bool, spent: bool) -> bool {
        self.active || (self.armed && !accepted && !spent)
    }

    /// The verdict of a probe: the `f64` attempt's result and the extended one's at the
    /// same step. Active when the extended attempt is accepted with an error below a
    /// quarter of the finite `f64` one (or the `f64` stages left the domain).
    pub fn decide<E>(&mut self, f64_attempt: &Result<f64, E>, probed: Result<f64, E>) {
        self.armed = false;
        self.active = match (f64_attempt, probed) {
            (Ok(e64), Ok(e)) if e64.is_finite() => e <= 1.0 && 4.0 * e < *e64,
            (_, Ok(e)) => e <= 1.0,
            (_, Err(_)) => false,
        };
    }

    /// Counts one extended attempt; a spent budget ends the active stint.
    pub fn count_attempt(&mut self) {
        self.attempts += 1;
        if self.attempts >= self.budget {
            self.active = false;
        }
    }
}

/// Whether the flow stalled from `from` to `to` (eq. (X1): `ln(to / from) <
/// STALL_PROGRESS`; never from a `from` that is not positive).
fn stalled(from: f64, to: f64) -> bool {
    from > 0.0 && (to / from).ln() < ExtendedProbe::STALL_PROGRESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check every 25 explicit steps, at once after a rejection.
    #[test]
    fn stiffness_checks_every_25_steps_and_after_a_rejection() {
        let mut s = StiffnessSwitch::default();
        let due: Vec<bool> = (0..50).map(|_| s.check_due(false)).collect();
        assert_eq!(due.iter().filter(|&&d| d).count(), 2);
        assert!(due[24] && due[49]);
        // Negative control: 24 steps are not enough.
        assert!(!due[23]);
        assert!(s.check_due(true));
        assert!(!s.check_due(false));
    }

    /// Stiff above `h rho = 3`, not at 3 nor for a NaN radius.
    #[test]
    fn the_flow_turns_stiff_above_h_rho_3() {
        assert!(StiffnessSwitch::turns_stiff(1.0, 3.0 + 1e-12));
        assert!(StiffnessSwitch::turns_stiff(2.0, 1.6));
        assert!(!StiffnessSwitch::turns_stiff(1.0, 3.0));
        assert!(!StiffnessSwitch::turns_stiff(1.0, f64::NAN));
        assert!(StiffnessSwitch::turns_stiff(1.0, f64::INFINITY));
    }

    /// Back after four calm checks in a row (`h rho < 1`); a stiff check (or a NaN radius)
    /// in between starts the count again.
    #[test]
    fn four_calm_checks_in_a_row_end_the_stiff_phase() {
        let mut s = StiffnessSwitch::default();
        s.entered_stiff();
        for _ in 0..3 {
            assert!(!s.calm_check(1.0, 0.5));
        }
        // Negative control: a check with h rho = 1 is not calm and resets the count.
        assert!(!s.calm_check(1.0, 1.0));
        for _ in 0..3 {
            assert!(!s.calm_check(1.0, 0.5));
        }
        assert!(!s.calm_check(1.0, f64::NAN));
        for _ in 0..3 {
            assert!(!s.calm_check(0.5, 1.9));
        }
        assert!(s.calm_check(0.5, 1.9));
        // Back in the explicit phase the 25-step count starts again.
        assert!((0..24).all(|_| !s.check_due(false)));
        assert!(s.check_due(false));
        assert!(StiffnessSwitch::calm_check_due(10) && !StiffnessSwitch::calm_check_due(11));
    }

    /// 12 failures in a window of 64 trigger the fallback, 11 do not; the verdict comes at
    /// the window's end and a new window starts.
    #[test]
    fn twelve_of_sixty_four_failures_trigger_the_fallback() {
        let window = |fails: u32| {
            let mut w = FallbackWindow::default();
            let verdicts: Vec<bool> = (0..FallbackWindow::WINDOW)
                .map(|i| w.record(i >= fails))
                .collect();
            (verdicts, w)
        };
        let (v, w) = window(12);
        assert_eq!(v.iter().filter(|&&x| x).count(), 1);
        assert!(v[63]);
        assert_eq!(w, FallbackWindow::default());
        // Negative control: 11 failures do not.
        let (v, _) = window(11);
        assert!(v.iter().all(|&x| !x));
        // 12 failures in 63 attempts: no verdict before the window closes.
        let mut w = FallbackWindow::default();
        assert!((0..63).all(|i| !w.record(i >= 12)));
        assert!(w.record(true));
        // Failures of two windows do not add up: 12 in a row across the boundary.
        let mut w = FallbackWindow::default();
        assert!((0..128).all(|i| !w.record(!(58..70).contains(&i))));
    }

    /// The probe: a probe accepted at a quarter of the `f64` error turns it active; the
    /// budget of extended attempts ends the stint; a stall re-arms it with one more budget,
    /// progress does not, and a re-armed stint that stalled too stops the re-arming.
    #[test]
    fn the_probe_spends_its_budget_and_rearms_after_a_stall() {
        let mut p = ExtendedProbe::default();
        let spent = p.watch(0, 1.0);
        assert!(!p.wants(false, spent));
        p.arm();
        assert!(
            !p.wants(true, false),
            "an accepted f64 attempt is not probed"
        );
        assert!(p.wants(false, false));
        // Negative control: an extended error only a third of the f64 one is not enough.
        p.decide::<()>(&Ok(3.0), Ok(1.0));
        assert!(!p.active() && !p.armed());
        p.arm();
        p.decide::<()>(&Ok(4.1), Ok(1.0));
        assert!(p.active());
        p.decide::<()>(&Err(()), Ok(0.9));
        assert!(p.active(), "f64 stages left the domain");
        for _ in 0..ExtendedProbe::BUDGET - 1 {
            p.count_attempt();
        }
        assert!(p.active());
        p.count_attempt();
        assert!(!p.active());
        // Spent: not probed even when armed.
        p.arm();
        assert!(p.watch(10_000, 100.0));
        assert!(!p.wants(false, true));
        p.disarm();
        // Progress over the window (ln(106 / 100) > 0.05): no re-arming.
        assert!(p.watch(30_000, 106.0));
        assert!(!p.armed() && p.rearms() == 0);
        // A stall (ln(106.1 / 106) < 0.05): re-armed, one more budget.
        p.watch(30_001, 106.0);
        assert!(p.watch(50_001, 106.1));
        assert!(p.armed() && p.rearms() == 1);
        assert!(!p.watch(50_002, 106.1), "not spent after the re-arming");
        p.decide::<()>(&Ok(8.0), Ok(0.5));
        for _ in 0..ExtendedProbe::BUDGET {
            p.count_attempt();
        }
        // The re-armed stint did not advance the flow either: no more re-arming.
        p.disarm();
        p.watch(60_000, 106.2);
        p.watch(80_000, 106.2);
        assert!(!p.armed() && p.rearms() == 1);
    }
}
