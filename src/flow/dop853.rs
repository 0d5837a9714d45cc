//! Dormand and Prince's explicit Runge-Kutta method of order 8 with error estimators of
//! orders 5 and 3 and a seventh-order dense output (Hairer, Norsett and Wanner, *Solving
//! Ordinary Differential Equations I*, 2nd ed., II.5 and II.6, and their code `dop853`,
//! whose coefficients these are; `derivations/numerics.md`, "Integrators"). Twelve
//! stages, the last evaluation `f(y1)` reused as the next step's first; three more for the
//! dense output. Generic over [`Scalar`]; the coefficients are decimals rounded to `f64`,
//! so in MPFR the order conditions hold to about 1e-16 and the MPFR reference uses the
//! rational Dormand-Prince 5(4) pair ([`super::dopri5`]).
//!
//! The error norm is Hairer's: with `e5` and `e3` the scaled RMS norms of the fifth- and
//! third-order estimates, `err = h e5^2 / sqrt(e5^2 + 0.01 e3^2)` (a fifth-order estimate
//! that does not collapse when `e5` happens to vanish), and the step size follows it with
//! exponent `1/8`.

// The literals below are the published 30-digit values, kept verbatim so that the
// transcription can be checked digit by digit against the source; the compiler rounds each
// to the nearest `f64`.
#![allow(clippy::excessive_precision)]

use crate::error::Result;
use crate::flow::control::Tolerance;
use crate::flow::dense::{Dense, Kind};
use crate::flow::Rhs;
use crate::scalar::Scalar;

