//! Sweeps are resumable and shardable: an interrupted run (a task budget, or a results file
//! cut mid-line as a kill would leave it) re-run to the end, and the merge of 3 shards, are
//! byte-identical to the uninterrupted unsharded run.

use predhead::report::runner::ModelRunner;
use predhead::sweep::{self, RunOptions, Shard, Spec, Task, TaskRunner};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A small real sweep: the exact flow at d in {50, 200}, two head modes, 3 seeds (12 tasks,
/// milliseconds each).
const SPEC: &str = r#"
seeds = 3
runner = "flow"
[axes]
dim = [50, 200]
head = ["identity-offdiag", "frozen"]
[base.setting]
dim = 50
patches = 4
feature_patches = 2
alpha = [4.0, 1.0]
noise_std = 1.0
neurons = 2
[base.model]
head = "identity-offdiag"
normalization = "batchnorm"
stop_gradient = true
"#;

fn spec() -> Spec {
    Spec::parse(SPEC, "resume", Path::new(".")).unwrap()
}

fn opts(results: PathBuf, shard: Shard, max_tasks: Option<usize>) -> RunOptions {
    RunOptions {
        results,
        shard,
        quick: false,
        max_tasks,
        progress: false,
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// Counts the tasks it runs, and delegates to the production runner.
struct Counting(AtomicUsize);

impl TaskRunner for Counting {
    fn run(&self, task: &Task) -> predhead::Result<serde_json::Value> {
        self.0.fetch_add(1, Ordering::SeqCst);
        ModelRunner.run(task)
    }
}

#[test]
fn interrupted_and_sharded_runs_equal_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let n = spec.tasks(false).unwrap().len();
    assert_eq!(n, 12);

    // The reference: one uninterrupted run.
    let full = dir.path().join("full.jsonl");
    let s = sweep::run(&spec, &ModelRunner, &opts(full.clone(), Shard::ALL, None)).unwrap();
    assert_eq!((s.total, s.ran, s.skipped, s.remaining), (12, 12, 0, 0));
    let reference = read(&full);
    // The header line, then 12 records.
    assert_eq!(reference.lines().count(), 1 + 12);
    // Sorted by task id, every line a complete record of the flow.
    let recs = sweep::read_results(&full, false).unwrap();
    let ids: Vec<u64> = recs.lines.iter().map(|(r, _)| r.task).collect();
    assert_eq!(ids, (0..12).collect::<Vec<u64>>());
    assert!(recs
        .lines
        .iter()
        .all(|(r, _)| r.result.get("outcome").is_some()));

    // Interrupted by a budget of 5 tasks, then resumed: only the other 7 run again.
    let part = dir.path().join("part.jsonl");
    let s = sweep::run(
        &spec,
        &ModelRunner,
        &opts(part.clone(), Shard::ALL, Some(5)),
    )
    .unwrap();
    assert_eq!((s.ran, s.remaining), (5, 7));
    assert_eq!(read(&part).lines().count(), 1 + 5);
    let counting = Counting(AtomicUsize::new(0));
    let s = sweep::run(&spec, &counting, &opts(part.clone(), Shard::ALL, None)).unwrap();
    assert_eq!((s.skipped, s.ran, s.remaining), (5, 7, 0));
    assert_eq!(counting.0.load(Ordering::SeqCst), 7);
    assert_eq!(read(&part), reference);

    // Killed mid-write: the header, 4 whole records and half of the 5th. The torn line is
    // cut off and its task runs again; nothing finished is lost.
    let torn = dir.path().join("torn.jsonl");
    let lines: Vec<&str> = reference.lines().collect();
    let mut text: String = lines[..5].iter().map(|l| format!("{l}\n")).collect();
    text.push_str(&lines[5][..lines[5].len() / 2]);
    std::fs::write(&torn, &text).unwrap();
    let counting = Counting(AtomicUsize::new(0));
    let s = sweep::run(&spec, &counting, &opts(torn.clone(), Shard::ALL, None)).unwrap();
    assert_eq!((s.skipped, s.ran), (4, 8));
    assert_eq!(counting.0.load(Ordering::SeqCst), 8);
    assert_eq!(read(&torn), reference);

    // A finished sweep re-run does nothing.
    let counting = Counting(AtomicUsize::new(0));
    let s = sweep::run(&spec, &counting, &opts(full.clone(), Shard::ALL, None)).unwrap();
    assert_eq!((s.skipped, s.ran), (12, 0));
    assert_eq!(counting.0.load(Ordering::SeqCst), 0);
    assert_eq!(read(&full), reference);

    // Three shards (task k in shard k mod 3), one of them interrupted and resumed, merged.
    let mut shards = Vec::new();
    for i in 0..3 {
        let p = dir.path().join(format!("shard{i}.jsonl"));
        let shard = Shard { index: i, count: 3 };
        if i == 1 {
            sweep::run(&spec, &ModelRunner, &opts(p.clone(), shard, Some(2))).unwrap();
        }
        let s = sweep::run(&spec, &ModelRunner, &opts(p.clone(), shard, None)).unwrap();
        assert_eq!(s.total, 4);
        let ids: Vec<u64> = sweep::read_results(&p, false)
            .unwrap()
            .lines
            .iter()
            .map(|(r, _)| r.task)
            .collect();
        assert!(ids.iter().all(|k| k % 3 == i), "{ids:?}");
        shards.push(p);
    }
    // Merging tolerates duplicates (a shard file given twice) and any order.
    let merged = dir.path().join("merged.jsonl");
    let mut inputs = shards.clone();
    inputs.reverse();
    inputs.push(shards[0].clone());
    let n = sweep::merge(&inputs, &merged).unwrap();
    assert_eq!(n, 12);
    assert_eq!(read(&merged), reference);
}

#[test]
fn merge_rejects_results_of_different_specs() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    let fake = |t: &Task| -> predhead::Result<serde_json::Value> {
        Ok(serde_json::json!({ "seed": t.seed, "d": t.config.setting.dim }))
    };
    sweep::run(&spec(), &fake, &opts(a.clone(), Shard::ALL, Some(2))).unwrap();
    let other = Spec::parse(
        &SPEC.replace("alpha = [4.0, 1.0]", "alpha = [3.0, 1.0]"),
        "resume",
        Path::new("."),
    )
    .unwrap();
    sweep::run(&other, &fake, &opts(b.clone(), Shard::ALL, Some(2))).unwrap();
    let err = sweep::merge(&[a, b], &dir.path().join("m.jsonl")).unwrap_err();
    assert!(err.to_string().contains("different specs"), "{err}");
    assert!(sweep::merge(
        &[dir.path().join("missing.jsonl")],
        &dir.path().join("m.jsonl")
    )
    .is_err());
}

#[test]
fn a_corrupt_line_in_the_middle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(&p, "{not json}\n{\"also\": 1}\n").unwrap();
    let fake = |_: &Task| -> predhead::Result<serde_json::Value> { Ok(serde_json::json!(1)) };
    let err = sweep::run(&spec(), &fake, &opts(p, Shard::ALL, None)).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

/// The `lr_d` axis sets `lr = lr_d / d` at each `d` (and `lr_head` keeps its ratio), and is
/// refused beside `lr`, or when it is not positive (`src/sweep.rs`, `Axes::lr_d`).
#[test]
fn the_lr_d_axis_scales_lr_with_d() {
    let spec = |axes: &str| {
        Spec::parse(
            &format!(
                "seeds = 1\n[axes]\ndim = [100, 400]\n{axes}\n[base.setting]\ndim = 8\n\
                 patches = 4\nfeature_patches = 2\nalpha = [4.0, 1.0]\nnoise_std = 1.0\n\
                 neurons = 2\n[base.model]\nhead = \"identity-offdiag\"\n\
                 normalization = \"batchnorm\"\nstop_gradient = true\n\
                 [base.training]\nlr = 0.01\nlr_head = 0.001\n"
            ),
            "lrd",
            Path::new("."),
        )
    };
    let s = spec("lr_d = [2.0, 1.0]").unwrap();
    let got: Vec<(u64, f64, f64)> = s
        .tasks(false)
        .unwrap()
        .iter()
        .map(|t| {
            (
                t.config.setting.dim,
                t.config.training.lr,
                t.config.training.lr_head,
            )
        })
        .collect();
    let want = [
        (100, 0.02, 0.002),
        (100, 0.01, 0.001),
        (400, 0.005, 0.0005),
        (400, 0.0025, 0.00025),
    ];
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.1), (w.0, w.1));
        assert!((g.2 - w.2).abs() <= 1e-18, "{g:?} {w:?}");
    }
    // Without the axis the base lr holds at every d (the test above would fail).
    let plain = spec("").unwrap();
    assert!(plain
        .tasks(false)
        .unwrap()
        .iter()
        .all(|t| t.config.training.lr == 0.01));
    for (axes, field) in [
        ("lr_d = [1.0]\nlr = [0.1]", "axes.lr_d"),
        ("lr_d = [0.0]", "axes.lr_d"),
        ("lr_d = [-1.0]", "axes.lr_d"),
    ] {
        let e = spec(axes).unwrap_err().to_string();
        assert!(e.contains(field), "{axes}: {e}");
    }
}

/// `[quick]` overrides `lr_batch` like every other axis (it was silently ignored before).
#[test]
fn the_quick_grid_overrides_lr_batch() {
    let spec = Spec::parse(
        "seeds = 1\n[axes]\nlr_batch = [[0.01, 256], [0.04, 1024]]\n[quick]\n\
         lr_batch = [[0.04, 64]]\n[base.setting]\ndim = 8\npatches = 4\nfeature_patches = 2\n\
         alpha = [4.0, 1.0]\nnoise_std = 1.0\nneurons = 2\n[base.model]\n\
         head = \"identity-offdiag\"\nnormalization = \"batchnorm\"\nstop_gradient = true\n\
         [base.training]\nlr = 0.001\n",
        "quick_lr_batch",
        Path::new("."),
    )
    .unwrap();
    let pairs = |quick: bool| -> Vec<(f64, usize)> {
        spec.tasks(quick)
            .unwrap()
            .iter()
            .map(|t| (t.config.training.lr, t.config.training.batch))
            .collect()
    };
    assert_eq!(pairs(false), vec![(0.01, 256), (0.04, 1024)]);
    assert_eq!(pairs(true), vec![(0.04, 64)]);
}
