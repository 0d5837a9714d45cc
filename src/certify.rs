//! Certified population evaluation: enclosures of the exact population loss and gradient
//! (`derivations/interval.md`, eqs. (V1)-(V9)).
//!
//! The inputs are exact rationals ([`ExactInput`]): the decimal text of the state and of the
//! setting's `alpha` and `noise_std` (not their rounded `f64`s), or the exact values of given
//! `f64`s. [`evaluate_exact`] runs the same generic closed forms as `predhead eval`
//! (`derivations/population.md`, eqs. (P1)-(P12)) in any [`Scalar`]; [`certify_eval`] runs
//! them in [`Interval`] arithmetic and returns the enclosures, or a "not certified" error
//! when a branch of the closed forms cannot be decided on the enclosures, a division or
//! square root meets an enclosure containing 0, or a batch-norm variance's enclosure is not
//! positive (eq. (V7)).

use crate::error::{Error, Result};
use crate::interval::{certified, Interval, Ival, MIN_BITS};
use crate::moments::population::{evaluate, Constants, Reduced};
use crate::reduced::{explicit_gradient, ExplicitEvaluation};
use crate::scalar::Scalar;
use crate::setting::{Model, Setting};
use crate::square::Square;
use crate::state::State;
use rug::{Integer, Rational};

/// The largest working precision of a certified evaluation, in bits.
pub const MAX_BITS: u32 = 100_000;

/// The largest decimal exponent accepted in an exact input (`1e-400` is fine, `1e999999`
/// is not).
const MAX_EXP10: u64 = 100_000;

/// The exact inputs of a population evaluation: the state and the two real parameters of the
/// setting, as rationals.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactInput {
    /// `w[j][i]`, `m x d`.
    pub w: Vec<Vec<Rational>>,
    /// `E[j][r]`, `m x m`.
    pub e: Vec<Vec<Rational>>,
    /// `[alpha1, alpha2]`.
    pub alpha: [Rational; 2],
    /// `s`.
    pub noise_std: Rational,
}

/// `f64` as the exact rational it is (finite by the input checks; NaN and infinities map
/// to 0, which the checks exclude).
fn exact(x: f64) -> Rational {
    Rational::from_f64(x).unwrap_or_default()
}

impl ExactInput {
    /// The exact values of the `f64`s of a setting and a state (no decimal text involved).
    pub fn from_f64(setting: &Setting, state: &State) -> Self {
        let rows = |m: &[Vec<f64>]| -> Vec<Vec<Rational>> {
            m.iter()
                .map(|r| r.iter().map(|&x| exact(x)).collect())
                .collect()
        };
        ExactInput {
            w: rows(&state.w),
            e: rows(&state.e),
            alpha: [exact(setting.alpha[0]), exact(setting.alpha[1])],
            noise_std: exact(setting.noise_std),
        }
    }