/// `a_sj` of stages `s = 1..15` (row `s - 1`), non-zero entries `(j, a_sj)`; row 11 is
/// the solution weights `b_j`, rows 12-14 the extra stages of the dense output.
const A: [&[(usize, f64)]; 15] = [
    &[(0, 5.26001519587677318785587544488e-2)],
    &[
        (0, 1.97250569845378994544595329183e-2),
        (1, 5.91751709536136983633785987549e-2),
    ],
    &[
        (0, 2.95875854768068491816892993775e-2),
        (2, 8.87627564304205475450678981324e-2),
    ],
    &[
        (0, 2.41365134159266685502369798665e-1),
        (2, -8.84549479328286085344864962717e-1),
        (3, 9.24834003261792003115737966543e-1),
    ],
    &[
        (0, 3.7037037037037037037037037037e-2),
        (3, 1.70828608729473871279604482173e-1),
        (4, 1.25467687566822425016691814123e-1),
    ],
    &[
        (0, 3.7109375e-2),
        (3, 1.70252211019544039314978060272e-1),
        (4, 6.02165389804559606850219397283e-2),
        (5, -1.7578125e-2),
    ],
    &[
        (0, 3.70920001185047927108779319836e-2),
        (3, 1.70383925712239993810214054705e-1),
        (4, 1.07262030446373284651809199168e-1),
        (5, -1.53194377486244017527936158236e-2),
        (6, 8.27378916381402288758473766002e-3),
    ],
    &[
        (0, 6.24110958716075717114429577812e-1),
        (3, -3.36089262944694129406857109825),
        (4, -8.68219346841726006818189891453e-1),
        (5, 2.75920996994467083049415600797e1),
        (6, 2.01540675504778934086186788979e1),
        (7, -4.34898841810699588477366255144e1),
    ],
    &[
        (0, 4.77662536438264365890433908527e-1),
        (3, -2.48811461997166764192642586468),
        (4, -5.90290826836842996371446475743e-1),
        (5, 2.12300514481811942347288949897e1),
        (6, 1.52792336328824235832596922938e1),
        (7, -3.32882109689848629194453265587e1),
        (8, -2.03312017085086261358222928593e-2),
    ],
    &[
        (0, -9.3714243008598732571704021658e-1),
        (3, 5.18637242884406370830023853209),
        (4, 1.09143734899672957818500254654),
        (5, -8.14978701074692612513997267357),
        (6, -1.85200656599969598641566180701e1),
        (7, 2.27394870993505042818970056734e1),
        (8, 2.49360555267965238987089396762),
        (9, -3.0467644718982195003823669022),
    ],
    &[
        (0, 2.27331014751653820792359768449),
        (3, -1.05344954667372501984066689879e1),
        (4, -2.00087205822486249909675718444),
        (5, -1.79589318631187989172765950534e1),
        (6, 2.79488845294199600508499808837e1),
        (7, -2.85899827713502369474065508674),
        (8, -8.87285693353062954433549289258),
        (9, 1.23605671757943030647266201528e1),
        (10, 6.43392746015763530355970484046e-1),
    ],
    &[
        (0, 5.42937341165687622380535766363e-2),
        (5, 4.45031289275240888144113950566),
        (6, 1.89151789931450038304281599044),
        (7, -5.8012039600105847814672114227),
        (8, 3.1116436695781989440891606237e-1),
        (9, -1.52160949662516078556178806805e-1),
        (10, 2.01365400804030348374776537501e-1),
        (11, 4.47106157277725905176885569043e-2),
    ],
    &[
        (0, 5.61675022830479523392909219681e-2),
        (6, 2.53500210216624811088794765333e-1),
        (7, -2.46239037470802489917441475441e-1),
        (8, -1.24191423263816360469010140626e-1),
        (9, 1.5329179827876569731206322685e-1),
        (10, 8.20105229563468988491666602057e-3),
        (11, 7.56789766054569976138603589584e-3),
        (12, -8.298e-3),
    ],
    &[
        (0, 3.18346481635021405060768473261e-2),
        (5, 2.83009096723667755288322961402e-2),
        (6, 5.35419883074385676223797384372e-2),
        (7, -5.49237485713909884646569340306e-2),
        (10, -1.08347328697249322858509316994e-4),
        (11, 3.82571090835658412954920192323e-4),
        (12, -3.40465008687404560802977114492e-4),
        (13, 1.41312443674632500278074618366e-1),
    ],
    &[
        (0, -4.28896301583791923408573538692e-1),
        (5, -4.69762141536116384314449447206),
        (6, 7.68342119606259904184240953878),
        (7, 4.06898981839711007970213554331),
        (8, 3.56727187455281109270669543021e-1),
        (12, -1.39902416515901462129418009734e-3),
        (13, 2.9475147891527723389556272149),
        (14, -9.15095847217987001081870187138),
    ],
];
/// The fifth-order error weights on `k_0..k_11`.
const E5: [(usize, f64); 8] = [
    (0, 0.1312004499419488073250102996e-1),
    (5, -0.1225156446376204440720569753e1),
    (6, -0.4957589496572501915214079952),
    (7, 0.1664377182454986536961530415e1),
    (8, -0.3503288487499736816886487290),
    (9, 0.3341791187130174790297318841),
    (10, 0.8192320648511571246570742613e-1),
    (11, -0.2235530786388629525884427845e-1),
];
/// The dense-output rows `d_4..d_7` on `k_0..k_15`.
const D: [&[(usize, f64)]; 4] = [
    &[
        (0, -0.84289382761090128651353491142e1),
        (5, 0.56671495351937776962531783590),
        (6, -0.30689499459498916912797304727e1),
        (7, 0.23846676565120698287728149680e1),
        (8, 0.21170345824450282767155149946e1),
        (9, -0.87139158377797299206789907490),
        (10, 0.22404374302607882758541771650e1),
        (11, 0.63157877876946881815570249290),
        (12, -0.88990336451333310820698117400e-1),
        (13, 0.18148505520854727256656404962e2),
        (14, -0.91946323924783554000451984436e1),
        (15, -0.44360363875948939664310572000e1),
    ],
    &[
        (0, 0.10427508642579134603413151009e2),
        (5, 0.24228349177525818288430175319e3),
        (6, 0.16520045171727028198505394887e3),
        (7, -0.37454675472269020279518312152e3),
        (8, -0.22113666853125306036270938578e2),
        (9, 0.77334326684722638389603898808e1),
        (10, -0.30674084731089398182061213626e2),
        (11, -0.93321305264302278729567221706e1),
        (12, 0.15697238121770843886131091075e2),
        (13, -0.31139403219565177677282850411e2),
        (14, -0.93529243588444783865713862664e1),
        (15, 0.35816841486394083752465898540e2),
    ],
    &[
        (0, 0.19985053242002433820987653617e2),
        (5, -0.38703730874935176555105901742e3),
        (6, -0.18917813819516756882830838328e3),
        (7, 0.52780815920542364900561016686e3),
        (8, -0.11573902539959630126141871134e2),
        (9, 0.68812326946963000169666922661e1),
        (10, -0.10006050966910838403183860980e1),
        (11, 0.77771377980534432092869265740),
        (12, -0.27782057523535084065932004339e1),
        (13, -0.60196695231264120758267380846e2),
        (14, 0.84320405506677161018159903784e2),
        (15, 0.11992291136182789328035130030e2),
    ],
    &[
        (0, -0.25693933462703749003312586129e2),
        (5, -0.15418974869023643374053993627e3),
        (6, -0.23152937917604549567536039109e3),
        (7, 0.35763911791061412378285349910e3),
        (8, 0.93405324183624310003907691704e2),
        (9, -0.37458323136451633156875139351e2),
        (10, 0.10409964950896230045147246184e3),
        (11, 0.29840293426660503123344363579e2),
        (12, -0.43533456590011143754432175058e2),
        (13, 0.96324553959188282948394950600e2),
        (14, -0.39177261675615439165231486172e2),
        (15, -0.14972683625798562581422125276e3),
    ],
];
/// `b_j - bhat_j` of the third-order estimator on `k_0..k_11` (the non-zero `bhat_j`).
const BHH: [(usize, f64); 3] = [
    (0, 0.244094488188976377952755905512),
    (8, 0.733846688281611857341361741547),
    (11, 0.220588235294117647058823529412e-1),
];

