//! The parameters `theta` of the sensitivities and how each moves the flow's inputs
//! (`derivations/sensitivities.md`, eqs. (Y6)-(Y9)): the setting's constants, `lr_head/lr`
//! and the initial reduced state.

use crate::error::{Error, Result};
use crate::flow::sensitivity::tangent::Tangent;
use crate::moments::population::{Constants, Reduced};
use crate::scalar::Scalar;
use crate::setting::{Config, Setting};
use crate::square::Square;
use crate::sweep::PaperFamily;

/// A parameter `theta` of [`crate::flow::sensitivity::sensitivities`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parameter {
    /// `ln d` through the initialization's law, the standardized draw held (eq. (Y7)).
    LnD,
    /// `ln d` along the paper's family (`derivations/scaling.md`, (D1)-(D5)): the
    /// initialization as [`Parameter::LnD`], `alpha1`, `alpha2` and `lr_head/lr` at the
    /// logarithmic rates of (D3)-(D5); `P`, `P0` are step functions of `d` and held (eq. (Y8)).
    LnDFamily,
    /// `alpha1`.
    Alpha1,
    /// `alpha2`.
    Alpha2,
    /// `s` (`noise_std`).
    NoiseStd,
    /// `lr_head / lr`.
    HeadRatio,
    /// `P0 / P` at fixed `P`, through the closed forms (O4)-(O6) continued in `P0` (eq. (Y6)).
    P0Ratio,
    /// `a_j(0)`.
    A(usize),
    /// `b_j(0)`.
    B(usize),
    /// `G_jk(0) = G_kj(0)` (`j <= k`).
    Gram(usize, usize),
    /// `E_jr(0)` (a trainable entry).
    Head(usize, usize),
}

impl Parameter {
    /// Parses a name: `ln_d`, `ln_d_family`, `alpha1`, `alpha2`, `s` (or `noise_std`),
    /// `lr_head/lr` (or `head_ratio`), `P0/P` (or `p0_ratio`), `a_J`, `b_J`, `g_J_K`, `e_J_R`
    /// (0-based neuron indices).
    ///
    /// # Examples
    ///
    /// ```
    /// use predhead::flow::sensitivity::Parameter;
    /// assert_eq!(Parameter::parse("g_0_1"), Some(Parameter::Gram(0, 1)));
    /// assert_eq!(Parameter::parse("lr_head/lr"), Some(Parameter::HeadRatio));
    /// assert_eq!(Parameter::HeadRatio.name(), "lr_head/lr");
    /// assert_eq!(Parameter::parse("beta"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Self> {
        let idx = |t: &str| t.parse::<usize>().ok();
        Some(match s {
            "ln_d" => Parameter::LnD,
            "ln_d_family" => Parameter::LnDFamily,
            "alpha1" => Parameter::Alpha1,
            "alpha2" => Parameter::Alpha2,
            "s" | "noise_std" => Parameter::NoiseStd,
            "lr_head/lr" | "head_ratio" => Parameter::HeadRatio,
            "P0/P" | "p0_ratio" => Parameter::P0Ratio,
            _ => {
                let parts: Vec<&str> = s.split('_').collect();
                match parts.as_slice() {
                    ["a", j] => Parameter::A(idx(j)?),
                    ["b", j] => Parameter::B(idx(j)?),
                    ["g", j, k] => {
                        let (j, k) = (idx(j)?, idx(k)?);
                        Parameter::Gram(j.min(k), j.max(k))
                    }
                    ["e", j, r] => Parameter::Head(idx(j)?, idx(r)?),
                    _ => return None,
                }
            }
        })
    }

    /// The canonical name (the JSON key).
    pub fn name(&self) -> String {
        match self {
            Parameter::LnD => "ln_d".into(),
            Parameter::LnDFamily => "ln_d_family".into(),
            Parameter::Alpha1 => "alpha1".into(),
            Parameter::Alpha2 => "alpha2".into(),
            Parameter::NoiseStd => "s".into(),
            Parameter::HeadRatio => "lr_head/lr".into(),
            Parameter::P0Ratio => "P0/P".into(),
            Parameter::A(j) => format!("a_{j}"),
            Parameter::B(j) => format!("b_{j}"),
            Parameter::Gram(j, k) => format!("g_{j}_{k}"),
            Parameter::Head(j, r) => format!("e_{j}_{r}"),
        }
    }

    /// Parses a comma-separated list (the `--sensitivities` flag); errors name the field
    /// `sensitivities` and the bad entry.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] on an unknown or repeated name or an empty list.
    pub fn parse_list(list: &str) -> Result<Vec<Self>> {
        let mut out: Vec<Parameter> = Vec::new();
        for name in list.split(',').map(str::trim) {
            let p = Parameter::parse(name).ok_or_else(|| {
                Error::invalid(
                    "sensitivities",
                    format!(
                        "unknown parameter {name:?} (expected ln_d, ln_d_family, alpha1, \
                         alpha2, s, lr_head/lr, P0/P, a_J, b_J, g_J_K or e_J_R)"
                    ),
                )
            })?;
            if out.contains(&p) {
                return Err(Error::invalid(
                    "sensitivities",
                    format!("parameter {name:?} given twice"),
                ));
            }
            out.push(p);
        }
        Ok(out)
    }
}

