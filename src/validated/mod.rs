//! The validated flow (`predhead flow --certify`): an enclosure of the exact gradient flow's
//! trajectory, of its event times and of its outcome (`derivations/interval.md`,
//! (V11)-(V22)).
//!
//! - [`fi`]: `f64` intervals with outward rounding (the inner loop's scalar);
//! - [`taylor`]: Taylor-mode automatic differentiation over any `Copy` scalar (the guide's
//!   Taylor polynomial in `f64`, the defect's remainder and the Jacobian over a box in
//!   [`Fi`]);
//! - [`tube`]: the steps: the guide polynomial, its defect, the logarithmic norm over the
//!   a priori box and the Gronwall bound;
//! - [`events`]: the event times bracketed on the tube and the outcome decided on the final
//!   enclosure.

pub mod events;
pub mod fi;
pub mod taylor;
pub mod tube;

pub use fi::Fi;
pub use taylor::Tay;

use crate::error::Result;
use crate::moments::population::Reduced;
use crate::observe::Outcome;
use crate::setting::Config;
use events::{Bracket, Certifier};
use tube::{pack_box, TubeOptions, Validated};

/// The result of a validated flow (`derivations/interval.md`, (V17)).
#[derive(Clone, Debug)]
pub struct CertifiedFlow {
    /// The certified brackets of `t1, t2, t3, t_end` (`None`: not certified).
    pub events: [Option<Bracket>; 4],
    /// The strong neuron, certified at `t1`.
    pub strong: Option<usize>,
    /// The outcome (E5), certified on the tube over the bracket of `t_end`.
    pub outcome: Option<Outcome>,
    /// Why the certificate is incomplete (`None`: everything certified).
    pub reason: Option<String>,
    /// The end of the last certified step: the exact solution is enclosed up to here.
    pub last_certified_tau: f64,
    /// Certified steps.
    pub steps: usize,
    /// The largest error bound of the tube, in the weighted norm.
    pub max_eps: f64,
}

impl CertifiedFlow {
    /// Whether the four events and the outcome are certified.
    pub fn certified(&self) -> bool {
        self.reason.is_none()
    }
}

/// The validated flow of `config` from the initial box `x0` (reduced coordinates; a point
/// box for an `f64` state), up to the certified `t_end` or `horizon`.
///
/// # Examples
/// ```
/// use predhead::config::parse_config;
/// use predhead::validated::{certify_flow, Fi};
/// use predhead::validated::tube::TubeOptions;
/// # let mut config = parse_config("[setting]\ndim = 100\npatches = 8\nfeature_patches = 2\n\
/// #   alpha = [2.0, 1.0]\nnoise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
/// #   normalization = \"batchnorm\"\nstop_gradient = true\n[training]\nlr = 1e-3\nlr_head = 2e-4\n").unwrap();
/// let x0 = predhead::init::reduced(&config.setting, 0).unwrap();
/// // An early t1 (1.05 times the initial max |a_j|), so that the example runs in a moment
/// // (the default t1 = 0.5 takes ~40 s of tube at d = 100; derivations/interval.md, "Status").
/// config.phases.t1 = 1.05 * x0.a.iter().fold(0.0f64, |m, a| m.max(a.abs()));
/// let x0 = predhead::flow::problem::lift::<Fi>(&x0, ());
/// let c = certify_flow(&config, &x0, 3000.0, TubeOptions::default()).unwrap();
/// let t1 = c.events[0].unwrap();
/// assert!(t1.lo <= t1.hi && t1.rel_width() < 1e-6);
/// assert!(!c.certified()); // t2, t3, t_end are not reached by tau = 3000
/// ```
///
/// # Errors
///
/// [`crate::Error::Numerical`] when the initial box cannot be put in decay coordinates.
pub fn certify_flow(
    config: &Config,
    x0: &Reduced<Fi>,
    horizon: f64,
    options: TubeOptions,
) -> Result<CertifiedFlow> {
    let v = Validated::new(config, x0, options);
    let y0 = pack_box(&v.boxes, x0)?;
    let mut cert = Certifier::new(config);
    let run = v.run(&y0, horizon, |steps| cert.observe(&v, steps));
    let last = run.steps.last().map_or(0.0, |s| s.t1);
    let reason = if let Some(f) = cert.failure.clone().or(run.failure.clone()) {
        Some(f)
    } else if cert.bracket(3).is_none() {
        let pending = (0..4).find(|&i| cert.bracket(i).is_none()).unwrap_or(3);
        Some(format!(
            "{} not reached by the tube (horizon tau = {horizon:e})",
            events::EVENTS[pending]
        ))
    } else if cert.outcome.is_none() {
        Some("the outcome is not decided on the tube over the bracket of t_end".into())
    } else {
        None
    };
    Ok(CertifiedFlow {
        events: std::array::from_fn(|i| cert.bracket(i)),
        strong: cert.strong,
        outcome: cert.outcome,
        reason,
        last_certified_tau: last,
        steps: run.steps.len(),
        max_eps: run.steps.iter().map(|s| s.eps_tube).fold(0.0, f64::max),
    })
}