/// The work space of DOP853 steps for states of length `n`: the stages, the stage
/// argument, and the attempt's results (no allocation per step in `f64`).
#[derive(Clone, Debug)]
pub struct Work<S: Scalar> {
    /// `k_0..k_15` (`k_12 = f(y1)`; `k_13..k_15` the dense-output stages).
    k: [Vec<S>; 16],
    /// The stage argument.
    arg: Vec<S>,
    /// `h a_sj` of the current row.
    coef: Vec<S>,
    /// The eighth-order solution at `h` of the last attempt.
    pub y1: Vec<S>,
    /// `f(y1)` of the last attempt (the next step's first stage).
    pub f1: Vec<S>,
}

impl<S: Scalar> Work<S> {
    /// A work space for states of length `n` at context `ctx`.
    pub fn new(n: usize, ctx: S::Ctx) -> Self {
        let z = || vec![S::zero(ctx); n];
        Work {
            k: std::array::from_fn(|_| z()),
            arg: z(),
            coef: vec![S::zero(ctx); 16],
            y1: z(),
            f1: z(),
        }
    }
}

/// `out = base + h sum_j w_j k_j` over the non-zero weights `(j, w_j)` (`base` absent:
/// zero), the products `h w_j` rounded once.
fn combine<S: Scalar>(
    out: &mut [S],
    base: Option<&[S]>,
    w: &[(usize, f64)],
    k: &[Vec<S>],
    h: &S,
    coef: &mut [S],
) {
    let ctx = h.ctx();
    for (c, &(_, v)) in coef.iter_mut().zip(w) {
        *c = h.clone() * S::from_f64(v, ctx);
    }
    match base {
        Some(b) => out.clone_from_slice(&b[..out.len()]),
        None => out.iter_mut().for_each(|o| *o = S::zero(ctx)),
    }
    // Term by term over the whole vector: each component still sums base, then the terms
    // in order (the same operations), and the inner loop runs over contiguous slices.
    for (c, &(j, _)) in coef.iter().zip(w) {
        for (o, kj) in out.iter_mut().zip(&k[j]) {
            *o = o.clone() + c.clone() * kj.clone();
        }
    }
}

/// One DOP853 step of size `h` from `y0` with `f0 = f(y0)`: 11 evaluations plus `f(y1)`.
/// Leaves `y1` and `f(y1)` in `w` and returns Hairer's error norm (accept when `<= 1`);
/// [`dense`] builds the step's continuous extension afterwards.
pub fn step<S: Scalar>(
    f: &mut Rhs<'_, S>,
    y0: &[S],
    f0: &[S],
    h: f64,
    tol: Tolerance,
    w: &mut Work<S>,
) -> Result<f64> {
    let ctx = y0[0].ctx();
    let n = y0.len();
    let hs = S::from_f64(h, ctx);
    let Work {
        k,
        arg,
        coef,
        y1,
        f1,
    } = w;
    k[0].clone_from_slice(f0);
    for (s, row) in A.iter().take(11).enumerate() {
        combine(arg, Some(y0), row, &k[..], &hs, coef);
        f(arg, &mut k[s + 1])?;
    }
    combine(y1, Some(y0), A[11], &k[..], &hs, coef);
    f(y1, f1)?;
    // Error estimates: fifth order sum_j E5_j k_j, third order sum_j (b_j - bhat_j) k_j.
    let mut e5 = 0.0;
    let mut e3 = 0.0;
    for i in 0..n {
        let sc = tol.scale_at(i, y0[i].to_f64().abs().max(y1[i].to_f64().abs()));
        let mut v5 = S::zero(ctx);
        for &(j, wj) in &E5 {
            v5 = v5 + S::from_f64(wj, ctx) * k[j][i].clone();
        }
        let mut v3 = S::zero(ctx);
        for &(j, b) in A[11] {
            v3 = v3 + S::from_f64(b, ctx) * k[j][i].clone();
        }
        for &(j, wj) in &BHH {
            v3 = v3 - S::from_f64(wj, ctx) * k[j][i].clone();
        }
        e5 += (v5.to_f64() / sc).powi(2);
        e3 += (v3.to_f64() / sc).powi(2);
    }
    Ok(if e5 == 0.0 && e3 == 0.0 {
        0.0
    } else {
        h.abs() * e5 / ((e5 + 0.01 * e3) * n as f64).sqrt()
    })
}

