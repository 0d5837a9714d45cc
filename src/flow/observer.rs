//! The observer of a flow: the events it watches and the summary it builds, passed into the
//! driver ([`crate::flow::integrate::integrate_observed`]) through one trait, which
//! [`EventTracker`] implements.

use crate::error::Result;
use crate::moments::population::Reduced;
use crate::observe::{Event, EventTracker, Events, Summary, Termination};

/// What the driver asks of its observer: the events pending on the next interval and their
/// margins (for event location on the dense output), the samples (states at events and at
/// the ends of accepted steps, and states inside a step that only update running maxima),
/// and the summary at the end.
pub trait FlowObserver {
    /// Feeds the sample `(tau, x)` (in increasing `tau`); returns the events that fired.
    fn observe(&mut self, tau: f64, x: &Reduced<f64>) -> Vec<Event>;
    /// Feeds a state that only updates running maxima (no event decided on it).
    fn touch(&mut self, x: &Reduced<f64>);
    /// The events to watch on the next interval.
    fn pending(&self) -> Events;
    /// The margin of `event` at `x` (the event happens where it turns `>= 0`).
    fn margin(&self, event: Event, x: &Reduced<f64>) -> f64;
    /// The time of `event`, once it happened.
    fn time(&self, event: Event) -> Option<f64>;
    /// `|E_ks|` at `t2` ([`EventTracker::substitution_entry`]).
    fn substitution_entry(&self) -> Option<f64>;
    /// The summary of the run that ended as `end` says ([`EventTracker::finish`]).
    ///
    /// # Errors
    ///
    /// As [`EventTracker::finish`].
    fn finish(&self, end: Ending<'_>) -> Result<Summary>;
}

/// How a flow ended, for [`FlowObserver::finish`]: the final sample `(tau, x)`, why it
/// stopped, the accepted steps, and the evaluations and rejected steps.
#[derive(Clone, Copy, Debug)]
pub struct Ending<'a> {
    /// The final time.
    pub tau: f64,
    /// The final state.
    pub x: &'a Reduced<f64>,
    /// Why the run stopped.
    pub termination: Termination,
    /// Accepted steps.
    pub steps: u64,
    /// Right-hand-side evaluations.
    pub rhs_evals: u64,
    /// Rejected steps.
    pub rejected_steps: u64,
}

impl FlowObserver for EventTracker {
    fn observe(&mut self, tau: f64, x: &Reduced<f64>) -> Vec<Event> {
        EventTracker::observe(self, tau, x)
    }

    fn touch(&mut self, x: &Reduced<f64>) {
        EventTracker::touch(self, x)
    }

    fn pending(&self) -> Events {
        EventTracker::pending(self)
    }

    fn margin(&self, event: Event, x: &Reduced<f64>) -> f64 {
        EventTracker::margin(self, event, x)
    }

    fn time(&self, event: Event) -> Option<f64> {
        EventTracker::time(self, event)
    }

    fn substitution_entry(&self) -> Option<f64> {
        EventTracker::substitution_entry(self)
    }

    fn finish(&self, e: Ending<'_>) -> Result<Summary> {
        let counts = (Some(e.rhs_evals), Some(e.rejected_steps));
        EventTracker::finish(self, e.tau, e.x, e.termination, e.steps, counts.0, counts.1)
    }
}
