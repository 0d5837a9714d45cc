//! Flows at large m (`derivations/numerics.md`, "Flows at large m"): one trajectory of the
//! README setting at `d = 1000` (`P = 4`, `P0 = 2`, `alpha = [4, 1]`, `s = 1`, batchnorm,
//! stop-gradient, seed 0, default tolerances) to the horizon `1e3 d^2`.
//!
//! - group `flow_frozen_m` (Theorem 4.3: `E = I` frozen), `m = 4, 8, 16, 32, 64`: `m <= 8`
//!   on the general path with the dense exact Jacobian, `m >= 9` on the separable path;
//! - group `flow_frozen_rosenbrock_m`: the same with `--method rosenbrock`, so that every
//!   step goes through the Jacobian and its factorization (`m = 16, 32, 64`: the compact
//!   Jacobian and the block LU);
//! - group `flow_offdiag_m`: the paper's head (`identity-offdiag`), `m = 4, 8` on the dense
//!   exact Jacobian; with `FLOW_BENCH_LARGE=1` also `m = 16, 32, 64` on the matrix-free
//!   Rodas5 stages (`flow::krylov`, eqs. (K5)-(K8); minutes to hours per sample: see
//!   `benches/README.md`).
//!
//! Run: `cargo bench --bench flow_large_m -- --warm-up-time 1 --measurement-time 3`. Before
//! the timings it prints the steps, evaluations and Jacobians of each trajectory. Figures in
//! `benches/README.md`, "Flow at large m".

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use predhead::config::parse_config;
use predhead::flow::{integrate, Method, Options};
use predhead::setting::Config;
use std::hint::black_box;

fn config(head: &str, m: usize) -> Config {
    parse_config(&format!(
        r#"
[setting]
dim = 1000
patches = 4
feature_patches = 2
alpha = [4.0, 1.0]
noise_std = 1.0
neurons = {m}

[model]
head = "{head}"
normalization = "batchnorm"
stop_gradient = true
"#
    ))
    .expect("bench config")
}

fn trajectory(c: &Config, method: Method) -> predhead::flow::Run {
    let x0 = predhead::init::reduced(&c.setting, 0).expect("init");
    let mut opts = Options::new(c);
    opts.method = method;
    integrate(c, &x0, &opts, &mut |_, _| Ok(())).expect("flow")
}

fn bench(crit: &mut Criterion) {
    let large = std::env::var("FLOW_BENCH_LARGE").is_ok_and(|v| v == "1");
    let offdiag: &[usize] = if large { &[4, 8, 16, 32, 64] } else { &[4, 8] };
    let groups: [(&str, &str, Method, &[usize]); 3] = [
        ("flow_frozen_m", "frozen", Method::Auto, &[4, 8, 16, 32, 64]),
        (
            "flow_frozen_rosenbrock_m",
            "frozen",
            Method::Rosenbrock,
            &[16, 32, 64],
        ),
        ("flow_offdiag_m", "identity-offdiag", Method::Auto, offdiag),
    ];
    for (name, head, method, ms) in groups {
        for &m in ms {
            let run = trajectory(&config(head, m), method);
            let s = &run.summary;
            println!(
                "{name} m = {m}: t1 = {:?}, t3 = {:?}, outcome = {}, steps = {} (rejected {}, Rosenbrock {}), rhs_evals = {}, jacobians = {}, matrix-free products/iterations/solves = {:?}",
                s.t1,
                s.t3,
                s.outcome.name(),
                s.steps,
                s.rejected_steps.unwrap_or(0),
                run.steps_by_method[1],
                s.rhs_evals.unwrap_or(0),
                run.jacobians,
                run.krylov_counts,
            );
        }
        let mut g = crit.benchmark_group(name);
        g.sample_size(10);
        for &m in ms {
            let c = config(head, m);
            g.bench_with_input(BenchmarkId::from_parameter(m), &c, |b, c| {
                b.iter(|| black_box(trajectory(c, method)))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
