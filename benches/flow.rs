//! One gradient-flow trajectory from the exact reduced initialization to `t_end`, for
//! `d = 1e2, 1e4, 1e6, 1e9, 1e12` (`m = 2`, the paper's head, batchnorm, stop-gradient,
//! default tolerances). The cost should be flat in `d` (at most `log d` growth).
//!
//! Run: `cargo bench --bench flow` (environment `FLOW_BENCH_RTOL` overrides the relative
//! tolerance, default 1e-9, the absolute ones following it as in `Options::new`;
//! `FLOW_BENCH_PAIRS=dopri5,ros4` selects the explicit and the Rosenbrock method, default
//! `dop853,rodas5`; `FLOW_BENCH_COORDS=plain|decay` the coordinates, default decay). Before the timings it prints, for each `d`, the event
//! times, the right-hand-side evaluations, the Jacobians (one dual-number pass each, not counted
//! in the evaluations) and the steps of one trajectory. The figures are recorded in
//! benches/README.md, "Flow".

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use predhead::config::parse_config;
use predhead::flow::problem::Coordinates;
use predhead::flow::{integrate, Explicit, Options, Stiff};
use predhead::setting::Config;
use std::hint::black_box;
use std::time::Duration;

const DIMS: [u64; 5] = [100, 10_000, 1_000_000, 1_000_000_000, 1_000_000_000_000];

fn config(dim: u64) -> Config {
    parse_config(&format!(
        r#"
[setting]
dim = {dim}
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
"#
    ))
    .expect("bench config")
}

fn trajectory(c: &Config) -> predhead::flow::Run {
    let x0 = predhead::init::reduced(&c.setting, 0).expect("init");
    let mut opts = Options::new(c);
    opts.stop_at_t_end = true;
    if let Some(r) = std::env::var("FLOW_BENCH_RTOL")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        opts.tol = Options::default_tolerance(r, c.setting.dim);
    }
    if let Ok(coords) = std::env::var("FLOW_BENCH_COORDS") {
        opts.coordinates = Some(match coords.as_str() {
            "plain" => Coordinates::Plain,
            "decay" => Coordinates::Decay,
            other => panic!("FLOW_BENCH_COORDS: plain or decay, got {other}"),
        });
    }
    if let Ok(pairs) = std::env::var("FLOW_BENCH_PAIRS") {
        let (e, s) = pairs
            .split_once(',')
            .expect("FLOW_BENCH_PAIRS=explicit,stiff");
        opts.explicit = Explicit::from_name(e).expect("dop853 or dopri5");
        opts.stiff = Stiff::from_name(s).expect("rodas5 or ros4");
    }
    integrate(c, &x0, &opts, &mut |_, _| Ok(())).expect("flow")
}

fn bench(crit: &mut Criterion) {
    for d in DIMS {
        let run = trajectory(&config(d));
        let s = &run.summary;
        println!(
            "d = {d:e}: t1 = {:?}, t2 = {:?}, t3 = {:?}, t_end = {:?}, outcome = {}, rhs_evals = {}, jacobians = {}, steps = {} (rejected {})",
            s.t1,
            s.t2,
            s.t3,
            s.t_end,
            s.outcome.name(),
            s.rhs_evals.unwrap_or(0),
            run.jacobians,
            s.steps,
            s.rejected_steps.unwrap_or(0)
        );
    }
    let mut g = crit.benchmark_group("flow_to_t_end");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for d in DIMS {
        let c = config(d);
        g.bench_with_input(BenchmarkId::from_parameter(format!("{d:e}")), &c, |b, c| {
            b.iter(|| black_box(trajectory(c)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
