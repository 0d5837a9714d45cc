//! Statistical tests of the sampler (`derivations/sampler.md`): Definition 3.1 and the
//! augmentation (3.2) on the counter-based streams of `src/data.rs`.
//!
//! Every test uses a fixed seed, so it is deterministic; each threshold is chosen so that a
//! correct sampler would fail it by chance with the probability stated next to it.

// Index loops mirror the subscripts of the covariance entries.
#![allow(clippy::needless_range_loop)]

use predhead::data::{batch_views, draw, sample, View};
use predhead::setting::Setting;
use statrs::distribution::{ChiSquared, ContinuousCDF, Discrete, Hypergeometric};

fn setting(patches: usize, feature_patches: usize, dim: u64) -> Setting {
    Setting {
        dim,
        patches,
        feature_patches,
        alpha: [3.0, 1.5],
        noise_std: 0.8,
        neurons: 2,
    }
}

/// Two-sided normal bound: a correct sampler exceeds |z| = 4.5 with probability 6.8e-6 per
/// statistic; with at most ~15 statistics per test the chance of a false failure is < 1e-4.
const Z: f64 = 4.5;

/// K = |S ∩ A| follows the hypergeometric law (P, P0, P/2): chi-square goodness of fit.
fn overlap_fits_hypergeometric(patches: usize, feature_patches: usize, seed: u64) {
    let s = setting(patches, feature_patches, 3);
    let n = 20_000u64;
    let kmax = feature_patches.min(patches / 2);
    let mut counts = vec![0u64; kmax + 1];
    for i in 0..n {
        let dr = draw(&s, seed, 0, i);
        assert_eq!(dr.features.iter().filter(|b| **b).count(), feature_patches);
        assert_eq!(dr.first_view.iter().filter(|b| **b).count(), patches / 2);
        counts[dr.overlap()] += 1;
    }
    let hyper =
        Hypergeometric::new(patches as u64, feature_patches as u64, (patches / 2) as u64).unwrap();
    // Bins with expected count >= 5 (merge the tails into their neighbours).
    let mut bins: Vec<(f64, f64)> = Vec::new(); // (observed, expected)
    let mut acc = (0.0, 0.0);
    for (k, &c) in counts.iter().enumerate() {
        acc.0 += c as f64;
        acc.1 += n as f64 * hyper.pmf(k as u64);
        if acc.1 >= 5.0 {
            bins.push(acc);
            acc = (0.0, 0.0);
        }
    }
    if let Some(last) = bins.last_mut() {
        last.0 += acc.0;
        last.1 += acc.1;
    }
    let expected_total: f64 = bins.iter().map(|b| b.1).sum();
    assert!((expected_total - n as f64).abs() < 1e-6 * n as f64);
    if bins.len() < 2 {
        // Degenerate law (e.g. P0 = P: K = P/2 always): every draw must hit it.
        let k = (0..=kmax).find(|&k| hyper.pmf(k as u64) > 0.5).unwrap();
        assert_eq!(counts[k], n, "K must always be {k}");
        return;
    }
    let chi2: f64 = bins.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
    let df = (bins.len() - 1) as f64;
    let p = 1.0 - ChiSquared::new(df).unwrap().cdf(chi2);
    // Fails by chance with probability 1e-4.
    assert!(
        p > 1e-4,
        "P={patches} P0={feature_patches}: chi2 = {chi2} on {df} dof, p = {p}, counts {counts:?}"
    );
}

#[test]
fn overlap_is_hypergeometric() {
    overlap_fits_hypergeometric(8, 3, 1);
    overlap_fits_hypergeometric(6, 2, 2);
    overlap_fits_hypergeometric(4, 4, 3);
    overlap_fits_hypergeometric(10, 7, 4);
}

/// Label, sign and the membership of each patch in S and A are fair coins / uniform:
/// binomial z-tests.
#[test]
fn labels_signs_and_subsets_are_balanced() {
    let s = setting(6, 2, 3);
    let n = 40_000u64;
    let (mut label1, mut plus) = (0u64, 0u64);
    let mut in_s = [0u64; 6];
    let mut in_a = [0u64; 6];
    for i in 0..n {
        let dr = draw(&s, 9, 3, i);
        label1 += dr.label as u64;
        plus += u64::from(dr.sign == 1);
        for p in 0..6 {
            in_s[p] += u64::from(dr.features[p]);
            in_a[p] += u64::from(dr.first_view[p]);
        }
    }
    let z = |count: u64, prob: f64| {
        let nf = n as f64;
        (count as f64 - nf * prob) / (nf * prob * (1.0 - prob)).sqrt()
    };
    // 14 statistics at |z| < 4.5: false failure < 1e-4.
    assert!(z(label1, 0.5).abs() < Z, "label z = {}", z(label1, 0.5));
    assert!(z(plus, 0.5).abs() < Z, "sign z = {}", z(plus, 0.5));
    for p in 0..6 {
        assert!(z(in_s[p], 2.0 / 6.0).abs() < Z, "S membership of patch {p}");
        assert!(z(in_a[p], 0.5).abs() < Z, "A membership of patch {p}");
    }
}

