//! The augmented system `(y, S_1..S_k)` of the flow and its sensitivities
//! (`derivations/sensitivities.md`, eqs. (Y1)-(Y5)): its right-hand side in one tangent pass,
//! and the blocks `J` and `H_i` of its Jacobian in tangent-over-dual passes.

use crate::error::Result;
use crate::flow::dual::Dual;
use crate::flow::problem::{Coordinates, Problem, Workspace};
use crate::flow::sensitivity::params::{seeded_constants, seeded_state, Inputs};
use crate::flow::sensitivity::tangent::Tangent;
use crate::moments::population::{Constants, Reduced};
use crate::setting::Config;

/// Columns of the Jacobian per dual pass.
const COLS: usize = 16;

/// The flow at `inputs` with the tangents of `dirs`, in scalar `Tangent<T, K>`.
pub(crate) fn seeded_problem<T: crate::scalar::Scalar, const K: usize>(
    config: &Config,
    inputs: &Inputs,
    dirs: &[Inputs],
    coordinates: Coordinates,
    ctx: T::Ctx,
    drop: Option<usize>,
) -> Problem<Tangent<T, K>> {
    let x0 = seeded_state::<T, K>(inputs, dirs, ctx);
    let mut p = Problem::with_coordinates(config, &x0, coordinates, ctx);
    let (k, ratio) = seeded_constants::<T, K>(&config.setting, inputs, dirs, ctx, drop);
    p.constants = k;
    p.head_ratio = ratio;
    p.set_separable(false);
    p
}

/// A tangent evaluation: the reduced state, the right-hand side and the loss.
pub(crate) type TangentEval<const K: usize> = (
    Reduced<Tangent<f64, K>>,
    Vec<Tangent<f64, K>>,
    Tangent<f64, K>,
);

/// The augmented right-hand side and Jacobian for `k <= K` parameters.
pub(crate) struct Augmented<const K: usize> {
    /// State length `n`.
    pub n: usize,
    /// Number of parameters `k`.
    pub k: usize,
    /// The flow in `Tangent<f64, K>` (the parameters seeded).
    pub problem: Problem<Tangent<f64, K>>,
    ws: Workspace<Tangent<f64, K>>,
    y: Vec<Tangent<f64, K>>,
    dy: Vec<Tangent<f64, K>>,
    jproblem: Problem<Tangent<Dual<COLS>, K>>,
    jws: Workspace<Tangent<Dual<COLS>, K>>,
    jy: Vec<Tangent<Dual<COLS>, K>>,
    jdy: Vec<Tangent<Dual<COLS>, K>>,
}

impl<const K: usize> Augmented<K> {
    pub(crate) fn new(
        config: &Config,
        inputs: &Inputs,
        dirs: &[Inputs],
        coordinates: Coordinates,
        drop: Option<usize>,
    ) -> Self {
        let problem = seeded_problem::<f64, K>(config, inputs, dirs, coordinates, (), drop);
        let jproblem = seeded_problem::<Dual<COLS>, K>(config, inputs, dirs, coordinates, (), drop);
        let n = problem.len();
        let zero = Tangent::<f64, K>::constant(0.0);
        let jzero = Tangent::<Dual<COLS>, K>::constant(Dual::constant(0.0));
        Augmented {
            n,
            k: dirs.len(),
            ws: problem.workspace(),
            problem,
            y: vec![zero.clone(); n],
            dy: vec![zero; n],
            jws: jproblem.workspace(),
            jproblem,
            jy: vec![jzero.clone(); n],
            jdy: vec![jzero; n],
        }
    }

    /// The augmented length `n (1 + k)`.
    pub(crate) fn len(&self) -> usize {
        self.n * (1 + self.k)
    }

    /// Loads the augmented vector `(y, S_1..S_k)` into the tangent state.
    fn load(&mut self, ya: &[f64]) {
        let (n, k) = (self.n, self.k);
        for (i, t) in self.y.iter_mut().enumerate() {
            t.v = ya[i];
            for p in 0..K {
                t.d[p] = if p < k { ya[n + p * n + i] } else { 0.0 };
            }
            t.n = k;
        }
    }

    /// `(f(y), J S_i + dF/dtheta_i)` (eq. (Y1)) into `out`.
    pub(crate) fn rhs(&mut self, ya: &[f64], out: &mut [f64]) -> Result<()> {
        self.load(ya);
        self.problem.rhs_into(&self.y, &mut self.ws, &mut self.dy)?;
        let (n, k) = (self.n, self.k);
        for (i, t) in self.dy.iter().enumerate() {
            out[i] = t.v;
            for p in 0..k {
                out[n + p * n + i] = t.d[p];
            }
        }
        Ok(())
    }

