//! Dormand and Prince's explicit Runge-Kutta method of order 8 with error estimators of
//! orders 5 and 3 and a seventh-order dense output (Hairer, Norsett and Wanner, *Solving
//! Ordinary Differential Equations I*, 2nd ed., II.5 and II.6, and their code `dop853`,
//! whose coefficients these are; `derivations/numerics.md`, "Integrators"). Twelve
//! stages, the last evaluation `f(y1)` reused as the next step's first; three more for the
//! dense output. Generic over [`Scalar`]; the coefficients are decimals rounded to `f64`,
//! so in MPFR the order conditions hold to about 1e-16 and the MPFR reference uses the
//! rational Dormand-Prince 5(4) pair ([`super::dopri5`]).
//!
//! The tableau is data ([`DOP853`], an [`ExplicitTableau`]); the step and the dense output
//! are the explicit family's ([`super::explicit`]).
//!
//! The error norm is Hairer's: with `e5` and `e3` the scaled RMS norms of the fifth- and
//! third-order estimates, `err = h e5^2 / sqrt(e5^2 + 0.01 e3^2)` (a fifth-order estimate
//! that does not collapse when `e5` happens to vanish), and the step size follows it with
//! exponent `1/8`.

// The literals below are the published 30-digit values, kept verbatim so that the
// transcription can be checked digit by digit against the source; the compiler rounds each
// to the nearest `f64`.
#![allow(clippy::excessive_precision)]

use crate::ode::tableau::{Coef::Decimal, DenseForm, ErrorWeights, ExplicitTableau, Row};

/// DOP853: order 8, error estimators of orders 5 and 3 (Hairer's norm, step control with
/// `q = 7`), seventh-order dense output from three more stages.
pub const DOP853: ExplicitTableau = ExplicitTableau {
    name: "dop853",
    order: 8,
    estimate_order: 7,
    a: STAGES,
    error: ErrorWeights::Hairer { e5: E5, bhh: BHH },
    dense: DenseForm::Dop853 {
        stages: DENSE_STAGES,
        rows: D,
    },
};

