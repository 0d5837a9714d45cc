//! The validated flow (`predhead flow --certify`, `derivations/interval.md` (V11)-(V17)).

use predhead::config::parse_config;
use predhead::flow::problem::lift;
use predhead::setting::Config;
use predhead::validated::tube::TubeOptions;
use predhead::validated::{certify_flow, Fi};

fn config(dim: u64) -> Config {
    parse_config(&format!(
        "[setting]\ndim = {dim}\npatches = 8\nfeature_patches = 2\nalpha = [2.0, 1.0]\n\
         noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
         normalization = \"batchnorm\"\nstop_gradient = true\n[training]\nlr = 1e-3\nlr_head = 2e-4\n"
    ))
    .unwrap()
}

#[test]
#[ignore]
fn probe() {
    let dim: u64 = std::env::var("DIM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let c = config(dim);
    let x0 = predhead::init::reduced(&c.setting, 0).unwrap();
    let x0 = lift::<Fi>(&x0, ());
    let t = std::time::Instant::now();
    let r = certify_flow(&c, &x0, 1e7 * dim as f64, TubeOptions::default()).unwrap();
    eprintln!("{r:#?} {:?}", t.elapsed());
}