    /// The exact decimal values written in CONFIG.toml and STATE.json, whose validated
    /// `f64` versions are `setting` and `state` (already checked by
    /// [`crate::config::parse_config`] and [`State::parse`]). A number whose text cannot be
    /// recovered keeps its exact `f64` value.
    ///
    /// # Examples
    /// ```
    /// use predhead::certify::ExactInput;
    /// use predhead::config::parse_config;
    /// use predhead::state::State;
    /// use rug::Rational;
    /// let config = "[setting]\ndim = 3\npatches = 4\nfeature_patches = 2\n\
    ///               alpha = [2.5, 1.1]\nnoise_std = 0.3\nneurons = 1\n\n\
    ///               [model]\nhead = \"frozen\"\nnormalization = \"none\"\n\
    ///               stop_gradient = true\n";
    /// let state = r#"{"w": [[0.1, -0.2, 0.7]], "e": [[1.0]]}"#;
    /// let c = parse_config(config).unwrap();
    /// let st = State::parse(state, &c.setting).unwrap();
    /// let exact = ExactInput::from_text(config, &c.setting, state, &st).unwrap();
    /// assert_eq!(exact.w[0][0], Rational::from((1, 10))); // not the f64 0.1
    /// assert_eq!(exact.alpha[1], Rational::from((11, 10)));
    /// assert_eq!(exact.noise_std, Rational::from((3, 10)));
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the entry whose text is not a decimal number.
    pub fn from_text(
        config_text: &str,
        setting: &Setting,
        state_text: &str,
        state: &State,
    ) -> Result<Self> {
        let mut out = Self::from_f64(setting, state);
        if let Ok(doc) = toml::de::DeTable::parse(config_text) {
            let root = toml::de::DeValue::Table(doc.into_inner());
            let setting_t = root.get("setting").map(|s| s.get_ref());
            for l in 0..2 {
                let text = setting_t
                    .and_then(|s| s.get("alpha"))
                    .and_then(|a| a.get_ref().get(l))
                    .and_then(|v| toml_number(v.get_ref()));
                if let Some(t) = text {
                    out.alpha[l] = decimal(&t, &format!("setting.alpha[{l}]"))?;
                }
            }
            let text = setting_t
                .and_then(|s| s.get("noise_std"))
                .and_then(|v| toml_number(v.get_ref()));
            if let Some(t) = text {
                out.noise_std = decimal(&t, "setting.noise_std")?;
            }
        }
        let raw: RawState<'_> = serde_json::from_str(state_text)
            .map_err(|e| Error::parse("state", format!("exact decimal entries: {e}")))?;
        let rows = |raw: &[Vec<&serde_json::value::RawValue>], name: &str| {
            raw.iter()
                .enumerate()
                .map(|(j, r)| {
                    r.iter()
                        .enumerate()
                        .map(|(i, v)| decimal(v.get(), &format!("state.{name}[{j}][{i}]")))
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()
        };
        let (w, e) = (rows(&raw.w, "w")?, rows(&raw.e, "e")?);
        let shape = |x: &[Vec<Rational>], y: &[Vec<f64>]| {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| a.len() == b.len())
        };
        if !shape(&w, &state.w) || !shape(&e, &state.e) {
            return Err(Error::invalid(
                "state",
                "the exact entries do not match its shape",
            ));
        }
        out.w = w;
        out.e = e;
        Ok(out)
    }
}

/// STATE.json with the text of every number.
#[derive(serde::Deserialize)]
struct RawState<'a> {
    #[serde(borrow)]
    w: Vec<Vec<&'a serde_json::value::RawValue>>,
    #[serde(borrow)]
    e: Vec<Vec<&'a serde_json::value::RawValue>>,
}

/// The decimal text of a TOML number (a decimal integer or a float), underscores removed.
fn toml_number(v: &toml::de::DeValue<'_>) -> Option<String> {
    let text = match v {
        toml::de::DeValue::Float(f) => f.as_str(),
        toml::de::DeValue::Integer(i) if i.radix() == 10 => i.as_str(),
        _ => return None,
    };
    Some(text.replace('_', ""))
}

/// [`parse_decimal`], or an error naming `field`.
fn decimal(text: &str, field: &str) -> Result<Rational> {
    parse_decimal(text).ok_or_else(|| {
        Error::invalid(
            field,
            format!(
                "expected a decimal number for an exact enclosure, got {}",
                crate::error::echo(text)
            ),
        )
    })
}