/// The initial box of an exact state (`derivations/interval.md`, eq. (V11)): `a_j = w_j0`,
/// `b_j = w_j1`, `G_jk = sum_{i>=2} w_ji w_ki` (eq. (P11)) and `E` in `Fi` from the exact
/// rationals of `input` (each enclosed once, then outward-rounded arithmetic).
pub fn exact_initial_box(input: &crate::certify::ExactInput) -> Reduced<Fi> {
    use crate::scalar::Scalar;
    let w: Vec<Vec<Fi>> = input
        .w
        .iter()
        .map(|r| r.iter().map(|q| Fi::from_rational(q, ())).collect())
        .collect();
    let m = w.len();
    let gram = crate::square::Square::from_fn(m, |j, k| {
        w[j][2..]
            .iter()
            .zip(&w[k][2..])
            .fold(Fi::point(0.0), |acc, (x, y)| acc + *x * *y)
    });
    Reduced {
        a: w.iter().map(|r| r[0]).collect(),
        b: w.iter().map(|r| r[1]).collect(),
        gram,
        e: crate::square::Square::from_fn(m, |j, r| Fi::from_rational(&input.e[j][r], ())),
    }
}

/// The `certify` object of `predhead flow --certify --json` (`docs/cli.md`, "flow
/// --certify").
#[derive(serde::Serialize, Debug)]
pub struct CertifyReport {
    /// Whether the four events and the outcome are all certified.
    pub certified: bool,
    /// Why not (`null` when certified).
    pub reason: Option<String>,
    /// The exact solution is enclosed on `[0, last_certified_tau]`.
    pub last_certified_tau: f64,
    /// `[lo, hi]` of `t1` (`null`: not certified); likewise below.
    pub t1: Option<[f64; 2]>,
    /// `(hi - lo) / hi`.
    pub t1_rel_width: Option<f64>,
    /// `t2`.
    pub t2: Option<[f64; 2]>,
    /// Its relative width.
    pub t2_rel_width: Option<f64>,
    /// `t3`.
    pub t3: Option<[f64; 2]>,
    /// Its relative width.
    pub t3_rel_width: Option<f64>,
    /// `t_end`.
    pub t_end: Option<[f64; 2]>,
    /// Its relative width.
    pub t_end_rel_width: Option<f64>,
    /// The certified strong neuron.
    pub strong_neuron: Option<usize>,
    /// The outcome (E5), certified on the tube over the bracket of `t_end`.
    pub outcome: Option<&'static str>,
    /// Certified steps.
    pub steps: usize,
    /// The largest error bound of the tube (weighted norm).
    pub max_eps: f64,
}

impl CertifyReport {
    /// The report of `c`.
    pub fn new(c: &CertifiedFlow) -> Self {
        let b = |i: usize| c.events[i].map(|b| [b.lo, b.hi]);
        let w = |i: usize| c.events[i].map(|b| b.rel_width());
        CertifyReport {
            certified: c.certified(),
            reason: c.reason.clone(),
            last_certified_tau: c.last_certified_tau,
            t1: b(0),
            t1_rel_width: w(0),
            t2: b(1),
            t2_rel_width: w(1),
            t3: b(2),
            t3_rel_width: w(2),
            t_end: b(3),
            t_end_rel_width: w(3),
            strong_neuron: c.strong,
            outcome: c.outcome.map(Outcome::name),
            steps: c.steps,
            max_eps: c.max_eps,
        }
    }
}
