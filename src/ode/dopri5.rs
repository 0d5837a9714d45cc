//! The Dormand-Prince 5(4) embedded Runge-Kutta pair with its fourth-order dense output
//! (Hairer, Norsett and Wanner, Vol. I, II.5-II.6 and the code `dopri5`;
//! `derivations/numerics.md`, Section "Integrators"), with exact rational coefficients
//! (each rounded once in the working precision), so the same tableau serves `f64` and MPFR.
//! The tableau is data ([`DOPRI5`]); the step and the dense output are the explicit
//! family's ([`super::explicit`]).

use crate::ode::tableau::{Coef::Ratio, DenseForm, ErrorWeights, ExplicitTableau, Row};

/// Dormand-Prince 5(4): order 5, an embedded fourth-order estimate (step control with
/// `q = 4`), fourth-order dense output without further evaluations.
pub const DOPRI5: ExplicitTableau = ExplicitTableau {
    name: "dopri5",
    order: 5,
    estimate_order: 4,
    a: A,
    error: ErrorWeights::Embedded(E),
    dense: DenseForm::Dopri(D),
};

/// `a_sj` of stages `s = 1..5` (row `s - 1`), non-zero entries `(j, a_sj)`; row 5 is the
/// fifth-order solution weights `b_j` (`k_6 = f(y1)`, first same as last).
const A: &[Row] = &[
    &[(0, Ratio(1.0, 5.0))],
    &[(0, Ratio(3.0, 40.0)), (1, Ratio(9.0, 40.0))],
    &[
        (0, Ratio(44.0, 45.0)),
        (1, Ratio(-56.0, 15.0)),
        (2, Ratio(32.0, 9.0)),
    ],
    &[
        (0, Ratio(19372.0, 6561.0)),
        (1, Ratio(-25360.0, 2187.0)),
        (2, Ratio(64448.0, 6561.0)),
        (3, Ratio(-212.0, 729.0)),
    ],
    &[
        (0, Ratio(9017.0, 3168.0)),
        (1, Ratio(-355.0, 33.0)),
        (2, Ratio(46732.0, 5247.0)),
        (3, Ratio(49.0, 176.0)),
        (4, Ratio(-5103.0, 18656.0)),
    ],
    &[
        (0, Ratio(35.0, 384.0)),
        (2, Ratio(500.0, 1113.0)),
        (3, Ratio(125.0, 192.0)),
        (4, Ratio(-2187.0, 6784.0)),
        (5, Ratio(11.0, 84.0)),
    ],
];
/// `y5 - y4` weights on `k_0..k_6`.
const E: Row = &[
    (0, Ratio(71.0, 57600.0)),
    (2, Ratio(-71.0, 16695.0)),
    (3, Ratio(71.0, 1920.0)),
    (4, Ratio(-17253.0, 339200.0)),
    (5, Ratio(22.0, 525.0)),
    (6, Ratio(-1.0, 40.0)),
];
/// Dense-output weights on `k_0..k_6` (`d1, d3..d7` of `dopri5`).
const D: Row = &[
    (0, Ratio(-12715105075.0, 11282082432.0)),
    (2, Ratio(87487479700.0, 32700410799.0)),
    (3, Ratio(-10690763975.0, 1880347072.0)),
    (4, Ratio(701980252875.0, 199316789632.0)),
    (5, Ratio(-1453857185.0, 822651844.0)),
    (6, Ratio(69997945.0, 29380423.0)),
];
