//! Gaussian moments of cube projections of the noise (`derivations/noise.md`).
//!
//! For `xi ~ N(0, s^2 Pi)` and noise-space vectors `u_i, u_j` with Gram entries
//! `G_ij = <u_i, u_j>`, the projections `x = <u_i, xi>`, `y = <u_j, xi>` are jointly
//! Gaussian with `E[x^2] = s^2 G_ii`, `E[y^2] = s^2 G_jj`, `E[xy] = s^2 G_ij`, and by
//! Isserlis' theorem
//! `E[x^3 y^3] = 9 E[x^2] E[y^2] E[xy] + 6 E[xy]^3` (eq. (N2)),
//! so `Psi_ij = s^6 (9 G_ii G_jj G_ij + 6 G_ij^3)` (eq. (N3)); odd moments vanish (eq. (N1)).

use crate::scalar::Scalar;

/// `Psi_ij = E[<u_i, xi>^3 <u_j, xi>^3] = s^6 (9 G_ii G_jj G_ij + 6 G_ij^3)`
/// (`derivations/noise.md`, eq. (N3)).
pub fn cube_moment<S: Scalar>(s6: &S, gii: &S, gjj: &S, gij: &S) -> S {
    let nine = s6.cst(9.0);
    let six = s6.cst(6.0);
    cube_moment_from(s6, &(nine * gii.clone()), gjj, gij, &six)
}

/// [`cube_moment`] from `9 G_ii` and the constant `6`, for loops that reuse them: the same
/// operations in the same order, `s^6 (((9 G_ii) G_jj) G_ij + 6 G_ij^3)`, so the same value.
#[inline(always)]
pub fn cube_moment_from<S: Scalar>(s6: &S, nine_gii: &S, gjj: &S, gij: &S, six: &S) -> S {
    s6.clone() * (nine_gii.clone() * gjj.clone() * gij.clone() + six.clone() * gij.cube())
}
