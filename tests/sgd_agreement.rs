//! SGD on explicit data agrees with the exact population gradient flow
//! (`derivations/sgd.md`, Section 5).
//!
//! At `d = 32` (config below: all four phases by flow time 12.4, both features learned by
//! flow time 60), both solvers start from the same explicit state (the paper's
//! initialization, seed 0; the flow gets it through `reduced::reduce`) and run to flow time
//! `tau = 60`. For two pairs `(lr, N)`, SGD (data
//! seed 0) must have the flow's phase order, strong neuron and outcome, and every event time
//! and the final `a_s`, `b_k` within
//!
//! ```text
//! tol(lr, N) = C * (lr + sqrt(lr / N) + 1 / N) * scale,     C = 25,
//! ```
//!
//! relative to the flow's value (`scale` = the flow's time or coordinate): Euler
//! discretization bias `O(lr)`, SGD noise `O(sqrt(lr/N))` in flow time, batch-norm bias
//! `O(1/N)`. `C` is the amplification through the phases, calibrated on an ensemble of data
//! seeds 100..105 at the coarse pair (`tests/sgd_calibration.rs`, ignored; the table in
//! derivations/sgd.md, Section 5); the same `C` then predicts the tolerance at the fine pair,
//! which is 4.6 times smaller. Deterministic: fixed seeds; a re-seeded run would fail about
//! 1 time in 10 at the coarse pair (one of the six calibration seeds came within 20% of the
//! bound) and far less often at the fine pair. Run time: about 25 s in release mode on
//! 2 cores.

use predhead::config::parse_config;
use predhead::flow::integrate::{integrate, Options};
use predhead::observe::Summary;
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
horizon = 60.0
[phases]
t_end = 0.01
"#;

/// The constant of the tolerance (see the module docs and derivations/sgd.md, Section 5).
const C: f64 = 25.0;

fn tolerance(lr: f64, n: usize) -> f64 {
    C * (lr + (lr / n as f64).sqrt() + 1.0 / n as f64)
}

fn times(s: &Summary) -> [Option<f64>; 4] {
    [s.t1, s.t2, s.t3, s.t_end]
}

#[test]
fn sgd_matches_the_flow_with_a_tolerance_that_shrinks() {
    let base = parse_config(CONFIG).unwrap();
    let horizon = base.training.horizon;
    let state = predhead::init::explicit(&base.setting, 0).unwrap();
    let x0 = reduce::<f64>(&state, ());
    let mut opts = Options::new(&base);
    opts.stop_at_t_end = false;
    let flow = integrate(&base, &x0, &opts, &mut |_, _| Ok(()))
        .unwrap()
        .summary;
    let ft = times(&flow);
    // The configuration does what the test needs: all four phases, in order, before the
    // horizon.
    let f: Vec<f64> = ft.iter().map(|t| t.expect("flow phase")).collect();
    assert!(
        f[0] < f[1] && f[1] < f[2] && f[2] <= f[3],
        "flow phases {f:?}"
    );
    let s = flow.strong_neuron.unwrap();
    let k = 1 - s;
    eprintln!(
        "flow: t = {f:?}, a_s = {}, b_k = {}, outcome {:?}",
        flow.a_final[s], flow.b_final[k], flow.outcome
    );

    let mut last_tol = f64::INFINITY;
    for (lr, n) in [(0.02, 256usize), (0.005, 2048)] {
        let mut config = base.clone();
        config.training.lr = lr;
        config.training.lr_head = lr;
        config.training.batch = n;
        config.training.steps = (horizon / lr).round() as u64;
        let mut sgd = Sgd::new(&config, state.clone(), 0).unwrap();
        let opts = RunOptions {
            record: predhead::observe::Cadence::ENDS,
            stop_at_t_end: false,
        };
        let got = run::<std::io::Sink>(&mut sgd, opts, None, |_| {}).unwrap();
        let tol = tolerance(lr, n);
        assert!(tol < last_tol);
        last_tol = tol;
        let gt = times(&got);
        eprintln!(
            "sgd lr = {lr}, N = {n}: t = {gt:?}, a_s = {}, b_k = {}, outcome {:?}, tol = {tol:.3} relative",
            got.a_final[s], got.b_final[k], got.outcome
        );
        assert_eq!(got.strong_neuron, flow.strong_neuron, "lr = {lr}, N = {n}");
        assert_eq!(got.outcome, flow.outcome, "lr = {lr}, N = {n}");
        let g: Vec<f64> = gt
            .iter()
            .zip(["t1", "t2", "t3", "t_end"])
            .map(|(t, name)| t.unwrap_or_else(|| panic!("lr = {lr}, N = {n}: {name} never")))
            .collect();
        assert!(
            g[0] < g[1] && g[1] < g[2] && g[2] <= g[3],
            "phase order {g:?}"
        );
        for (i, name) in ["t1", "t2", "t3", "t_end"].iter().enumerate() {
            let rel = (g[i] - f[i]).abs() / f[i];
            assert!(
                rel <= tol,
                "lr = {lr}, N = {n}: {name} = {} vs flow {} (relative {rel:.3} > {tol:.3})",
                g[i],
                f[i]
            );
        }
        for (name, x, y) in [
            ("a_s", got.a_final[s], flow.a_final[s]),
            ("b_k", got.b_final[k], flow.b_final[k]),
        ] {
            let rel = (x - y).abs() / y.abs();
            assert!(
                rel <= tol,
                "lr = {lr}, N = {n}: final {name} = {x} vs flow {y}"
            );
        }
    }
}
