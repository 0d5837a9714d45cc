//! Dense output: the solution inside an accepted step, for event location and recording.
//!
//! A [`Dense`] holds the continuous extension of one step in buffers that are reused from
//! step to step: the steppers write their coefficients into it in place, so an accepted
//! step allocates nothing (`f64`). Times are local offsets `t` in `[0, h]` from the step's
//! start.

use crate::scalar::Scalar;

/// Which continuous extension a [`Dense`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Dormand-Prince's fourth-order continuous extension (Hairer, Norsett and Wanner,
    /// Vol. I, II.6; `rcont` as in `dopri5`):
    /// `y(theta h) = y0 + theta (r1 + (1-theta) (r2 + theta (r3 + (1-theta) r4)))`,
    /// coefficients `r1..r4`.
    Dopri,
    /// The cubic Hermite interpolant through `(y0, f0)` and `(y1, f1)` (third order),
    /// coefficients `y1, f0, f1`.
    Hermite,
    /// DOP853's seventh-order continuous extension ([`crate::ode::dop853`]):
    /// `y(x h) = y0 + x (c0 + (1-x) (c1 + x (c2 + (1-x) (c3 + x (c4 + (1-x) (c5 + x
    /// c6))))))`, coefficients `c0..c6`.
    Dop853,
    /// Rodas5's fourth-order continuous extension:
    /// `y(theta h) = (1-theta) y0 + theta (y1 + (1-theta) (h1 + theta (h2 + theta h3)))`,
    /// coefficients `y1, h1, h2, h3`.
    Rodas,
}

/// The continuous extension of one accepted step from local time `0` to `h`.
#[derive(Clone, Debug)]
pub struct Dense<S: Scalar> {
    kind: Kind,
    h: f64,
    y0: Vec<S>,
    c: [Vec<S>; 7],
}

impl<S: Scalar> Dense<S> {
    /// Buffers for states of length `n` at context `ctx` (an empty Hermite extension).
    pub fn new(n: usize, ctx: S::Ctx) -> Self {
        let z = || vec![S::zero(ctx); n];
        Dense {
            kind: Kind::Hermite,
            h: 0.0,
            y0: z(),
            c: std::array::from_fn(|_| z()),
        }
    }

    /// The kind of extension held.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The step's start and end in local time: `(0, h)`.
    pub fn span(&self) -> (f64, f64) {
        (0.0, self.h)
    }

    /// Starts a new extension of `kind` for a step of size `h` from `y0`; returns the
    /// coefficient buffers for the stepper to fill (the first 3, 4 or 7, by kind).
    pub fn begin(&mut self, kind: Kind, h: f64, y0: &[S]) -> &mut [Vec<S>; 7] {
        self.kind = kind;
        self.h = h;
        self.y0.clone_from_slice(y0);
        &mut self.c
    }

    /// This extension with every coefficient rounded to `f64` (the start `y0` too), into
    /// `out`'s buffers.
    pub fn round_into(&self, out: &mut Dense<f64>) {
        out.kind = self.kind;
        out.h = self.h;
        for (o, v) in out.y0.iter_mut().zip(&self.y0) {
            *o = v.to_f64();
        }
        for (oc, c) in out.c.iter_mut().zip(&self.c) {
            for (o, v) in oc.iter_mut().zip(c) {
                *o = v.to_f64();
            }
        }
    }

    /// The cubic Hermite extension of the step `(y0, f0) -> (y1, f1)` of size `h`.
    pub fn set_hermite(&mut self, h: f64, y0: &[S], y1: &[S], f0: &[S], f1: &[S]) {
        let c = self.begin(Kind::Hermite, h, y0);
        c[0].clone_from_slice(y1);
        c[1].clone_from_slice(f0);
        c[2].clone_from_slice(f1);
    }