/// The patches of a sample and its views follow Definition 3.1 and (3.2) exactly.
#[test]
fn samples_and_views_have_the_defined_structure() {
    let s = setting(6, 2, 5);
    for i in 0..200 {
        let x = sample(&s, 5, 1, i);
        let (x1, x2) = (x.view(View::First), x.view(View::Second));
        for p in 0..6 {
            let patch = x.patch(p);
            if x.draw.features[p] {
                let mut want = [0.0; 5];
                want[x.draw.label] = f64::from(x.draw.sign) * s.alpha[x.draw.label];
                assert_eq!(patch, &want[..]);
            } else {
                assert_eq!((patch[0], patch[1]), (0.0, 0.0));
                assert!(patch[2..].iter().all(|v| *v != 0.0));
            }
            let (a, b) = (&x1[p * 5..(p + 1) * 5], &x2[p * 5..(p + 1) * 5]);
            if x.draw.first_view[p] {
                assert_eq!((a, b), (patch, &[0.0; 5][..]));
            } else {
                assert_eq!((a, b), (&[0.0; 5][..], patch));
            }
        }
    }
}

/// Noise patches are N(0, s^2 Pi): coordinates 0 and 1 exactly zero, the others have mean 0
/// and covariance s^2 I. With n patches, the sample mean of a coordinate has standard
/// deviation s / sqrt(n), and the sample second moment mean(x_a x_b) has standard deviation
/// s^2 sqrt((1 + [a = b]) / n) (Var(x_a^2) = 2 s^4, Var(x_a x_b) = s^4 for a != b).
#[test]
fn noise_covariance_is_s2_pi() {
    let d = 6;
    let s = setting(4, 1, d as u64);
    let sd = s.noise_std;
    let mut n = 0usize;
    let mut sum = [0.0f64; 6];
    let mut second = [[0.0f64; 6]; 6];
    for i in 0..8_000 {
        let x = sample(&s, 21, 0, i);
        for p in 0..4 {
            if x.draw.features[p] {
                continue;
            }
            let patch = x.patch(p);
            assert_eq!(patch[0].to_bits(), 0, "coordinate 0 of a noise patch");
            assert_eq!(patch[1].to_bits(), 0, "coordinate 1 of a noise patch");
            n += 1;
            for a in 2..d {
                sum[a] += patch[a];
                for b in 2..d {
                    second[a][b] += patch[a] * patch[b];
                }
            }
        }
    }
    let nf = n as f64;
    assert_eq!(n, 8_000 * 3);
    // 4 means + 10 distinct second moments = 14 statistics at |z| < 4.5: false failure
    // < 1e-4.
    for a in 2..d {
        let z = (sum[a] / nf) / (sd / nf.sqrt());
        assert!(z.abs() < Z, "mean of coordinate {a}: z = {z}");
        for b in a..d {
            let delta = if a == b { 1.0 } else { 0.0 };
            let z = (second[a][b] / nf - sd * sd * delta) / (sd * sd * ((1.0 + delta) / nf).sqrt());
            assert!(z.abs() < Z, "second moment ({a}, {b}): z = {z}");
        }
    }
}

/// `batch_views` is bit-identical under rayon pools of 1 and 2 threads, and equal to the
/// samples drawn one at a time.
#[test]
fn batch_views_do_not_depend_on_the_thread_count() {
    let s = setting(6, 3, 7);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| batch_views(&s, 77, 5, 300))
    };
    let bits = |v: &(Vec<Vec<f64>>, Vec<Vec<f64>>)| -> Vec<u64> {
        v.0.iter()
            .chain(&v.1)
            .flatten()
            .map(|x| x.to_bits())
            .collect()
    };
    let one = run(1);
    let two = run(2);
    assert_eq!(bits(&one), bits(&two));
    for i in [0usize, 17, 299] {
        let x = sample(&s, 77, 5, i as u64);
        assert_eq!(one.0[i], x.view(View::First));
        assert_eq!(one.1[i], x.view(View::Second));
    }
    // A different step or seed gives a different batch.
    let other = batch_views(&s, 77, 6, 300);
    assert_ne!(bits(&one), bits(&other));
}
