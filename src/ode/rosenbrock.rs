//! The Rosenbrock methods' tableaus as data ([`RosenbrockTableau`]): Rodas5 and Shampine's
//! 4(3). Their steps, which need a linear solver, are in the flow's layer beside the
//! equilibrated LU (`crate::flow::rodas5`, `crate::flow::rosenbrock`).

// The Rodas5 literals are the published 16-digit values, kept verbatim.
#![allow(clippy::excessive_precision)]

use crate::ode::tableau::{
    Coef::{Decimal, Ratio},
    RosenbrockTableau, Row,
};

/// Rodas5 (Di Marzo, Geneva, 1993, in the `W`-transformed form of Hairer and Wanner, Vol.
/// II, VI.3, eq. (3.20)-(3.22); `derivations/numerics.md`, "Integrators"): order 5,
/// stiffly accurate (`y1 = u_8 + k_8`, error `k_8`,
/// so no `b`, `e` rows), with the dense-output matrix `H` of Steinebach's Rodas5P work.
pub const RODAS5: RosenbrockTableau = RosenbrockTableau {
    name: "rodas5",
    order: 5,
    estimate_order: 4,
    gamma: Decimal(0.19),
    a: RODAS5_A,
    c: RODAS5_C,
    b: &[],
    e: &[],
    dense: RODAS5_H,
};

/// `a_ij` of stages 2..6 (stages 7 and 8 add `k_6` and `k_7` to `u_6`).
const RODAS5_A: &[Row] = &[
    &[(0, Decimal(2.0))],
    &[
        (0, Decimal(3.040894194418781)),
        (1, Decimal(1.041747909077569)),
    ],
    &[
        (0, Decimal(2.576417536461461)),
        (1, Decimal(1.62208306077664)),
        (2, Decimal(-0.9089668560264532)),
    ],
    &[
        (0, Decimal(2.760842080225597)),
        (1, Decimal(1.446624659844071)),
        (2, Decimal(-0.3036980084553738)),
        (3, Decimal(0.2877498600325443)),
    ],
    &[
        (0, Decimal(-14.09640773051259)),
        (1, Decimal(6.925207756232704)),
        (2, Decimal(-41.47510893210728)),
        (3, Decimal(2.343771018586405)),
        (4, Decimal(24.13215229196062)),
    ],
];

/// `C_ij` of stages 2..8.
const RODAS5_C: &[Row] = &[
    &[(0, Decimal(-10.31323885133993))],
    &[
        (0, Decimal(-21.04823117650003)),
        (1, Decimal(-7.234992135176716)),
    ],
    &[
        (0, Decimal(32.22751541853323)),
        (1, Decimal(-4.943732386540191)),
        (2, Decimal(19.44922031041879)),
    ],
    &[
        (0, Decimal(-20.69865579590063)),
        (1, Decimal(-8.816374604402768)),
        (2, Decimal(1.260436877740897)),
        (3, Decimal(-0.7495647613787146)),
    ],
    &[
        (0, Decimal(-46.22004352711257)),
        (1, Decimal(-17.49534862857472)),
        (2, Decimal(-289.6389582892057)),
        (3, Decimal(93.60855400400906)),
        (4, Decimal(318.3822534212147)),
    ],
    &[
        (0, Decimal(34.20013733472935)),
        (1, Decimal(-14.1553540271769)),
        (2, Decimal(57.823356409884)),
        (3, Decimal(25.83362985412365)),
        (4, Decimal(1.408950972071624)),
        (5, Decimal(-6.551835421242162)),
    ],
    &[
        (0, Decimal(42.57076742291101)),
        (1, Decimal(-13.80770672017997)),
        (2, Decimal(93.98938432427124)),
        (3, Decimal(18.77919633714503)),
        (4, Decimal(-31.5835918722337)),
        (5, Decimal(-6.685968952921985)),
        (6, Decimal(-5.810979938412932)),
    ],
];

/// The dense output matrix `H` (3 x 8).
const RODAS5_H: &[Row] = &[
    &[
        (0, Decimal(27.354592673333357)),
        (1, Decimal(-6.925207756232857)),
        (2, Decimal(26.40037733258859)),
        (3, Decimal(0.5635230501052979)),
        (4, Decimal(-4.699151156849391)),
        (5, Decimal(-1.6008677469422725)),
        (6, Decimal(-1.5306074446748028)),
        (7, Decimal(-1.3929872940716344)),
    ],
    &[
        (0, Decimal(44.19024239501722)),
        (1, Decimal(1.3677947663381929e-13)),
        (2, Decimal(202.93261852171622)),
        (3, Decimal(-35.5669339789154)),
        (4, Decimal(-181.91095152160645)),
        (5, Decimal(3.4116351403665033)),
        (6, Decimal(2.5793540257308067)),
        (7, Decimal(2.2435122582734066)),
    ],
    &[
        (0, Decimal(-44.0988150021747)),
        (1, Decimal(-5.755396159656812e-13)),
        (2, Decimal(-181.26175034586677)),
        (3, Decimal(56.99302194811676)),
        (4, Decimal(183.21182741427398)),
        (5, Decimal(-7.480257918273637)),
        (6, Decimal(-5.792426076169686)),
        (7, Decimal(-5.32503859794143)),
    ],
];

/// Shampine's A-stable 4(3) method (Shampine's parameters of Kaps and Rentrop's GRK4
/// family; Press et al., *Numerical Recipes*, 2nd ed., 16.6) with exact rational
/// coefficients: `a` of stages 2 and 3 (stage 4 reuses stage 3's argument),
/// `C_ij` of stages 2..4, the fourth-order weights `b` and the error weights `e` (its zero
/// kept: the step sums all four terms). No dense rows: cubic Hermite.
pub const ROS4: RosenbrockTableau = RosenbrockTableau {
    name: "ros4",
    order: 4,
    estimate_order: 3,
    gamma: Ratio(1.0, 2.0),
    a: &[
        &[(0, Ratio(2.0, 1.0))],
        &[(0, Ratio(48.0, 25.0)), (1, Ratio(6.0, 25.0))],
    ],
    c: &[
        &[(0, Ratio(-8.0, 1.0))],
        &[(0, Ratio(372.0, 25.0)), (1, Ratio(12.0, 5.0))],
        &[
            (0, Ratio(-112.0, 125.0)),
            (1, Ratio(-54.0, 125.0)),
            (2, Ratio(-2.0, 5.0)),
        ],
    ],
    b: &[
        (0, Ratio(19.0, 9.0)),
        (1, Ratio(1.0, 2.0)),
        (2, Ratio(25.0, 108.0)),
        (3, Ratio(125.0, 108.0)),
    ],
    e: &[
        (0, Ratio(17.0, 54.0)),
        (1, Ratio(7.0, 36.0)),
        (2, Ratio(0.0, 1.0)),
        (3, Ratio(125.0, 108.0)),
    ],
    dense: &[],
};