/// The inputs of the flow that the parameters move (eq. (Y6)): the feature strengths, `s`,
/// `lr_head/lr`, `P0` (continued to real values at fixed `P`), and the initial state.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// `[alpha1, alpha2]`.
    pub alpha: [f64; 2],
    /// `s`.
    pub s: f64,
    /// `lr_head / lr`.
    pub head_ratio: f64,
    /// `P0` (a real number; the configuration's at the base point).
    pub p0: f64,
    /// The initial reduced state.
    pub x0: Reduced<f64>,
}

/// The base point: the configuration, its inputs, and the dimension and whether the
/// initial state is the seeded reduced initialization (needed by the `ln d` parameters).
#[derive(Clone, Debug)]
pub struct Base {
    /// The configuration.
    pub config: Config,
    /// The inputs at the base point.
    pub inputs: Inputs,
    /// Whether `x0` is the reduced initialization at `d` (`ln d` moves it).
    pub seeded: bool,
}

impl Base {
    /// The base point of `config` from the initial state `x0`; `seeded` when `x0` is
    /// [`crate::init::reduced`] at the configuration's `d`.
    pub fn new(config: &Config, x0: &Reduced<f64>, seeded: bool) -> Self {
        Base {
            inputs: Inputs {
                alpha: config.setting.alpha,
                s: config.setting.noise_std,
                head_ratio: config.training.lr_head / config.training.lr,
                p0: config.setting.feature_patches as f64,
                x0: x0.clone(),
            },
            config: config.clone(),
            seeded,
        }
    }