/// `a_sj` of stages `s = 1..11` (row `s - 1`), non-zero entries `(j, a_sj)`; row 11 is the
/// solution weights `b_j`.
const STAGES: &[Row] = &[
    &[(0, Decimal(5.26001519587677318785587544488e-2))],
    &[
        (0, Decimal(1.97250569845378994544595329183e-2)),
        (1, Decimal(5.91751709536136983633785987549e-2)),
    ],
    &[
        (0, Decimal(2.95875854768068491816892993775e-2)),
        (2, Decimal(8.87627564304205475450678981324e-2)),
    ],
    &[
        (0, Decimal(2.41365134159266685502369798665e-1)),
        (2, Decimal(-8.84549479328286085344864962717e-1)),
        (3, Decimal(9.24834003261792003115737966543e-1)),
    ],
    &[
        (0, Decimal(3.7037037037037037037037037037e-2)),
        (3, Decimal(1.70828608729473871279604482173e-1)),
        (4, Decimal(1.25467687566822425016691814123e-1)),
    ],
    &[
        (0, Decimal(3.7109375e-2)),
        (3, Decimal(1.70252211019544039314978060272e-1)),
        (4, Decimal(6.02165389804559606850219397283e-2)),
        (5, Decimal(-1.7578125e-2)),
    ],
    &[
        (0, Decimal(3.70920001185047927108779319836e-2)),
        (3, Decimal(1.70383925712239993810214054705e-1)),
        (4, Decimal(1.07262030446373284651809199168e-1)),
        (5, Decimal(-1.53194377486244017527936158236e-2)),
        (6, Decimal(8.27378916381402288758473766002e-3)),
    ],
    &[
        (0, Decimal(6.24110958716075717114429577812e-1)),
        (3, Decimal(-3.36089262944694129406857109825)),
        (4, Decimal(-8.68219346841726006818189891453e-1)),
        (5, Decimal(2.75920996994467083049415600797e1)),
        (6, Decimal(2.01540675504778934086186788979e1)),
        (7, Decimal(-4.34898841810699588477366255144e1)),
    ],
    &[
        (0, Decimal(4.77662536438264365890433908527e-1)),
        (3, Decimal(-2.48811461997166764192642586468)),
        (4, Decimal(-5.90290826836842996371446475743e-1)),
        (5, Decimal(2.12300514481811942347288949897e1)),
        (6, Decimal(1.52792336328824235832596922938e1)),
        (7, Decimal(-3.32882109689848629194453265587e1)),
        (8, Decimal(-2.03312017085086261358222928593e-2)),
    ],
    &[
        (0, Decimal(-9.3714243008598732571704021658e-1)),
        (3, Decimal(5.18637242884406370830023853209)),
        (4, Decimal(1.09143734899672957818500254654)),
        (5, Decimal(-8.14978701074692612513997267357)),
        (6, Decimal(-1.85200656599969598641566180701e1)),
        (7, Decimal(2.27394870993505042818970056734e1)),
        (8, Decimal(2.49360555267965238987089396762)),
        (9, Decimal(-3.0467644718982195003823669022)),
    ],
    &[
        (0, Decimal(2.27331014751653820792359768449)),
        (3, Decimal(-1.05344954667372501984066689879e1)),
        (4, Decimal(-2.00087205822486249909675718444)),
        (5, Decimal(-1.79589318631187989172765950534e1)),
        (6, Decimal(2.79488845294199600508499808837e1)),
        (7, Decimal(-2.85899827713502369474065508674)),
        (8, Decimal(-8.87285693353062954433549289258)),
        (9, Decimal(1.23605671757943030647266201528e1)),
        (10, Decimal(6.43392746015763530355970484046e-1)),
    ],
    &[
        (0, Decimal(5.42937341165687622380535766363e-2)),
        (5, Decimal(4.45031289275240888144113950566)),
        (6, Decimal(1.89151789931450038304281599044)),
        (7, Decimal(-5.8012039600105847814672114227)),
        (8, Decimal(3.1116436695781989440891606237e-1)),
        (9, Decimal(-1.52160949662516078556178806805e-1)),
        (10, Decimal(2.01365400804030348374776537501e-1)),
        (11, Decimal(4.47106157277725905176885569043e-2)),
    ],
];
/// `a_sj` of the extra stages `s = 13..15` of the dense output (`k_12 = f(y1)`).
const DENSE_STAGES: &[Row] = &[
    &[
        (0, Decimal(5.61675022830479523392909219681e-2)),
        (6, Decimal(2.53500210216624811088794765333e-1)),
        (7, Decimal(-2.46239037470802489917441475441e-1)),
        (8, Decimal(-1.24191423263816360469010140626e-1)),
        (9, Decimal(1.5329179827876569731206322685e-1)),
        (10, Decimal(8.20105229563468988491666602057e-3)),
        (11, Decimal(7.56789766054569976138603589584e-3)),
        (12, Decimal(-8.298e-3)),
    ],
    &[
        (0, Decimal(3.18346481635021405060768473261e-2)),
        (5, Decimal(2.83009096723667755288322961402e-2)),
        (6, Decimal(5.35419883074385676223797384372e-2)),
        (7, Decimal(-5.49237485713909884646569340306e-2)),
        (10, Decimal(-1.08347328697249322858509316994e-4)),
        (11, Decimal(3.82571090835658412954920192323e-4)),
        (12, Decimal(-3.40465008687404560802977114492e-4)),
        (13, Decimal(1.41312443674632500278074618366e-1)),
    ],
    &[
        (0, Decimal(-4.28896301583791923408573538692e-1)),
        (5, Decimal(-4.69762141536116384314449447206)),
        (6, Decimal(7.68342119606259904184240953878)),
        (7, Decimal(4.06898981839711007970213554331)),
        (8, Decimal(3.56727187455281109270669543021e-1)),
        (12, Decimal(-1.39902416515901462129418009734e-3)),
        (13, Decimal(2.9475147891527723389556272149)),
        (14, Decimal(-9.15095847217987001081870187138)),
    ],
];
/// The fifth-order error weights on `k_0..k_11`.
const E5: Row = &[
    (0, Decimal(0.1312004499419488073250102996e-1)),
    (5, Decimal(-0.1225156446376204440720569753e1)),
    (6, Decimal(-0.4957589496572501915214079952)),
    (7, Decimal(0.1664377182454986536961530415e1)),
    (8, Decimal(-0.3503288487499736816886487290)),
    (9, Decimal(0.3341791187130174790297318841)),
    (10, Decimal(0.8192320648511571246570742613e-1)),
    (11, Decimal(-0.2235530786388629525884427845e-1)),
];
/// The dense-output rows `d_4..d_7` on `k_0..k_15`.
const D: &[Row] = &[
    &[
        (0, Decimal(-0.84289382761090128651353491142e1)),
        (5, Decimal(0.56671495351937776962531783590)),
        (6, Decimal(-0.30689499459498916912797304727e1)),
        (7, Decimal(0.23846676565120698287728149680e1)),
        (8, Decimal(0.21170345824450282767155149946e1)),
        (9, Decimal(-0.87139158377797299206789907490)),
        (10, Decimal(0.22404374302607882758541771650e1)),
        (11, Decimal(0.63157877876946881815570249290)),
        (12, Decimal(-0.88990336451333310820698117400e-1)),
        (13, Decimal(0.18148505520854727256656404962e2)),
        (14, Decimal(-0.91946323924783554000451984436e1)),
        (15, Decimal(-0.44360363875948939664310572000e1)),
    ],
    &[
        (0, Decimal(0.10427508642579134603413151009e2)),
        (5, Decimal(0.24228349177525818288430175319e3)),
        (6, Decimal(0.16520045171727028198505394887e3)),
        (7, Decimal(-0.37454675472269020279518312152e3)),
        (8, Decimal(-0.22113666853125306036270938578e2)),
        (9, Decimal(0.77334326684722638389603898808e1)),
        (10, Decimal(-0.30674084731089398182061213626e2)),
        (11, Decimal(-0.93321305264302278729567221706e1)),
        (12, Decimal(0.15697238121770843886131091075e2)),
        (13, Decimal(-0.31139403219565177677282850411e2)),
        (14, Decimal(-0.93529243588444783865713862664e1)),
        (15, Decimal(0.35816841486394083752465898540e2)),
    ],
    &[
        (0, Decimal(0.19985053242002433820987653617e2)),
        (5, Decimal(-0.38703730874935176555105901742e3)),
        (6, Decimal(-0.18917813819516756882830838328e3)),
        (7, Decimal(0.52780815920542364900561016686e3)),
        (8, Decimal(-0.11573902539959630126141871134e2)),
        (9, Decimal(0.68812326946963000169666922661e1)),
        (10, Decimal(-0.10006050966910838403183860980e1)),
        (11, Decimal(0.77771377980534432092869265740)),
        (12, Decimal(-0.27782057523535084065932004339e1)),
        (13, Decimal(-0.60196695231264120758267380846e2)),
        (14, Decimal(0.84320405506677161018159903784e2)),
        (15, Decimal(0.11992291136182789328035130030e2)),
    ],
    &[
        (0, Decimal(-0.25693933462703749003312586129e2)),
        (5, Decimal(-0.15418974869023643374053993627e3)),
        (6, Decimal(-0.23152937917604549567536039109e3)),
        (7, Decimal(0.35763911791061412378285349910e3)),
        (8, Decimal(0.93405324183624310003907691704e2)),
        (9, Decimal(-0.37458323136451633156875139351e2)),
        (10, Decimal(0.10409964950896230045147246184e3)),
        (11, Decimal(0.29840293426660503123344363579e2)),
        (12, Decimal(-0.43533456590011143754432175058e2)),
        (13, Decimal(0.96324553959188282948394950600e2)),
        (14, Decimal(-0.39177261675615439165231486172e2)),
        (15, Decimal(-0.14972683625798562581422125276e3)),
    ],
];
/// `b_j - bhat_j` of the third-order estimator on `k_0..k_11` (the non-zero `bhat_j`).
const BHH: Row = &[
    (0, Decimal(0.244094488188976377952755905512)),
    (8, Decimal(0.733846688281611857341361741547)),
    (11, Decimal(0.220588235294117647058823529412e-1)),
];
