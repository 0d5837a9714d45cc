//! The calibration ensemble behind the tolerance of `tests/sgd_agreement.rs`
//! (`derivations/sgd.md`, Section 5): SGD from the same initial state as the flow, data seeds
//! 100..105, at both `(lr, N)` pairs; prints the event times and the largest relative
//! deviation from the flow in units of `lr + sqrt(lr/N) + 1/N`.
//!
//! Ignored (about 90 s in release mode on 2 cores). Run with
//! `cargo test --release --test sgd_calibration -- --ignored --nocapture`.

use predhead::config::parse_config;
use predhead::flow::integrate::{integrate, Options};
use predhead::reduced::reduce;
use predhead::sgd::{run, RunOptions, Sgd};

const CONFIG: &str = r#"
[setting]
dim = 32
patches = 4
feature_patches = 2
alpha = [3.0, 2.0]
noise_std = 1.0
neurons = 2
[model]
head = "identity-offdiag"
normalization = "batchnorm"
stop_gradient = true
[training]
lr = 0.01
lr_head = 0.01
horizon = 25.0
[phases]
t_end = 0.01
"#;

#[test]
#[ignore]
fn calibration_ensemble() {
    let base = parse_config(CONFIG).unwrap();
    let state = predhead::init::explicit(&base.setting, 0).unwrap();
    let mut opts = Options::new(&base);
    opts.stop_at_t_end = false;
    let flow = integrate(&base, &reduce::<f64>(&state, ()), &opts, &mut |_, _| Ok(()))
        .unwrap()
        .summary;
    let f = [flow.t1, flow.t2, flow.t3];
    eprintln!("flow: {f:?}");
    for (lr, n) in [(0.02, 256usize), (0.005, 2048)] {
        let unit = lr + (lr / n as f64).sqrt() + 1.0 / n as f64;
        let mut worst: f64 = 0.0;
        for seed in 100..106 {
            let mut config = base.clone();
            config.training.lr = lr;
            config.training.lr_head = lr;
            config.training.batch = n;
            config.training.steps = (base.training.horizon / lr).round() as u64;
            let mut sgd = Sgd::new(&config, state.clone(), seed).unwrap();
            let opts = RunOptions {
                record: predhead::observe::Cadence::ENDS,
                stop_at_t_end: false,
            };
            let s = run::<std::io::Sink>(&mut sgd, opts, None, |_| {}).unwrap();
            let g = [s.t1, s.t2, s.t3];
            for (x, y) in g.iter().zip(&f) {
                let rel = match (x, y) {
                    (Some(x), Some(y)) => (x - y).abs() / y,
                    _ => f64::INFINITY,
                };
                worst = worst.max(rel);
            }
            eprintln!("lr = {lr}, N = {n}, seed {seed}: {g:?}");
        }
        eprintln!(
            "lr = {lr}, N = {n}: worst relative deviation {worst:.3} = {:.1} units",
            worst / unit
        );
    }
}
