//! The library without the CLI: draw a batch with `data::batch_views`, evaluate the batch
//! loss (3.3) and its gradient with `network::batch_loss_and_gradient`, and compare with
//! the exact population loss and gradient (`reduced::evaluate_explicit`).
//!
//!     cargo run --release --example population_and_batch

use predhead::data::batch_views;
use predhead::moments::population::Constants;
use predhead::network::{batch_loss_and_gradient, Batch};
use predhead::reduced::evaluate_explicit;
use predhead::setting::{HeadMode, Model, Normalization, Setting};
use predhead::state::State;

fn main() -> predhead::Result<()> {
    let setting = Setting {
        dim: 6,
        patches: 4,
        feature_patches: 2,
        alpha: [4.0, 1.0],
        noise_std: 1.0,
        neurons: 2,
    };
    let model = Model {
        head: HeadMode::IdentityOffdiag,
        normalization: Normalization::Batchnorm,
        stop_gradient: true,
    };
    let mut state = State::with_identity_head(vec![
        vec![0.5, 0.1, 0.2, -0.3, 0.1, 0.0],
        vec![0.1, 0.4, -0.2, 0.3, 0.0, 0.2],
    ]);
    state.e[0][1] = 0.1;
    state.e[1][0] = -0.05;

    let k = Constants::<f64>::new(&setting, ());
    let population = evaluate_explicit::<f64>(&k, &model, &state, ())?;
    println!("population: loss {:.6}", population.loss);
    print_gradient(&population.grad_w, &population.grad_e);

    for n in [64usize, 4096, 262_144] {
        let (x1, x2) = batch_views(&setting, 2026, 0, n);
        let batch = Batch::new(&setting, x1, x2)?;
        let ev = batch_loss_and_gradient(&setting, &model, &state, &batch)?;
        println!("batch N = {n}: loss {:.6}", ev.loss);
        print_gradient(&ev.grad_w, &ev.grad_e);
    }
    Ok(())
}

fn print_gradient(grad_w: &[Vec<f64>], grad_e: &[Vec<f64>]) {
    for (j, g) in grad_w.iter().enumerate() {
        let row: Vec<String> = g.iter().map(|x| format!("{x:+.4}")).collect();
        println!("  grad_w[{j}] = [{}]", row.join(", "));
    }
    for (j, g) in grad_e.iter().enumerate() {
        let row: Vec<String> = g.iter().map(|x| format!("{x:+.4}")).collect();
        println!("  grad_e[{j}] = [{}]", row.join(", "));
    }
}
