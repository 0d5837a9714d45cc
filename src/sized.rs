//! [`with_neurons!`](crate::sized::with_neurons): one code path for every number of neurons
//! `m`, instantiated with `m` a compile-time constant for the small `m` of the flow and of
//! reduced SGD.

/// Evaluates `$body` with the constant `$M` set to `$m` when `1 <= $m <= 4`, else to `0`
/// (the callee then reads `m` at run time). The callee's loops over neurons are unrolled and
/// their bounds checks dropped when `$M > 0`: the same operations in the same order, so the
/// same values, for every `m`.
///
/// ```text
/// with_neurons!(m, |M| evaluate_sized::<S, M>(k, model, x, out))
/// ```
macro_rules! with_neurons {
    ($m:expr, |$M:ident| $body:expr) => {
        match $m {
            1 => {
                const $M: usize = 1;
                $body
            }
            2 => {
                const $M: usize = 2;
                $body
            }
            3 => {
                const $M: usize = 3;
                $body
            }
            4 => {
                const $M: usize = 4;
                $body
            }
            _ => {
                const $M: usize = 0;
                $body
            }
        }
    };
}
pub(crate) use with_neurons;

/// The number of neurons: the constant `M` when it is positive (the caller dispatches on
/// `neurons` with [`with_neurons`], so the two agree), else `neurons`.
pub(crate) fn width<const M: usize>(neurons: usize) -> usize {
    if M > 0 {
        M
    } else {
        neurons
    }
}