/// The seventh-order continuous extension of the step just taken by [`step`] from `y0`
/// with size `h` (its stages still in `w`): three more evaluations, written into `out`.
pub fn dense<S: Scalar>(
    f: &mut Rhs<'_, S>,
    y0: &[S],
    h: f64,
    w: &mut Work<S>,
    out: &mut Dense<S>,
) -> Result<()> {
    let ctx = y0[0].ctx();
    let hs = S::from_f64(h, ctx);
    let Work {
        k,
        arg,
        coef,
        y1,
        f1,
    } = w;
    k[12].clone_from_slice(f1);
    for (s, row) in A[12..].iter().enumerate() {
        combine(arg, Some(y0), row, &k[..], &hs, coef);
        f(arg, &mut k[13 + s])?;
    }
    // y(x h) = y0 + x (F0 + (1-x) (F1 + x (F2 + (1-x) (F3 + x (F4 + (1-x) (F5 + x F6))))))
    // with F0 = y1 - y0, F1 = h f0 - F0, F2 = 2 F0 - h (f1 + f0), F3..F6 = h sum_j D_rj k_j.
    let c = out.begin(Kind::Dop853, h, y0);
    let two = S::from_f64(2.0, ctx);
    for i in 0..y0.len() {
        let f0v = y1[i].clone() - y0[i].clone();
        c[1][i] = hs.clone() * k[0][i].clone() - f0v.clone();
        c[2][i] = two.clone() * f0v.clone() - hs.clone() * (f1[i].clone() + k[0][i].clone());
        c[0][i] = f0v;
    }
    for (r, row) in D.iter().enumerate() {
        combine(&mut c[3 + r], None, row, &k[..], &hs, coef);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::convergence::{errors, f};

    fn error_after(n: usize) -> (f64, f64) {
        let tol = Tolerance::uniform(1.0, 1.0);
        let mut w = Work::new(3, ());
        let mut d = Dense::new(3, ());
        let mut step = |y: &[f64], f0: &[f64], h: f64| {
            step(&mut f, y, f0, h, tol, &mut w).unwrap();
            dense(&mut f, y, h, &mut w, &mut d).unwrap();
            (w.y1.clone(), d.clone())
        };
        errors(&mut step, n, 2.0, &[0.3, 0.5, 0.8])
    }

    /// The solution weights `b` sum to 1 (consistency; the transcription of the tableau is
    /// checked as a whole by the order test below).
    #[test]
    fn weights_sum_to_one() {
        let s: f64 = A[11].iter().map(|&(_, b)| b).sum();
        assert!((s - 1.0).abs() < 1e-15, "{s}");
    }

    /// Eighth order at the step ends (error ratio about 2^8 under step halving; measured
    /// 2^7.84 from 8 to 16 steps over [0, 2]) and a dense output of order 7 (its local error
    /// `O(h^8)`; measured 2^7.68). With the sign pattern of the nested form swapped the
    /// dense order drops to 2.
    #[test]
    fn eighth_order_steps_and_seventh_order_dense_output() {
        let (e1, d1) = error_after(8);
        let (e2, d2) = error_after(16);
        let order = (e1 / e2).log2();
        let dense_order = (d1 / d2).log2();
        assert!(order > 7.3 && order < 9.0, "order {order} ({e1:e}, {e2:e})");
        assert!(
            dense_order > 7.0,
            "dense order {dense_order} ({d1:e}, {d2:e})"
        );
    }
}
