//! Reduced SGD against the gradient flow from one reduced initial state, at any `d`
//! (`docs/sgd_reduced_flow.md`, issue 20): prints the flow's event times, then each SGD
//! run's, and the mean relative deviations of `t1` and `t3` with their standard errors.
//!
//!     cargo run --release --example sgd_flow_convergence -- D LR BATCH RUNS
//!
//! The setting is that of `docs/sgd_reduced_flow.md` (`P = 4`, `P0 = 2`, `alpha = (3, 2)`,
//! `s = 1`, `m = 2`, the paper's head, batch norm, stop-gradient, `lr_head = lr`,
//! `t_end = 0.01`) with `dim = D`. The initial state is the reduced initialization of seed 4
//! drawn at `d = 100`, the same `(a, b, G, E)` at every `D`: the population flow in reduced
//! coordinates does not depend on `d`, so its event times are those of `d = 100` at every
//! `D`, and `D` enters SGD only through the Wishart degrees of freedom `k = D - 2 - rho`
//! (`derivations/sgd_reduced.md`, (R7) and (R12)-(R13)). SGD run `i` (1-based) uses data seed
//! `i` and stops at `t_end` or at flow time 60.

use predhead::config::parse_config;
use predhead::flow::integrate::integrate;
use predhead::report::runner::flow_options;
use predhead::setting::Config;
use predhead::sgd::RunOptions;
use predhead::sgd_reduced::{run, ReducedSgd};

/// The configuration at dimension `d` with `steps = ceil(60 / lr)`.
fn config(d: u64, lr: f64, batch: usize) -> predhead::Result<Config> {
    parse_config(&format!(
        "[setting]\ndim = {d}\npatches = 4\nfeature_patches = 2\nalpha = [3.0, 2.0]\n\
         noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
         normalization = \"batchnorm\"\nstop_gradient = true\n[training]\nlr = {lr}\n\
         lr_head = {lr}\nbatch = {batch}\nsteps = {}\nhorizon = 2000\n[phases]\nt_end = 0.01\n",
        (60.0 / lr).ceil()
    ))
}

/// Mean and standard error of the finite entries, and how many were not finite.
fn mean_se(v: &[f64]) -> (f64, f64, usize) {
    let x: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt(), v.len() - x.len())
}

fn main() -> predhead::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: sgd_flow_convergence D LR BATCH RUNS";
    let arg = |i: usize| {
        args.get(i)
            .ok_or_else(|| predhead::Error::invalid("args", usage))
    };
    let parse = |i: usize| -> predhead::Result<f64> {
        arg(i)?
            .parse::<f64>()
            .map_err(|_| predhead::Error::invalid("args", usage))
    };
    let (d, lr, batch, runs) = (parse(0)? as u64, parse(1)?, parse(2)? as usize, parse(3)?);
    let x0 = predhead::init::reduced(&config(100, lr, batch)?.setting, 4)?;
    let c = config(d, lr, batch)?;
    let flow = integrate::<f64>(&c, &x0, &flow_options(&c), &mut |_, _| Ok(()))?.summary;
    let (f1, f3) = (flow.t1.unwrap_or(f64::NAN), flow.t3.unwrap_or(f64::NAN));
    println!("flow: t1 = {f1:.6}, t3 = {f3:.6}, t_end = {:?}", flow.t_end);
    let (mut d1, mut d3) = (Vec::new(), Vec::new());
    for seed in 1..=runs as u64 {
        let mut sgd = ReducedSgd::new(&c, x0.clone(), seed)?;
        let options = RunOptions {
            record: predhead::observe::Cadence::ENDS,
            stop_at_t_end: true,
        };
        let s = run::<std::io::Sink>(&mut sgd, options, None, |_| {})?;
        let rel = |t: Option<f64>, f: f64| t.map_or(f64::NAN, |t| t / f - 1.0);
        d1.push(rel(s.t1, f1));
        d3.push(rel(s.t3, f3));
        println!(
            "run {seed}: t1 = {:?}, t3 = {:?}, t_end = {:?}",
            s.t1, s.t3, s.t_end
        );
    }
    for (name, v) in [("t1", &d1), ("t3", &d3)] {
        let (mean, se, missing) = mean_se(v);
        let abs: Vec<f64> = v.iter().map(|x| x.abs()).collect();
        let (mabs, _, _) = mean_se(&abs);
        println!(
            "d = {d}, lr = {lr}, N = {batch}, lr k / N = {:.3e}: {name}/flow - 1 = {mean:+.4} \
             (se {se:.4}), mean abs {mabs:.4}, never reached in {missing} of {runs}",
            lr * (d as f64 - 4.0) / batch as f64
        );
    }
    Ok(())
}
