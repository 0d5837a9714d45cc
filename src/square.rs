//! A small dense square matrix over any [`Scalar`], for the `m x m` blocks of the
//! population formulas (`m` is the number of neurons, a handful). faer serves the `f64`
//! linear algebra of the solvers; this type exists because the same formulas must also run
//! in MPFR.

use crate::scalar::Scalar;

/// An `n x n` matrix stored row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Square<S> {
    n: usize,
    data: Vec<S>,
}

impl<S> Square<S> {
    /// From row-major entries (`entries.len() == n * n`).
    pub fn from_entries(n: usize, entries: Vec<S>) -> Self {
        assert_eq!(entries.len(), n * n, "Square::from_entries: wrong length");
        Square { n, data: entries }
    }

    /// The size `n`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Entry `(i, j)`.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> &S {
        &self.data[i * self.n + j]
    }

    /// Mutable entry `(i, j)`.
    #[inline]
    pub fn at_mut(&mut self, i: usize, j: usize) -> &mut S {
        &mut self.data[i * self.n + j]
    }

    /// Entries in row-major order.
    pub fn entries(&self) -> &[S] {
        &self.data
    }

    /// Mutable entries in row-major order.
    pub fn entries_mut(&mut self) -> &mut [S] {
        &mut self.data
    }

    /// The mutable rows, in order (none when `n = 0`).
    #[inline]
    pub fn rows_mut(&mut self) -> std::slice::ChunksExactMut<'_, S> {
        self.data.chunks_exact_mut(self.n.max(1))
    }

    /// Overwrites every entry in place: `A[i][j] = f(i, j)`, row-major order.
    pub fn fill_with(&mut self, mut f: impl FnMut(usize, usize) -> S) {
        for (i, row) in self.rows_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = f(i, j);
            }
        }
    }

    /// `A[i][j] = f(i, j)`.
    pub fn from_fn(n: usize, mut f: impl FnMut(usize, usize) -> S) -> Self {
        let mut data = Vec::with_capacity(n * n);
        for i in 0..n {
            for j in 0..n {
                data.push(f(i, j));
            }
        }
        Square { n, data }
    }
}

impl<S: Scalar> Square<S> {
    /// The zero matrix.
    pub fn zeros(n: usize, ctx: S::Ctx) -> Self {
        Square {
            n,
            data: vec![S::zero(ctx); n * n],
        }
    }

    /// The identity.
    pub fn identity(n: usize, ctx: S::Ctx) -> Self {
        Self::from_fn(n, |i, j| S::from_f64(if i == j { 1.0 } else { 0.0 }, ctx))
    }

    /// From rows of `f64`, lifted to `ctx`.
    pub fn from_rows_f64(rows: &[Vec<f64>], ctx: S::Ctx) -> Self {
        Self::from_fn(rows.len(), |i, j| S::from_f64(rows[i][j], ctx))
    }

    /// The transpose.
    pub fn transpose(&self) -> Self {
        Self::from_fn(self.n, |i, j| self.at(j, i).clone())
    }

    /// The rows as `f64`.
    pub fn to_rows_f64(&self) -> Vec<Vec<f64>> {
        (0..self.n)
            .map(|i| (0..self.n).map(|j| self.at(i, j).to_f64()).collect())
            .collect()
    }
}
