// SCRATCH profiling example (to be deleted).
use predhead::config::parse_config;
use predhead::flow::problem::Problem;
use predhead::flow::{integrate, Options};
use std::time::Instant;

fn main() {
    let d: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000_000_000);
    let rtol: f64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(1e-9);
    let c = parse_config(&format!(r#"
[setting]
dim = {d}
patches = 8
feature_patches = 2
alpha = [2.0, 1.0]
noise_std = 1.0
neurons = 2
[model]
head = "identity-offdiag"
normalization = "batchnorm"
stop_gradient = true
[training]
lr = 1e-3
lr_head = 2e-4
"#)).unwrap();
    let x0 = predhead::init::reduced(&c.setting, 0).unwrap();
    let mut opts = Options::new(&c);
    opts.stop_at_t_end = true;
    opts.tol.rtol = rtol;
    opts.tol.atol = Options::default_atol(rtol, d);
    opts.tol.atol_head = Options::DEFAULT_ATOL_HEAD_FACTOR * rtol;
    let n = 20;
    let t = Instant::now();
    let mut run = None;
    for _ in 0..n {
        run = Some(integrate(&c, &x0, &opts, &mut |_, _| Ok(())).unwrap());
    }
    let el = t.elapsed().as_secs_f64() / n as f64;
    let run = run.unwrap();
    let s = &run.summary;
    let ts = [s.t1.unwrap(), s.t2.unwrap(), s.t3.unwrap(), f64::INFINITY];
    let mut cnt = [0usize; 4];
    integrate(&c, &x0, &opts, &mut |t, _| { let i = ts.iter().position(|&x| t < x).unwrap_or(3); cnt[i] += 1; Ok(()) }).unwrap();
    println!("samples by phase (<t1, <t2, <t3, rest): {cnt:?}");
    let s = &run.summary;
    println!("d={d:e} rtol={rtol:e} time {:.3} ms evals {:?} steps {} rej {:?} by_method {:?} switches {} stiff_from {:?}",
        el * 1e3, s.rhs_evals, s.steps, s.rejected_steps, run.steps_by_method, run.switches, run.stiff_from);
    println!("t1 {:?} t2 {:?} t3 {:?} tend {:?}", s.t1, s.t2, s.t3, s.t_end);
    // RHS cost at the final state
    let problem = Problem::with_coordinates(&c, &x0.e, predhead::flow::problem::Coordinates::Decay, ());
    let y = problem.pack(&run.final_state);
    let mut ws = problem.workspace();
    let k = 200_000;
    let t = Instant::now();
    let mut acc = 0.0;
    for _ in 0..k { acc += problem.rhs_with(std::hint::black_box(&y), &mut ws).unwrap()[0]; }
    println!("rhs {:.3} us ({acc:e})", t.elapsed().as_secs_f64() / k as f64 * 1e6);
}