    /// The tangent state and evaluation at `ya` (for the event and final derivatives):
    /// `y` with the tangents `S_i` and the right-hand side with `J S_i + dF/dtheta_i`.
    pub(crate) fn eval_tangent(&mut self, ya: &[f64]) -> Result<TangentEval<K>> {
        self.load(ya);
        self.problem.rhs_into(&self.y, &mut self.ws, &mut self.dy)?;
        Ok((
            self.problem.unpack(&self.y),
            self.dy.clone(),
            self.ws.eval.loss.clone(),
        ))
    }

    /// The state `y` with the single tangent direction `v` (the parameters not seeded),
    /// in the first tangent slot: the derivatives along the flow when `v = f(y)`.
    pub(crate) fn eval_along(&mut self, y: &[f64], v: &[f64]) -> Result<TangentEval<K>> {
        for (i, t) in self.y.iter_mut().enumerate() {
            t.v = y[i];
            t.d = [0.0; K];
            if K > 0 {
                t.d[0] = v[i];
            }
            t.n = 1;
        }
        // Parameters unseeded: the plain constants with the first tangent along v only.
        let saved = (
            self.problem.constants.clone(),
            self.problem.head_ratio.clone(),
        );
        self.problem.constants = unseeded(&saved.0);
        self.problem.head_ratio = Tangent::constant(saved.1.v);
        let r = self.problem.rhs_into(&self.y, &mut self.ws, &mut self.dy);
        let out = (
            self.problem.unpack(&self.y),
            self.dy.clone(),
            self.ws.eval.loss.clone(),
        );
        (self.problem.constants, self.problem.head_ratio) = saved;
        r.map(|()| out)
    }

    /// The blocks of the augmented Jacobian at `ya` (eq. (Y5)): `J` (row-major `n x n`)
    /// into `jac`, `H_i = d(J S_i + dF/dtheta_i)/dy` into `h[i n^2 ..]`; `f(y)` into `f`.
    pub(crate) fn jacobian(
        &mut self,
        ya: &[f64],
        f: &mut [f64],
        jac: &mut [f64],
        h: &mut [f64],
    ) -> Result<()> {
        let (n, k) = (self.n, self.k);
        let mut from = 0;
        while from < n {
            for (i, t) in self.jy.iter_mut().enumerate() {
                t.v = Dual::variable(ya[i], i.wrapping_sub(from));
                for p in 0..K {
                    t.d[p] = Dual::constant(if p < k { ya[n + p * n + i] } else { 0.0 });
                }
                t.n = k;
            }
            self.jproblem
                .rhs_into(&self.jy, &mut self.jws, &mut self.jdy)?;
            let cols = COLS.min(n - from);
            for (i, t) in self.jdy.iter().enumerate() {
                f[i] = t.v.v;
                jac[i * n + from..i * n + from + cols].copy_from_slice(&t.v.d[..cols]);
                for p in 0..k {
                    let row = p * n * n + i * n;
                    h[row + from..row + from + cols].copy_from_slice(&t.d[p].d[..cols]);
                }
            }
            from += COLS;
        }
        Ok(())
    }

    /// The constants of the tangent problem (values and parameter tangents).
    pub(crate) fn constants(&self) -> &Constants<Tangent<f64, K>> {
        &self.problem.constants
    }
}

/// The constants with their values and zero tangents.
pub(crate) fn unseeded<const K: usize>(
    c: &Constants<Tangent<f64, K>>,
) -> Constants<Tangent<f64, K>> {
    let u = |t: &Tangent<f64, K>| Tangent::<f64, K>::constant(t.v);
    Constants {
        ek2: u(&c.ek2),
        ekk: u(&c.ekk),
        ek2_minus_ekk: u(&c.ek2_minus_ekk),
        kappa: u(&c.kappa),
        opt_neuron: u(&c.opt_neuron),
        n: u(&c.n),
        h: [u(&c.h[0]), u(&c.h[1])],
        s6: u(&c.s6),
        p0_sq: u(&c.p0_sq),
        noise_full: u(&c.noise_full),
        overlap: c.overlap.clone(),
    }
}

/// The values of the constants, in `f64`.
pub(crate) fn values<const K: usize>(c: &Constants<Tangent<f64, K>>) -> Constants<f64> {
    Constants {
        ek2: c.ek2.v,
        ekk: c.ekk.v,
        ek2_minus_ekk: c.ek2_minus_ekk.v,
        kappa: c.kappa.v,
        opt_neuron: c.opt_neuron.v,
        n: c.n.v,
        h: [c.h[0].v, c.h[1].v],
        s6: c.s6.v,
        p0_sq: c.p0_sq.v,
        noise_full: c.noise_full.v,
        overlap: c.overlap.clone(),
    }
}