    /// Repairs a cubic Hermite extension whose slopes carry relaxed fast modes: the scaled
    /// defect of component `i` at the step's midpoint is
    /// `d_i = h |f(y_m)_i - y'_m,i| / (|y1_i - y0_i| + h |f0_i| + h |f1_i| + sc_i)`, where
    /// `y_m` is the extension at `h/2` (`ym`), `y'_m = 3 (y1 - y0) / (2h) - (f0 + f1) / 4`
    /// its derivative there, `fm = f(y_m)`, and `sc_i = atol_i + rtol max(|y0_i|, |y1_i|)`
    /// under `tol`. Each component with `d_i > max_defect` (or a value that is not finite)
    /// gets the chord's slopes `f0_i = f1_i = (y1_i - y0_i) / h`, so that it follows the
    /// chord. Returns the number of such components. `derivations/numerics.md`, eq. (H1).
    ///
    /// A step with such a component has slopes that carry fast modes, and through the
    /// coupling they reach the other components' slopes too, where (H1) need not see them:
    /// a slow component whose own rate is tiny at the midpoint has a tiny defect there, while
    /// its end slopes, of opposite signs, make the cubic bulge. So in such a step, each other
    /// component whose cubic leaves the chord by more than `|y1_i - y0_i| + sc_i` at
    /// `theta = 1/4, 1/2, 3/4`, eq. (H2), follows the chord as well (and is counted).
    pub fn repair_hermite(
        &mut self,
        ym: &[S],
        fm: &[S],
        tol: crate::ode::control::Tolerance,
        max_defect: f64,
    ) -> usize {
        debug_assert_eq!(self.kind, Kind::Hermite);
        let h = self.h;
        let mut repaired = 0;
        for (i, (yi, fi)) in ym.iter().zip(fm).enumerate() {
            let (a, b) = (self.y0[i].to_f64(), self.c[0][i].to_f64());
            let (f0, f1) = (self.c[1][i].to_f64(), self.c[2][i].to_f64());
            let slope = 1.5 * (b - a) / h - 0.25 * (f0 + f1);
            let scale = (b - a).abs()
                + h.abs() * (f0.abs() + f1.abs())
                + tol.scale_at(i, a.abs().max(b.abs()));
            let d = h.abs() * (fi.to_f64() - slope).abs() / scale;
            if !(d <= max_defect && yi.to_f64().is_finite()) {
                self.hermite_to_chord(i);
                repaired += 1;
            }
        }
        if repaired == 0 {
            return 0;
        }
        for i in 0..self.y0.len() {
            let (a, b) = (self.y0[i].to_f64(), self.c[0][i].to_f64());
            let (f0, f1) = (self.c[1][i].to_f64(), self.c[2][i].to_f64());
            let s = (b - a) / h;
            if f0 == s && f1 == s {
                // On the chord already.
                continue;
            }
            // (H2): u(theta) - chord(theta)
            //     = h theta (1-theta) ((1-theta)(f0 - s) - theta (f1 - s)).
            let bulge = [0.25, 0.5, 0.75]
                .iter()
                .map(|&t: &f64| (h * t * (1.0 - t) * ((1.0 - t) * (f0 - s) - t * (f1 - s))).abs())
                .fold(0.0, f64::max);
            let allowed = (b - a).abs() + tol.scale_at(i, a.abs().max(b.abs()));
            if bulge > allowed || bulge.is_nan() || allowed.is_nan() {
                self.hermite_to_chord(i);
                repaired += 1;
            }
        }
        repaired
    }

    /// Gives component `i` of a cubic Hermite extension the chord's slopes at both ends.
    fn hermite_to_chord(&mut self, i: usize) {
        let ctx = self.y0[0].ctx();
        let chord = (self.c[0][i].clone() - self.y0[i].clone()) / S::from_f64(self.h, ctx);
        self.c[1][i] = chord.clone();
        self.c[2][i] = chord;
    }

    /// The interpolated state at local time `t` (in the step).
    pub fn eval(&self, t: f64) -> Vec<S> {
        let mut out = self.y0.clone();
        self.eval_into(t, &mut out);
        out
    }

