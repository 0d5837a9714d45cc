//! Stiffness of the flow, measured: the spectrum of the Jacobian of the right-hand side
//! along a trajectory (`derivations/numerics.md`, Section "Stiffness").

use predhead::config::parse_config;
use predhead::flow::stiffness::spectrum;
use predhead::flow::{integrate, Method, Options, Problem};
use predhead::moments::population::Reduced;

const BASE: &str = r#"
[setting]
dim = 100
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
horizon = 1e5
"#;

/// After the features are learned (tau = 1e5 = 10 d^2 at d = 100) the flow is stiff: the
/// fastest relaxation rate |lambda_max| is O(1-10) while the state moves on the time scale
/// tau (the noise part decays algebraically), so |lambda_max| tau > 1e4, and the automatic
/// integrator has switched to Rosenbrock. Before Phase I (tau = 0) it is not stiff:
/// |lambda_max| tau_1 < 10 with tau_1 ~ 1.4e4.
#[test]
fn flow_is_stiff_once_features_are_learned() {
    let config = parse_config(BASE).unwrap();
    let x0 = predhead::init::reduced(&config.setting, 0).unwrap();
    let opts = Options::new(&config);
    let run = integrate(&config, &x0, &opts, &mut |_, _| Ok(())).unwrap();
    let problem = Problem::<f64>::new(&config, &x0, ());
    let rate = |x: &Reduced<f64>| {
        let sp = spectrum(&problem, &problem.pack(x), 1e-6).unwrap();
        sp.iter().map(|(r, i)| r.hypot(*i)).fold(0.0, f64::max)
    };
    let end = rate(&run.final_state);
    assert!(end * 1e5 > 1e4, "|lambda_max| = {end}");
    let start = rate(&x0);
    let t1 = run.summary.t1.unwrap();
    assert!(start * t1 < 10.0, "|lambda_max| = {start}, t1 = {t1}");
    assert!(run.stiff_from.is_some() && run.steps_by_method[1] > 0);
}

/// Samples the trajectory and prints `tau * |lambda|` for the stiffest and the slowest
/// modes. Run with `cargo test --release --test flow_stiffness -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_spectrum_along_trajectory() {
    let config = parse_config(BASE).unwrap();
    let x0 = predhead::init::reduced(&config.setting, 0).unwrap();
    let mut samples: Vec<(f64, Reduced<f64>)> = Vec::new();
    let mut opts = Options::new(&config);
    opts.method = Method::Auto;
    let run = integrate(&config, &x0, &opts, &mut |t, x| {
        samples.push((t, x.clone()));
        Ok(())
    })
    .unwrap();
    println!("{:?}", run.summary);
    let problem = Problem::<f64>::new(&config, &x0, ());
    let mut next = 1.0;
    for (t, x) in &samples {
        if *t >= next || *t == 0.0 {
            let y = problem.pack(x);
            let sp = spectrum(&problem, &y, 1e-6).unwrap();
            let s: Vec<String> = sp
                .iter()
                .map(|(r, i)| format!("{r:.3e}{i:+.1e}i"))
                .collect();
            println!("tau {t:.4e}: {}", s.join(" "));
            next = (t * 1.5).max(1.0);
        }
    }
}