    /// Checks that every parameter applies at this base point.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] on `sensitivities` naming the parameter: a neuron index out of
    /// range, an untrainable head entry, `ln d` without the seeded initialization or with
    /// `d - 2 < m`.
    pub fn check(&self, params: &[Parameter]) -> Result<()> {
        let m = self.config.setting.neurons;
        for p in params {
            let bad = |why: &str| {
                Err(Error::invalid(
                    "sensitivities",
                    format!("{}: {why}", p.name()),
                ))
            };
            match *p {
                Parameter::LnD | Parameter::LnDFamily => {
                    if !self.seeded {
                        return bad("needs the seeded initialization (--seed), not --state");
                    }
                    if self.config.setting.dim < m as u64 + 2 {
                        return bad("needs d - 2 >= m (a non-singular Wishart draw)");
                    }
                }
                Parameter::A(j) | Parameter::B(j) if j >= m => return bad("neuron out of range"),
                Parameter::Gram(_, k) if k >= m => return bad("neuron out of range"),
                Parameter::Head(j, r) => {
                    if j >= m || r >= m {
                        return bad("neuron out of range");
                    }
                    if !self.config.model.head.trainable(j, r) {
                        return bad("not a trainable head entry");
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The inputs moved by `delta` along `p` (the finite-difference checks and eq. (Y6)).
    ///
    /// # Errors
    ///
    /// As [`standardized_init`].
    pub fn perturbed(&self, p: Parameter, delta: f64) -> Result<Inputs> {
        let mut x = self.inputs.clone();
        let d = self.config.setting.dim as f64;
        match p {
            Parameter::LnD => x.x0 = standardized_init(&x.x0, d, d * delta.exp())?,
            Parameter::LnDFamily => {
                x.x0 = standardized_init(&x.x0, d, d * delta.exp())?;
                let r = family_rates(d);
                x.alpha[0] *= (r[0] * delta).exp();
                x.alpha[1] *= (r[1] * delta).exp();
                x.head_ratio *= (r[2] * delta).exp();
            }
            Parameter::Alpha1 => x.alpha[0] += delta,
            Parameter::Alpha2 => x.alpha[1] += delta,
            Parameter::NoiseStd => x.s += delta,
            Parameter::HeadRatio => x.head_ratio += delta,
            Parameter::P0Ratio => x.p0 += delta * self.config.setting.patches as f64,
            Parameter::A(j) => x.x0.a[j] += delta,
            Parameter::B(j) => x.x0.b[j] += delta,
            Parameter::Gram(j, k) => {
                *x.x0.gram.at_mut(j, k) += delta;
                if j != k {
                    *x.x0.gram.at_mut(k, j) += delta;
                }
            }
            Parameter::Head(j, r) => *x.x0.e.at_mut(j, r) += delta,
        }
        Ok(x)
    }

    /// The tangent of the inputs along `p` at the base point (eq. (Y6)-(Y8)).
    ///
    /// # Errors
    ///
    /// As [`standardized_init`].
    pub fn direction(&self, p: Parameter) -> Result<Inputs> {
        let m = self.config.setting.neurons;
        let zero = Inputs {
            alpha: [0.0; 2],
            s: 0.0,
            head_ratio: 0.0,
            p0: 0.0,
            x0: Reduced {
                a: vec![0.0; m],
                b: vec![0.0; m],
                gram: Square::zeros(m, ()),
                e: Square::zeros(m, ()),
            },
        };
        let b = &self.inputs;
        let mut t = zero;
        let d = self.config.setting.dim as f64;
        let init = |t: &mut Inputs| -> Result<()> {
            // (Y7): the derivative of `standardized_init` in ln d, in forward mode.
            let mut dd = Tangent::<f64, 1>::constant(d);
            dd.d[0] = d;
            dd.n = 1;
            let x = standardized_init_generic(&b.x0, d, dd)?;
            t.x0.a = x.a.iter().map(|v| v.d[0]).collect();
            t.x0.b = x.b.iter().map(|v| v.d[0]).collect();
            t.x0.gram = Square::from_fn(m, |i, j| x.gram.at(i, j).d[0]);
            Ok(())
        };
        match p {
            Parameter::LnD => init(&mut t)?,
            Parameter::LnDFamily => {
                init(&mut t)?;
                let r = family_rates(d);
                t.alpha = [b.alpha[0] * r[0], b.alpha[1] * r[1]];
                t.head_ratio = b.head_ratio * r[2];
            }
            Parameter::Alpha1 => t.alpha[0] = 1.0,
            Parameter::Alpha2 => t.alpha[1] = 1.0,
            Parameter::NoiseStd => t.s = 1.0,
            Parameter::HeadRatio => t.head_ratio = 1.0,
            Parameter::P0Ratio => t.p0 = self.config.setting.patches as f64,
            Parameter::A(j) => t.x0.a[j] = 1.0,
            Parameter::B(j) => t.x0.b[j] = 1.0,
            Parameter::Gram(j, k) => {
                *t.x0.gram.at_mut(j, k) = 1.0;
                *t.x0.gram.at_mut(k, j) = 1.0;
            }
            Parameter::Head(j, r) => *t.x0.e.at_mut(j, r) = 1.0,
        }
        Ok(t)
    }
}

/// The logarithmic rates `d ln alpha1 / d ln d`, `d ln alpha2 / d ln d`,
/// `d ln (lr_head/lr) / d ln d` of the paper's family with the default constants
/// (`derivations/sensitivities.md`, eq. (Y8), from (D3)-(D5) of `derivations/scaling.md`).
///
/// # Examples
///
/// ```
/// use predhead::flow::sensitivity::params::family_rates;
/// let r = family_rates(1e9);
/// let l = 1e9f64.ln();
/// assert!((r[0] - std::f64::consts::LN_2 / l).abs() < 1e-15);
/// assert!((r[1] - (r[0] - 1.0 / l)).abs() < 1e-15 && (r[2] + 1.0 / l).abs() < 1e-15);
/// ```
pub fn family_rates(d: f64) -> [f64; 3] {
    let f = PaperFamily::default();
    let l = d.ln();
    let ll = l.ln();
    // (D3): ln alpha1 = ln 2 c_a LL^k_a, d/dL = ln 2 c_a k_a LL^(k_a - 1) / L.
    let a1 = std::f64::consts::LN_2 * f.c_a * f.k_a * ll.powf(f.k_a - 1.0) / l;
    // (D4), (D5): a factor 1 / max(1, c L^k) adds -k / L where c L^k > 1.
    let a2 = a1
        - if f.c_2 * l.powf(f.k_2) > 1.0 {
            f.k_2 / l
        } else {
            0.0
        };
    let h = if f.c_h * l.powf(f.k_h) > 1.0 {
        -f.k_h / l
    } else {
        0.0
    };
    [a1, a2, h]
}

/// The reduced initialization drawn at dimension `d` moved to dimension `d_new` with its
/// standardized draw held (`derivations/sensitivities.md`, eq. (Y7)): `a, b` scale as
/// `d^(-1/2)`; `d G = L L^T` with `L` the Cholesky factor (the Bartlett factor of (I1)),
/// its below-diagonal normals held, and each diagonal `L_jj^2 = k_j + zeta_j sqrt(2 k_j)`,
/// `k_j = d - 2 - j`, with the standardized chi-square `zeta_j` held.
///
/// # Errors
///
/// [`Error::Numerical`] when `d G` is not positive definite (the singular case `d - 2 < m`).
pub fn standardized_init(x0: &Reduced<f64>, d: f64, d_new: f64) -> Result<Reduced<f64>> {
    let x = standardized_init_generic::<f64>(x0, d, d_new)?;
    Ok(x)
}

/// [`standardized_init`] generic in the scalar of `d_new` (forward mode for eq. (Y7)).
pub(crate) fn standardized_init_generic<S: Scalar>(
    x0: &Reduced<f64>,
    d: f64,
    d_new: S,
) -> Result<Reduced<S>> {
    let m = x0.neurons();
    let ctx = d_new.ctx();
    // Cholesky of d G.
    let mut l = vec![vec![0.0f64; m]; m];
    for i in 0..m {
        for j in 0..=i {
            let mut s = d * x0.gram.at(i, j);
            for (p, q) in l[i][..j].iter().zip(&l[j][..j]) {
                s -= p * q;
            }
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return Err(Error::numerical(
                        "standardized initialization",
                        "d G is not positive definite",
                    ));
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    let c = |v: f64| S::from_f64(v, ctx);
    let root = (c(d) / d_new.clone()).sqrt();
    let mut ln: Vec<Vec<S>> = l
        .iter()
        .map(|row| row.iter().map(|&v| c(v)).collect())
        .collect();
    for (j, row) in ln.iter_mut().enumerate() {
        let k = d - 2.0 - j as f64;
        let zeta = (l[j][j] * l[j][j] - k) / (2.0 * k).sqrt();
        let k_new = d_new.clone() - c(2.0 + j as f64);
        row[j] = (k_new.clone() + c(zeta) * (c(2.0) * k_new).sqrt()).sqrt();
    }
    let gram = Square::from_fn(m, |i, j| {
        let mut acc = S::zero(ctx);
        for p in 0..=i.min(j) {
            acc = acc + ln[i][p].clone() * ln[j][p].clone();
        }
        acc / d_new.clone()
    });
    Ok(Reduced {
        a: x0.a.iter().map(|&v| c(v) * root.clone()).collect(),
        b: x0.b.iter().map(|&v| c(v) * root.clone()).collect(),
        gram,
        e: Square::from_fn(m, |i, j| c(*x0.e.at(i, j))),
    })
}

/// `E[K^2]`, `E[K K']` and `n` of (O4)-(O6) at a real `P0` (fixed `P`), in `f64`.
fn overlap_closed(p: f64, p0: f64) -> [f64; 3] {
    [
        p0 / 2.0 + p0 * (p0 - 1.0) * (p - 2.0) / (4.0 * (p - 1.0)),
        p0 * (p0 - 1.0) * p / (4.0 * (p - 1.0)),
        (p - p0) / 2.0,
    ]
}

/// Their derivatives in `P0`.
fn overlap_closed_dp0(p: f64, p0: f64) -> [f64; 3] {
    [
        0.5 + (2.0 * p0 - 1.0) * (p - 2.0) / (4.0 * (p - 1.0)),
        (2.0 * p0 - 1.0) * p / (4.0 * (p - 1.0)),
        -0.5,
    ]
}

/// The setting's constants at `inputs`, with the tangents of `dirs` (eq. (Y6)): the values
/// are those of [`Constants::new`] (exact rationals rounded once) at the configuration's
/// `P0`, plus the closed-form change (O4)-(O6) when `inputs.p0` differs from it; the
/// tangents are the derivatives of `h_l = alpha_l^6 / 2`, `s^6` and the overlap moments.
/// `drop` is the test hook of the falsifier: the index of one tangent term set to zero
/// (0: `h_1`, 1: `h_2`, 2: `s^6`, 3: the overlap moments, 4: the head ratio).
pub(crate) fn seeded_constants<T: Scalar, const K: usize>(
    setting: &Setting,
    inputs: &Inputs,
    dirs: &[Inputs],
    ctx: T::Ctx,
    drop: Option<usize>,
) -> (Constants<Tangent<T, K>>, Tangent<T, K>) {
    let mut base_setting = setting.clone();
    base_setting.alpha = inputs.alpha;
    base_setting.noise_std = inputs.s;
    let k = Constants::<T>::new(&base_setting, ctx);
    let p = setting.patches as f64;
    let p0c = setting.feature_patches as f64;
    let dp0 = inputs.p0 - p0c;
    let (now, then) = (overlap_closed(p, inputs.p0), overlap_closed(p, p0c));
    let shift = |v: T, i: usize| {
        if dp0 == 0.0 {
            v
        } else {
            v + T::from_f64(now[i] - then[i], ctx)
        }
    };
    let ek2 = shift(k.ek2.clone(), 0);
    let ekk = shift(k.ekk.clone(), 1);
    let n = shift(k.n.clone(), 2);
    let (gap, kappa, opt, p0_sq, noise_full) = if dp0 == 0.0 {
        (
            k.ek2_minus_ekk,
            k.kappa,
            k.opt_neuron,
            k.p0_sq,
            k.noise_full,
        )
    } else {
        let kappa = ekk.clone() / ek2.clone();
        let two = T::from_f64(2.0, ctx);
        let p0v = T::from_f64(inputs.p0, ctx);
        (
            ek2.clone() - ekk.clone(),
            kappa.clone(),
            two.clone() - two * kappa,
            p0v.sq(),
            T::from_f64(p, ctx) - p0v,
        )
    };
    let on = |i: usize| drop != Some(i);
    let dov = overlap_closed_dp0(p, inputs.p0);
    let (e2, ec) = (now[0], now[1]);
    let tangent = |v: T, f: &dyn Fn(&Inputs) -> f64| {
        Tangent::with_lanes(
            v,
            std::array::from_fn(|i| T::from_f64(dirs.get(i).map_or(0.0, f), ctx)),
            dirs.len(),
        )
    };
    let [a1, a2] = inputs.alpha;
    let s = inputs.s;
    let constants = Constants {
        ek2: tangent(ek2, &|t| if on(3) { dov[0] * t.p0 } else { 0.0 }),
        ekk: tangent(ekk, &|t| if on(3) { dov[1] * t.p0 } else { 0.0 }),
        ek2_minus_ekk: tangent(gap, &|t| if on(3) { (dov[0] - dov[1]) * t.p0 } else { 0.0 }),
        kappa: tangent(kappa, &|t| {
            if on(3) {
                (dov[1] * e2 - ec * dov[0]) / (e2 * e2) * t.p0
            } else {
                0.0
            }
        }),
        opt_neuron: tangent(opt, &|t| {
            if on(3) {
                -2.0 * (dov[1] * e2 - ec * dov[0]) / (e2 * e2) * t.p0
            } else {
                0.0
            }
        }),
        n: tangent(n, &|t| if on(3) { dov[2] * t.p0 } else { 0.0 }),
        h: [
            tangent(k.h[0].clone(), &|t| {
                if on(0) {
                    3.0 * a1.powi(5) * t.alpha[0]
                } else {
                    0.0
                }
            }),
            tangent(k.h[1].clone(), &|t| {
                if on(1) {
                    3.0 * a2.powi(5) * t.alpha[1]
                } else {
                    0.0
                }
            }),
        ],
        s6: tangent(k.s6, &|t| if on(2) { 6.0 * s.powi(5) * t.s } else { 0.0 }),
        p0_sq: tangent(p0_sq, &|t| 2.0 * inputs.p0 * t.p0),
        noise_full: tangent(noise_full, &|t| -t.p0),
        overlap: k.overlap,
    };
    let ratio = tangent(T::from_f64(inputs.head_ratio, ctx), &|t| {
        if on(4) {
            t.head_ratio
        } else {
            0.0
        }
    });
    (constants, ratio)
}

/// The initial state with the tangents of `dirs` (and, past them, zero).
pub(crate) fn seeded_state<T: Scalar, const K: usize>(
    inputs: &Inputs,
    dirs: &[Inputs],
    ctx: T::Ctx,
) -> Reduced<Tangent<T, K>> {
    let m = inputs.x0.neurons();
    let t = |v: f64, f: &dyn Fn(&Reduced<f64>) -> f64| {
        Tangent::with_lanes(
            T::from_f64(v, ctx),
            std::array::from_fn(|i| T::from_f64(dirs.get(i).map_or(0.0, |d| f(&d.x0)), ctx)),
            dirs.len(),
        )
    };
    let x = &inputs.x0;
    Reduced {
        a: (0..m).map(|j| t(x.a[j], &|r| r.a[j])).collect(),
        b: (0..m).map(|j| t(x.b[j], &|r| r.b[j])).collect(),
        gram: Square::from_fn(m, |i, j| t(*x.gram.at(i, j), &|r| *r.gram.at(i, j))),
        e: Square::from_fn(m, |i, j| t(*x.e.at(i, j), &|r| *r.e.at(i, j))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (Y7): at `d_new = d` the standardized initialization returns the state (to
    /// rounding), and its ln-d derivative of `a` is `-a/2`.
    #[test]
    fn standardized_init_is_the_identity_at_d_and_scales_a() {
        let s = Setting {
            dim: 1000,
            patches: 4,
            feature_patches: 2,
            alpha: [2.0, 1.0],
            noise_std: 1.0,
            neurons: 3,
        };
        let x = crate::init::reduced(&s, 5).unwrap();
        let y = standardized_init(&x, 1000.0, 1000.0).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                assert!((x.gram.at(i, j) - y.gram.at(i, j)).abs() < 1e-14);
            }
            assert!((x.a[i] - y.a[i]).abs() < 1e-17);
        }
        let mut dd = Tangent::<f64, 1>::constant(1000.0);
        dd.d[0] = 1000.0;
        dd.n = 1;
        let t = standardized_init_generic(&x, 1000.0, dd).unwrap();
        assert!((t.a[1].d[0] + 0.5 * x.a[1]).abs() < 1e-15);
    }
}
