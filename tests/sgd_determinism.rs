//! SGD is bit-identical whatever the thread count (`derivations/sgd.md`, Section 4): the
//! same seed gives the same gradient and the same trajectory on 1 and on 2 rayon threads,
//! for both kernels. Also: a different seed gives a different batch (the test can fail).

use predhead::config::parse_config;
use predhead::setting::{HeadMode, Model, Normalization, Setting};
use predhead::sgd::{batch_gradient, run, BatchGradient, Kernel, RunOptions, Sgd};
use predhead::state::State;

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn bits(g: &BatchGradient) -> Vec<u64> {
    let mut v = vec![g.loss.to_bits()];
    v.extend(g.grad_w.iter().flatten().map(|x| x.to_bits()));
    v.extend(g.grad_e.iter().flatten().map(|x| x.to_bits()));
    v
}

#[test]
fn gradient_is_bit_identical_on_one_and_two_threads() {
    let setting = Setting {
        dim: 50,
        patches: 8,
        feature_patches: 3,
        alpha: [3.0, 2.0],
        noise_std: 1.0,
        neurons: 3,
    };
    let state = predhead::init::explicit(&setting, 4).unwrap();
    // N = 100: 7 blocks of 16 (the last one partial), so the reduction tree is uneven.
    for stop_gradient in [true, false] {
        let model = Model {
            head: HeadMode::Linear,
            normalization: Normalization::Batchnorm,
            stop_gradient,
        };
        // N = 2000: 63 blocks of 32 (block_size grows past MAX_BLOCKS * BLOCK = 1024).
        for n in [100, 2000] {
            for kernel in [Kernel::Fused, Kernel::Regenerate] {
                let g = |threads| {
                    in_pool(threads, || {
                        batch_gradient(&setting, &model, &state, 8, 3, n, kernel).unwrap()
                    })
                };
                let (g1, g2) = (g(1), g(2));
                assert_eq!(bits(&g1), bits(&g2), "{kernel:?} sg={stop_gradient} N={n}");
                let other = batch_gradient(&setting, &model, &state, 9, 3, n, kernel).unwrap();
                assert_ne!(bits(&g1), bits(&other), "seed must matter");
            }
        }
    }
}

#[test]
fn trajectory_is_bit_identical_on_one_and_two_threads() {
    let config = parse_config(
        r#"
        [setting]
        dim = 24
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
        lr = 0.02
        lr_head = 0.02
        batch = 40
        steps = 200
        "#,
    )
    .unwrap();
    let state: State = predhead::init::explicit(&config.setting, 1).unwrap();
    let go = |threads| {
        in_pool(threads, || {
            let mut sgd = Sgd::new(&config, state.clone(), 5).unwrap();
            let mut csv = Vec::new();
            let summary = {
                let constants =
                    predhead::moments::population::Constants::<f64>::new(&config.setting, ());
                let mut rec = predhead::observe::TrajectoryRecorder::new(
                    &mut csv,
                    constants,
                    config.model,
                    2,
                )
                .unwrap();
                let s = run(
                    &mut sgd,
                    RunOptions {
                        record: predhead::observe::Cadence::every(10).unwrap(),
                        stop_at_t_end: true,
                    },
                    Some(&mut rec),
                    |_| {},
                )
                .unwrap();
                rec.finish().unwrap();
                s
            };
            (sgd.state, serde_json::to_string(&summary).unwrap(), csv)
        })
    };
    let (s1, j1, c1) = go(1);
    let (s2, j2, c2) = go(2);
    let b = |s: &State| {
        s.w.iter()
            .chain(&s.e)
            .flatten()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(b(&s1), b(&s2));
    assert_eq!(j1, j2);
    assert_eq!(c1, c2);
    // 200 steps, a row every 10 plus the initial one.
    assert_eq!(String::from_utf8(c1).unwrap().lines().count(), 1 + 21);
}