    /// [`Dense::eval`] into `out` (of the state's length; no allocation in `f64`).
    pub fn eval_into(&self, t: f64, out: &mut [S]) {
        let (y0, c, h) = (&self.y0, &self.c, self.h);
        let ctx = y0[0].ctx();
        match self.kind {
            Kind::Dopri => {
                let th = S::from_f64(t / h, ctx);
                let th1 = S::one(ctx) - th.clone();
                for (i, o) in out.iter_mut().enumerate() {
                    let inner = c[2][i].clone() + th1.clone() * c[3][i].clone();
                    let inner = c[1][i].clone() + th.clone() * inner;
                    let inner = c[0][i].clone() + th1.clone() * inner;
                    *o = y0[i].clone() + th.clone() * inner;
                }
            }
            Kind::Hermite => {
                let s = t / h;
                let hs = S::from_f64(h, ctx);
                // Hermite basis: h00 = (1 + 2s)(1-s)^2, h10 = s (1-s)^2, h01 = s^2 (3 - 2s),
                // h11 = s^2 (s - 1).
                let h00 = S::from_f64((1.0 + 2.0 * s) * (1.0 - s) * (1.0 - s), ctx);
                let h10 = S::from_f64(s * (1.0 - s) * (1.0 - s), ctx) * hs.clone();
                let h01 = S::from_f64(s * s * (3.0 - 2.0 * s), ctx);
                let h11 = S::from_f64(s * s * (s - 1.0), ctx) * hs;
                for (i, o) in out.iter_mut().enumerate() {
                    *o = h00.clone() * y0[i].clone()
                        + h10.clone() * c[1][i].clone()
                        + h01.clone() * c[0][i].clone()
                        + h11.clone() * c[2][i].clone();
                }
            }
            Kind::Rodas => {
                let th = S::from_f64(t / h, ctx);
                let th1 = S::one(ctx) - th.clone();
                for (i, o) in out.iter_mut().enumerate() {
                    let inner = c[2][i].clone() + th.clone() * c[3][i].clone();
                    let inner = c[1][i].clone() + th.clone() * inner;
                    let inner = c[0][i].clone() + th1.clone() * inner;
                    *o = th1.clone() * y0[i].clone() + th.clone() * inner;
                }
            }
            Kind::Dop853 => {
                let x = S::from_f64(t / h, ctx);
                let x1 = S::one(ctx) - x.clone();
                for (i, o) in out.iter_mut().enumerate() {
                    let mut acc = c[6][i].clone();
                    for r in (0..6).rev() {
                        let w = if r % 2 == 0 { x1.clone() } else { x.clone() };
                        acc = c[r][i].clone() + w * acc;
                    }
                    *o = y0[i].clone() + x.clone() * acc;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ode::control::Tolerance;

    /// A step of size 10 in three components: 0 relaxes a fast mode (its end slopes are
    /// `1e3` and `-3e3` while it does not move, and `f` at the cubic's midpoint is far from
    /// the cubic's slope there), 1 is slow and does not move but has end slopes `1e-9`,
    /// `-3e-9` from its coupling to 0 (tiny defect, but the cubic bulges by `1e-8`), 2 moves
    /// along its slope.
    fn fast_mode_step() -> (Dense<f64>, Vec<f64>, Vec<f64>) {
        let h = 10.0;
        let mut d = Dense::new(3, ());
        d.set_hermite(
            h,
            &[1.0, 2.0, 0.0],
            &[1.0, 2.0, 10.0],
            &[1e3, 1e-9, 1.0],
            &[-3e3, -3e-9, 1.0],
        );
        let ym = d.eval(0.5 * h);
        // f at the midpoint: relaxing fast mode for 0, slow rates for 1 and 2.
        let fm = vec![-1e3 * (ym[0] - 1.0), 0.0, 1.0];
        (d, ym, fm)
    }

    /// (H1) puts the fast component on the chord; (H2) then the slow one whose cubic
    /// bulges by more than its tolerance scale; the moving component keeps its cubic.
    #[test]
    fn a_fast_mode_step_puts_the_bulging_slow_components_on_the_chord() {
        let (mut d, ym, fm) = fast_mode_step();
        let before = d.eval(2.5)[1];
        assert!(
            (before - 2.0).abs() > 1e-9,
            "the slow component bulges: {before}"
        );
        let tol = Tolerance::uniform(1e-12, 1e-12);
        assert_eq!(d.repair_hermite(&ym, &fm, tol, 1.0), 2);
        for t in [1.0, 2.5, 5.0, 7.5, 9.0] {
            let y = d.eval(t);
            assert_eq!(y[0], 1.0);
            assert_eq!(y[1], 2.0);
            assert!((y[2] - t).abs() < 1e-12);
        }
    }

    /// Without a fast component, (H2) is not applied: a genuine turning point (end
    /// slopes of opposite signs, no defect) keeps its cubic.
    #[test]
    fn a_step_without_fast_modes_keeps_its_turning_points() {
        let h = 2.0;
        let mut d = Dense::new(1, ());
        // y = 1 + t (2 - t): slopes 2 and -2, y(1) = 2, y'(1) = 0.
        d.set_hermite(h, &[1.0], &[1.0], &[2.0], &[-2.0]);
        let ym = d.eval(1.0);
        assert_eq!(ym[0], 2.0);
        let tol = Tolerance::uniform(1e-12, 1e-12);
        assert_eq!(d.repair_hermite(&ym, &[0.0], tol, 1.0), 0);
        assert_eq!(d.eval(1.0)[0], 2.0);
    }
}