/// The exact rational value of a decimal number `[+-]digits[.digits][(e|E)[+-]digits]`
/// (JSON's and TOML's number syntax), or `None` (also for a decimal exponent beyond
/// `1e100000`).
///
/// # Examples
/// ```
/// use predhead::certify::parse_decimal;
/// use rug::Rational;
/// assert_eq!(parse_decimal("-0.1").unwrap(), Rational::from((-1, 10)));
/// assert_eq!(parse_decimal("2.5e-3").unwrap(), Rational::from((1, 400)));
/// assert!(parse_decimal("0x10").is_none());
/// ```
pub fn parse_decimal(text: &str) -> Option<Rational> {
    let t = text.trim();
    let (neg, t) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = match mant.find('.') {
        Some(i) => (&mant[..i], &mant[i + 1..]),
        None => (mant, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let digits = Integer::from_str_radix(&[int, frac].concat(), 10).ok()?;
    let e10 = exp.checked_sub(i64::try_from(frac.len()).ok()?)?;
    if e10.unsigned_abs() > MAX_EXP10 {
        return None;
    }
    let pow = Integer::from(Integer::u_pow_u(
        10,
        u32::try_from(e10.unsigned_abs()).ok()?,
    ));
    let mut q = if e10 >= 0 {
        Rational::from(digits * pow)
    } else {
        Rational::from((digits, pow))
    };
    if neg {
        q = -q;
    }
    Some(q)
}

/// The constants of the setting at `ctx`, with `h_l = alpha_l^6 / 2` and `s^6` from the exact
/// `alpha` and `s` of `input` (eq. (V8); `derivations/population.md`, eq. (P1)).
pub fn constants<S: Scalar>(setting: &Setting, input: &ExactInput, ctx: S::Ctx) -> Constants<S> {
    let mut k = Constants::<S>::new(setting, ctx);
    let half = S::from_f64(0.5, ctx);
    let alpha6 = |q: &Rational| S::from_rational(q, ctx).cube().sq();
    k.h = [
        half.clone() * alpha6(&input.alpha[0]),
        half * alpha6(&input.alpha[1]),
    ];
    k.s6 = S::from_rational(&input.noise_std, ctx).cube().sq();
    k
}

/// The population loss and gradient at the exact input, in `S` with the constants `k`
/// (eq. (V9)): reduced coordinates `a_j, b_j, G_jk = sum_{i>=2} w_ji w_ki` (eq. (P11)),
/// [`evaluate`] (eqs. (P8)-(P10)), and `grad w_j = g_a e_1 + g_b e_2 + sum_k Sigma_jk u_k`
/// (eq. (P10)). With `S = f64` and `f64` inputs it is bit-identical to
/// [`crate::reduced::evaluate_explicit`].
///
/// # Errors
///
/// The errors of [`evaluate`] (a batch-norm variance that is not positive).
pub fn evaluate_exact<S: Scalar>(
    k: &Constants<S>,
    model: &Model,
    input: &ExactInput,
    ctx: S::Ctx,
) -> Result<ExplicitEvaluation<S>> {
    let lift = |m: &[Vec<Rational>]| -> Vec<Vec<S>> {
        m.iter()
            .map(|r| r.iter().map(|q| S::from_rational(q, ctx)).collect())
            .collect()
    };
    let w = lift(&input.w);
    let m = w.len();
    let gram = Square::from_fn(m, |j, kk| {
        let mut acc = S::zero(ctx);
        for (x, y) in w[j][2..].iter().zip(&w[kk][2..]) {
            acc = acc + x.clone() * y.clone();
        }
        acc
    });
    let e = lift(&input.e);
    let x = Reduced {
        a: w.iter().map(|r| r[0].clone()).collect(),
        b: w.iter().map(|r| r[1].clone()).collect(),
        gram,
        e: Square::from_fn(m, |j, r| e[j][r].clone()),
    };
    let ev = evaluate(k, model, &x)?;
    let d = w.first().map_or(0, Vec::len);
    Ok(explicit_gradient(ev, m, d, |kk, i| w[kk][i].clone()))
}

/// Enclosures of the exact population loss and gradient at `input`, at `bits` bits of
/// working precision (53 and up): each returned interval contains the exact value
/// (`derivations/interval.md`, eq. (V6)).
///
/// # Examples
/// ```
/// use predhead::certify::{certify_eval, ExactInput};
/// use predhead::setting::{HeadMode, Model, Normalization, Setting};
/// use predhead::state::State;
/// let setting = Setting { dim: 4, patches: 4, feature_patches: 2, alpha: [4.0, 1.0],
///                         noise_std: 1.0, neurons: 2 };
/// let model = Model { head: HeadMode::IdentityOffdiag, normalization: Normalization::Batchnorm,
///                     stop_gradient: true };
/// let mut state = State::with_identity_head(vec![vec![0.5, 0.1, 0.3, -0.2],
///                                                vec![0.2, 0.4, -0.1, 0.3]]);
/// state.e[0][1] = 0.05;
/// let input = ExactInput::from_f64(&setting, &state);
/// let ev = certify_eval(&setting, &model, &input, 53).unwrap();
/// // The plain f64 evaluation is within a few widths; the widths are tiny.
/// let (lo, hi) = ev.loss.bounds_f64();
/// assert!(lo <= hi && ev.loss.rel_width_f64() < 1e-12);
/// ```
///
/// # Errors
///
/// [`Error::Invalid`] for `bits` outside `53..=100000`; [`Error::Numerical`] naming `state`
/// with "not certified" and the reason when the enclosures cannot decide a branch of the
/// closed forms, an enclosure of a divisor or of a square root's argument contains 0 or
/// less, a batch-norm variance's enclosure is not positive, or a value is not finite.
pub fn certify_eval(
    setting: &Setting,
    model: &Model,
    input: &ExactInput,
    bits: u32,
) -> Result<ExplicitEvaluation<Interval>> {
    check_bits(bits)?;
    check_shape(setting, input)?;
    let k = constants::<Interval>(setting, input, bits);
    certify_with(&k, model, input, bits)
}

/// Errors unless `input` has the shape of `setting`: `m >= 1` rows of `w` of length
/// `d >= 3` and an `m x m` head.
fn check_shape(setting: &Setting, input: &ExactInput) -> Result<()> {
    let m = setting.neurons;
    let d = usize::try_from(setting.dim).unwrap_or(usize::MAX);
    if m == 0 || d < 3 || input.w.len() != m || input.w.iter().any(|r| r.len() != d) {
        return Err(Error::invalid(
            "state.w",
            format!("expected {m} rows of {d} numbers (m >= 1, d >= 3)"),
        ));
    }
    if input.e.len() != m || input.e.iter().any(|r| r.len() != m) {
        return Err(Error::invalid(
            "state.e",
            format!("expected {m} rows of {m} numbers"),
        ));
    }
    Ok(())
}

/// Errors unless `bits` is a supported working precision.
fn check_bits(bits: u32) -> Result<()> {
    if (MIN_BITS..=MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(Error::invalid(
            "--certify-bits",
            format!("must be between {MIN_BITS} and {MAX_BITS} bits, got {bits}"),
        ))
    }
}

/// [`certify_eval`] with given constants and any interval type (the tests plant errors in
/// `k` and run the nearest-rounded control through the same path).
///
/// # Errors
///
/// As [`certify_eval`].
pub fn certify_with<const O: bool>(
    k: &Constants<Ival<O>>,
    model: &Model,
    input: &ExactInput,
    bits: u32,
) -> Result<ExplicitEvaluation<Ival<O>>> {
    let (ev, failure) = certified(|| evaluate_exact(k, model, input, bits));
    let ev = ev.map_err(not_certified_variance)?;
    if let Some(why) = failure {
        return Err(Error::numerical("state", format!("not certified: {why}")));
    }
    let field = if !ev.loss.is_finite() {
        Some("loss".to_string())
    } else {
        let bad = |rows: &[Vec<Ival<O>>], name: &str| {
            rows.iter().enumerate().find_map(|(j, r)| {
                r.iter()
                    .position(|x| !x.is_finite())
                    .map(|i| format!("{name}[{j}][{i}]"))
            })
        };
        bad(&ev.grad_w, "grad_w").or_else(|| bad(&ev.grad_e, "grad_e"))
    };
    if let Some(f) = field {
        return Err(Error::numerical(
            "state",
            format!("not certified: the enclosure of {f} is not finite"),
        ));
    }
    Ok(ev)
}

/// Enclosures of the population loss and gradient in reduced coordinates over a **box**
/// `x` of reduced states (every coordinate an interval, possibly wide): each returned
/// interval contains the value at every state of the box (eqs. (V6), (V10)). The building
/// block of a validated flow (`derivations/interval.md`, "Plan").
///
/// # Examples
/// ```
/// use predhead::certify::certify_reduced;
/// use predhead::interval::Interval;
/// use predhead::moments::population::{Constants, Reduced};
/// use predhead::scalar::Scalar;
/// use predhead::setting::{HeadMode, Model, Normalization, Setting};
/// use predhead::square::Square;
/// let s = Setting { dim: 10, patches: 4, feature_patches: 2, alpha: [4.0, 1.0],
///                   noise_std: 1.0, neurons: 2 };
/// let model = Model { head: HeadMode::IdentityOffdiag, normalization: Normalization::None,
///                     stop_gradient: true };
/// let iv = |lo: f64, hi: f64| Interval::from_f64(lo, 53).hull(&Interval::from_f64(hi, 53));
/// let x = Reduced {
///     a: vec![iv(0.30, 0.31), iv(-0.01, 0.01)],
///     b: vec![iv(0.10, 0.11), iv(0.20, 0.21)],
///     gram: Square::from_fn(2, |j, k| if j == k { iv(0.9, 1.0) } else { iv(-0.05, 0.05) }),
///     e: Square::from_fn(2, |j, r| if j == r { Interval::one(53) } else { iv(0.0, 0.01) }),
/// };
/// let ev = certify_reduced(&Constants::<Interval>::new(&s, 53), &model, &x).unwrap();
/// assert!(ev.loss.lo() < ev.loss.hi());
/// ```
///
/// # Errors
///
/// As [`certify_eval`] ("not certified" naming `state`).
pub fn certify_reduced<const O: bool>(
    k: &Constants<Ival<O>>,
    model: &Model,
    x: &Reduced<Ival<O>>,
) -> Result<crate::moments::population::Evaluation<Ival<O>>> {
    let (ev, failure) = certified(|| evaluate(k, model, x));
    let ev = ev.map_err(not_certified_variance)?;
    if let Some(why) = failure {
        return Err(Error::numerical("state", format!("not certified: {why}")));
    }
    let finite = ev.loss.is_finite()
        && ev.grad_a.iter().chain(&ev.grad_b).all(Scalar::is_finite)
        && ev.noise_coef.entries().iter().all(Scalar::is_finite)
        && ev.grad_e.entries().iter().all(Scalar::is_finite);
    if !finite {
        return Err(Error::numerical(
            "state",
            "not certified: an enclosure of the population gradient is not finite",
        ));
    }
    Ok(ev)
}

/// The right-hand side of the gradient flow in the reduced coordinates `(a, b, G, E)`
/// (`derivations/numerics.md`, eq. (F1); `derivations/interval.md`, eq. (V10)).
#[derive(Clone, Debug)]
pub struct ReducedRhs<S: Scalar> {
    /// `da_j/dtau = -g_a[j]`.
    pub a: Vec<S>,
    /// `db_j/dtau = -g_b[j]`.
    pub b: Vec<S>,
    /// `dG/dtau = -(Sigma G + G Sigma)`.
    pub gram: Square<S>,
    /// `dE_jr/dtau = -(lr_head/lr) dL/dE_jr` (0 where not trainable).
    pub e: Square<S>,
}

/// Eq. (F1) from an evaluation `ev` at the reduced state `x`, with `head_ratio = lr_head /
/// lr`, in any [`Scalar`]; with [`Interval`]s from [`certify_reduced`] it encloses the
/// exact right-hand side over the box (eq. (V10)).
///
/// # Examples
/// ```
/// use predhead::certify::reduced_rhs;
/// use predhead::moments::population::{evaluate, Constants, Reduced};
/// use predhead::setting::{HeadMode, Model, Normalization, Setting};
/// use predhead::square::Square;
/// let s = Setting { dim: 10, patches: 4, feature_patches: 2, alpha: [4.0, 1.0],
///                   noise_std: 1.0, neurons: 2 };
/// let model = Model { head: HeadMode::IdentityOffdiag, normalization: Normalization::None,
///                     stop_gradient: true };
/// let x = Reduced { a: vec![0.3, 0.1], b: vec![0.1, 0.2],
///                   gram: Square::from_fn(2, |j, k| if j == k { 1.0 } else { 0.0 }),
///                   e: Square::from_fn(2, |j, r| if j == r { 1.0 } else { 0.0 }) };
/// let ev = evaluate(&Constants::<f64>::new(&s, ()), &model, &x).unwrap();
/// let f = reduced_rhs(&x, &ev, &1.0);
/// assert_eq!(f.a[0], -ev.grad_a[0]);
/// ```
pub fn reduced_rhs<S: Scalar>(
    x: &Reduced<S>,
    ev: &crate::moments::population::Evaluation<S>,
    head_ratio: &S,
) -> ReducedRhs<S> {
    let m = x.neurons();
    let zero = S::zero(x.ctx());
    let sigma = &ev.noise_coef;
    let gram = Square::from_fn(m, |j, kk| {
        let mut acc = zero.clone();
        for l in 0..m {
            acc = acc
                + sigma.at(j, l).clone() * x.gram.at(l, kk).clone()
                + x.gram.at(j, l).clone() * sigma.at(l, kk).clone();
        }
        -acc
    });
    ReducedRhs {
        a: ev.grad_a.iter().map(|g| -g.clone()).collect(),
        b: ev.grad_b.iter().map(|g| -g.clone()).collect(),
        gram,
        e: Square::from_fn(m, |j, r| -(head_ratio.clone() * ev.grad_e.at(j, r).clone())),
    }
}

/// A batch-norm variance error of `evaluate` on enclosures, as "not certified".
fn not_certified_variance(e: Error) -> Error {
    match e {
        Error::Numerical { quantity, .. } if quantity.starts_with("population variance") => {
            Error::numerical(
                "state",
                format!(
                    "not certified: the enclosure of the {quantity} is not positive \
                     (batchnorm needs a positive variance)"
                ),
            )
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduced::evaluate_explicit;
    use crate::setting::{HeadMode, Normalization};

    /// With `f64` inputs and `S = f64`, [`evaluate_exact`] is bit-identical to
    /// `evaluate_explicit` (same operations, same order): the exact path adds nothing but
    /// the input enclosure.
    #[test]
    fn exact_path_is_the_explicit_path_in_f64() {
        let setting = Setting {
            dim: 5,
            patches: 6,
            feature_patches: 2,
            alpha: [2.3, 1.1],
            noise_std: 0.7,
            neurons: 3,
        };
        let mut st = State::with_identity_head(
            (0..3)
                .map(|j| {
                    (0..5)
                        .map(|i| 0.1 + 0.37 * ((i * 5 + j * 3) % 7) as f64 - 0.9)
                        .collect()
                })
                .collect(),
        );
        st.e[0][2] = 0.031;
        st.e[2][1] = -0.07;
        let model = Model {
            head: HeadMode::Linear,
            normalization: Normalization::Batchnorm,
            stop_gradient: false,
        };
        let input = ExactInput::from_f64(&setting, &st);
        let k = constants::<f64>(&setting, &input, ());
        let a = evaluate_exact::<f64>(&k, &model, &input, ()).unwrap();
        let b = evaluate_explicit::<f64>(&Constants::new(&setting, ()), &model, &st, ()).unwrap();
        assert_eq!(a.loss.to_bits(), b.loss.to_bits());
        assert_eq!(a.grad_w, b.grad_w);
        assert_eq!(a.grad_e, b.grad_e);
    }

    #[test]
    fn decimals_parse_exactly_and_junk_is_refused() {
        assert_eq!(parse_decimal("1e2").unwrap(), Rational::from(100));
        assert_eq!(parse_decimal("+.5").unwrap(), Rational::from((1, 2)));
        assert_eq!(parse_decimal("7.").unwrap(), Rational::from(7));
        assert_eq!(parse_decimal("-1.25E+1").unwrap(), Rational::from((-25, 2)));
        for bad in [
            "", "-", ".", "1e", "e5", "1.2.3", "inf", "nan", "1e999999", "--1",
        ] {
            assert!(parse_decimal(bad).is_none(), "{bad}");
        }
    }
}
