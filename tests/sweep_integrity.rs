//! Sweeps cannot lose or mix results (issue 19, defects 1, 2, 3 and 11), through the binary
//! as the issue's reproducers are: a sweep on another spec's results file, a forged or
//! edited line, a mixed merge, a missing shard and two concurrent sweeps are each refused
//! with exit status 2, exactly one stderr line and nothing on stdout, and the results file
//! stays byte-identical. Each refusal has its positive control: the same command on the
//! intact file succeeds.

use predhead::sweep::{self, file, Spec};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A lemma51-style spec: the exact flow at three small d, 3 seeds (9 tasks, milliseconds).
const LEMMA: &str = r#"
name = "lemma51"
report = "lemma51"
runner = "flow"
seeds = 3
[family]
name = "fixed"
[axes]
dim = [50, 100, 200]
[base.setting]
dim = 100
patches = 8
feature_patches = 2
alpha = [4.0, 1.0]
noise_std = 1.0
neurons = 2
[base.model]
head = "identity-offdiag"
normalization = "batchnorm"
stop_gradient = true
[base.training]
lr = 1e-3
[options.rule]
t1_exponent = 2.0
exponent_tolerance = 0.1
exponent_fail_band = 0.2
"#;

/// A theorem43-style spec: another grid (frozen head), 2 seeds (4 tasks).
const THEOREM: &str = r#"
name = "theorem43"
runner = "flow"
seeds = 2
[axes]
dim = [50, 100]
head = ["frozen"]
[base.setting]
dim = 100
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

/// Runs the binary; returns `(exit code, stdout, stderr)`.
fn predhead(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_predhead"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Runs the binary, asserts success, returns stdout.
fn ok(args: &[&str]) -> String {
    let (code, out, err) = predhead(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// Asserts the refusal rule (exit 2, nothing on stdout, one stderr line) and that `keep`
/// is byte-identical afterwards. Returns the stderr line.
fn refused(args: &[&str], keep: &Path) -> String {
    let before = std::fs::read(keep).ok();
    let (code, out, err) = predhead(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(out.is_empty(), "{args:?}: stdout {out}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert_eq!(
        std::fs::read(keep).ok(),
        before,
        "{args:?} changed {}",
        keep.display()
    );
    err
}

/// Writes a spec file into `dir`.
fn spec_file(dir: &Path, file: &str, text: &str) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Replaces line `k` (0-based) of the file `p` by `f(line)`.
fn edit_line(p: &Path, k: usize, f: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(p).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[k] = f(&lines[k]);
    std::fs::write(p, lines.join("\n") + "\n").unwrap();
}

#[test]
fn a_sweep_on_another_specs_results_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lemma = spec_file(dir.path(), "lemma51.toml", LEMMA);
    let theorem = spec_file(dir.path(), "theorem43.toml", THEOREM);
    let f = dir.path().join("f.jsonl");
    ok(&["sweep", s(&theorem), "--results", s(&f)]);
    assert_eq!(std::fs::read_to_string(&f).unwrap().lines().count(), 1 + 4);

    // Another spec on theorem43's file: refused, nothing lost.
    let err = refused(&["sweep", s(&lemma), "--results", s(&f)], &f);
    assert!(err.contains("f.jsonl"), "{err}");
    assert!(
        err.contains("holds the results of spec \"theorem43\" (4 tasks"),
        "{err}"
    );
    assert!(err.contains("not of spec \"lemma51\" (9 tasks"), "{err}");

    // The same name, one seed fewer: a different task list, refused too.
    let fewer = spec_file(
        dir.path(),
        "theorem43b.toml",
        &THEOREM.replace("seeds = 2", "seeds = 1"),
    );
    let err = refused(&["sweep", s(&fewer), "--results", s(&f)], &f);
    assert!(err.contains("not of spec \"theorem43\" (2 tasks"), "{err}");
    // The same name and number of tasks, one seed changed (seeds [0, 1] -> [0, 2]).
    let other_seed = spec_file(
        dir.path(),
        "theorem43c.toml",
        &THEOREM.replace("seeds = 2", "seeds = [0, 2]"),
    );
    let err = refused(&["sweep", s(&other_seed), "--results", s(&f)], &f);
    assert!(err.contains("not of spec \"theorem43\" (4 tasks"), "{err}");
    // Another shard of the same spec on the unsharded file.
    let err = refused(
        &["sweep", s(&theorem), "--shard", "1/2", "--results", s(&f)],
        &f,
    );
    assert!(err.contains("not shard 1/2"), "{err}");

    // Positive control: the spec's own sweep (the same seeds written as a list) accepts
    // its file, runs nothing and leaves it as it was.
    let same = spec_file(
        dir.path(),
        "theorem43d.toml",
        &THEOREM.replace("seeds = 2", "seeds = [0, 1]"),
    );
    let before = std::fs::read(&f).unwrap();
    let out = ok(&["sweep", s(&same), "--results", s(&f)]);
    assert!(out.contains("4 already done, 0 run"), "{out}");
    assert_eq!(std::fs::read(&f).unwrap(), before);

    // A results file of the old format (no header) is refused with a clear message.
    let old = dir.path().join("old.jsonl");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&old, text.split_once('\n').unwrap().1).unwrap();
    let err = refused(&["sweep", s(&theorem), "--results", s(&old)], &old);
    assert!(err.contains("old.jsonl line 1: no header line"), "{err}");
}

/// Falsifiers of the spec hash: one seed, one base value or one axis value changes it; the
/// same tasks give the same hash, and the two committed specs that share a results file
/// (theorem41 and lemma52) share it.
#[test]
fn the_spec_hash_changes_with_every_task_parameter() {
    let here = Path::new(".");
    let hash = |text: &str| {
        let spec = Spec::parse(text, "t", here).unwrap();
        file::spec_sha256(&spec.tasks(false).unwrap())
    };
    let h = hash(THEOREM);
    assert_eq!(h.len(), 64);
    assert_eq!(h, hash(&THEOREM.replace("seeds = 2", "seeds = [0, 1]")));
    assert_eq!(
        h,
        hash(&THEOREM.replace("name = \"theorem43\"", "name = \"x\""))
    );
    for changed in [
        THEOREM.replace("seeds = 2", "seeds = [0, 2]"),
        THEOREM.replace("noise_std = 1.0", "noise_std = 1.0000000000000002"),
        THEOREM.replace("dim = [50, 100]", "dim = [50, 101]"),
        THEOREM.replace("runner = \"flow\"", "runner = \"flow-explicit\""),
    ] {
        assert_ne!(h, hash(&changed), "{changed}");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports");
    let t41 = Spec::load(root.join("theorem41.toml")).unwrap();
    let l52 = Spec::load(root.join("lemma52.toml")).unwrap();
    assert_eq!(t41.results, l52.results);
    for quick in [false, true] {
        assert_eq!(
            file::spec_sha256(&t41.tasks(quick).unwrap()),
            file::spec_sha256(&l52.tasks(quick).unwrap())
        );
    }
}

#[test]
fn forged_and_edited_lines_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lemma = spec_file(dir.path(), "lemma51.toml", LEMMA);
    let good = dir.path().join("good.jsonl");
    ok(&["sweep", s(&lemma), "--results", s(&good)]);
    let reference = std::fs::read(&good).unwrap();
    let case = |name: &str, edit: &dyn Fn(&Path)| -> String {
        let p = dir.path().join(name);
        std::fs::write(&p, &reference).unwrap();
        edit(&p);
        refused(&["sweep", s(&lemma), "--results", s(&p)], &p)
    };

    // A hand-written error line: no checksum.
    let err = case("fake.jsonl", &|p| {
        let mut t = std::fs::read_to_string(p).unwrap();
        t.push_str("{\"error\":\"fake\"}\n");
        std::fs::write(p, t).unwrap();
    });
    assert!(
        err.contains("fake.jsonl line 11: no \"sha256\" checksum"),
        "{err}"
    );
    // The same with a correct checksum: not a record.
    let err = case("sealed.jsonl", &|p| {
        let mut t = std::fs::read_to_string(p).unwrap();
        t.push_str(&file::seal("{\"error\":\"fake\"}"));
        t.push('\n');
        std::fs::write(p, t).unwrap();
    });
    assert!(err.contains("sealed.jsonl line 11: bad record"), "{err}");
    // One digit of a value edited in a middle line.
    let err = case("digit.jsonl", &|p| {
        edit_line(p, 5, |l| {
            let at = l.find("\"tau_final\":").unwrap() + "\"tau_final\":".len();
            let mut l = l.to_string();
            let d = if &l[at..at + 1] == "1" { "2" } else { "1" };
            l.replace_range(at..at + 1, d);
            l
        })
    });
    assert!(
        err.contains("digit.jsonl line 6: checksum mismatch"),
        "{err}"
    );
    // t1 = "abc".
    let err = case("abc.jsonl", &|p| {
        edit_line(p, 3, |l| {
            let v: serde_json::Value = serde_json::from_str(&file::unseal(l).unwrap()).unwrap();
            let t1 = v["result"]["t1"].to_string();
            l.replace(&format!("\"t1\":{t1}"), "\"t1\":\"abc\"")
        })
    });
    assert!(err.contains("abc.jsonl line 4: checksum mismatch"), "{err}");
    // A record resealed by hand with another seed (its checksum is valid): not the task.
    let err = case("seed.jsonl", &|p| {
        edit_line(p, 5, |l| {
            let mut v: serde_json::Value = serde_json::from_str(&file::unseal(l).unwrap()).unwrap();
            v["seed"] = 7.into();
            file::seal(&v.to_string())
        })
    });
    assert!(
        err.contains("seed.jsonl line 6: task 4: key, seed or grid point differ"),
        "{err}"
    );
    // Two different lines for one task (the second resealed with another t_end).
    let err = case("twice.jsonl", &|p| {
        let t = std::fs::read_to_string(p).unwrap();
        let line = t.lines().nth(3).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&file::unseal(line).unwrap()).unwrap();
        v["result"]["tau_final"] = 1.0.into();
        std::fs::write(p, format!("{t}{}\n", file::seal(&v.to_string()))).unwrap();
    });
    assert!(
        err.contains("twice.jsonl line 11: task 2 appears twice"),
        "{err}"
    );
    // The header edited (another spec's hash).
    let err = case("header.jsonl", &|p| {
        edit_line(p, 0, |l| l.replacen("\"tasks\":9", "\"tasks\":8", 1))
    });
    assert!(
        err.contains("header.jsonl line 1: checksum mismatch"),
        "{err}"
    );

    // Positive control: the intact copy is accepted and nothing runs again.
    let p = dir.path().join("intact.jsonl");
    std::fs::write(&p, &reference).unwrap();
    let out = ok(&["sweep", s(&lemma), "--results", s(&p)]);
    assert!(out.contains("9 already done, 0 run"), "{out}");
    assert_eq!(std::fs::read(&p).unwrap(), reference);
}

/// `report` applies the same checks, and the schema check of the results on top: a line
/// resealed by hand with `t1 = "abc"` (a valid checksum) is refused, not folded into a
/// verdict.
#[test]
fn report_refuses_what_sweep_refuses_and_bad_types() {
    use predhead::commands::report::generate;
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::parse(LEMMA, "lemma51", dir.path()).unwrap();
    let good = dir.path().join("good.jsonl");
    let out = generate(&spec, &good, false, false).unwrap();
    assert!(out.partial.is_none());
    assert!(!out.markdown.contains("PARTIAL"));
    let reference = std::fs::read(&good).unwrap();

    let p = dir.path().join("t1.jsonl");
    std::fs::write(&p, &reference).unwrap();
    edit_line(&p, 3, |l| {
        let mut v: serde_json::Value = serde_json::from_str(&file::unseal(l).unwrap()).unwrap();
        v["result"]["t1"] = "abc".into();
        file::seal(&v.to_string())
    });
    let err = generate(&spec, &p, false, false).unwrap_err().to_string();
    assert!(
        err.contains("t1.jsonl task 2: bad result: t1: not a number"),
        "{err}"
    );
    // The edit without resealing fails the checksum first.
    std::fs::write(&p, &reference).unwrap();
    edit_line(&p, 3, |l| {
        l.replacen("\"outcome\":\"", "\"outcome\":\"x", 1)
    });
    let err = generate(&spec, &p, false, false).unwrap_err().to_string();
    assert!(err.contains("t1.jsonl line 4: checksum mismatch"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&p).unwrap().lines().count(),
        1 + 9,
        "nothing lost"
    );
    // Another spec's results file.
    let other = Spec::parse(THEOREM, "theorem43", dir.path()).unwrap();
    let err = generate(&other, &good, false, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds the results of spec \"lemma51\""),
        "{err}"
    );
    assert_eq!(std::fs::read(&good).unwrap(), reference);
}

#[test]
fn merge_refuses_mixed_specs_and_missing_shards() {
    let dir = tempfile::tempdir().unwrap();
    let lemma = spec_file(dir.path(), "lemma51.toml", LEMMA);
    let theorem = spec_file(dir.path(), "theorem43.toml", THEOREM);
    let full = dir.path().join("full.jsonl");
    ok(&["sweep", s(&lemma), "--results", s(&full)]);
    let reference = std::fs::read(&full).unwrap();
    let shard = |spec: &Path, i: u64, n: u64| -> PathBuf {
        let p = dir.path().join(format!(
            "{}-{i}-{n}.jsonl",
            spec.file_stem().unwrap().to_str().unwrap()
        ));
        ok(&[
            "sweep",
            s(spec),
            "--shard",
            &format!("{i}/{n}"),
            "--results",
            s(&p),
        ]);
        p
    };
    let l: Vec<PathBuf> = (0..3).map(|i| shard(&lemma, i, 3)).collect();
    let t1 = shard(&theorem, 1, 3);
    let out = dir.path().join("merged.jsonl");

    // Mixed specs: refused, nothing written.
    let err = refused(
        &["merge", s(&l[0]), s(&t1), s(&l[2]), "--out", s(&out)],
        &out,
    );
    assert!(err.contains("results of different specs"), "{err}");
    assert!(!out.exists());
    // A shard missing: refused, nothing written.
    let err = refused(&["merge", s(&l[0]), s(&l[2]), "--out", s(&out)], &out);
    assert!(err.contains("incomplete: 6 of the 9 tasks"), "{err}");
    assert!(err.contains("shard 1/3 missing"), "{err}");
    assert!(!out.exists());
    // Two files of one shard, and shards of another split.
    let copy = dir.path().join("copy.jsonl");
    std::fs::copy(&l[0], &copy).unwrap();
    let err = refused(
        &[
            "merge",
            s(&l[0]),
            s(&copy),
            s(&l[1]),
            s(&l[2]),
            "--out",
            s(&out),
        ],
        &out,
    );
    assert!(err.contains("both hold shard 0/3"), "{err}");
    let half = shard(&lemma, 1, 2);
    let err = refused(&["merge", s(&l[0]), s(&half), "--out", s(&out)], &out);
    assert!(err.contains("shards of different splits"), "{err}");
    // A record moved into another shard's file (its checksum is valid): refused.
    let moved = dir.path().join("moved.jsonl");
    let mut text = std::fs::read_to_string(&l[1]).unwrap();
    text.push_str(
        std::fs::read_to_string(&l[0])
            .unwrap()
            .lines()
            .nth(1)
            .unwrap(),
    );
    text.push('\n');
    std::fs::write(&moved, text).unwrap();
    let err = refused(
        &["merge", s(&l[0]), s(&moved), s(&l[2]), "--out", s(&out)],
        &out,
    );
    assert!(
        err.contains("moved.jsonl line 5: task 0 is not a task of shard 1/3"),
        "{err}"
    );
    // An interrupted shard (a task missing) is incomplete too.
    let cut = dir.path().join("cut.jsonl");
    ok(&[
        "sweep",
        s(&lemma),
        "--shard",
        "1/3",
        "--max-tasks",
        "2",
        "--results",
        s(&cut),
    ]);
    let err = refused(
        &["merge", s(&l[0]), s(&cut), s(&l[2]), "--out", s(&out)],
        &out,
    );
    assert!(err.contains("incomplete: 8 of the 9 tasks"), "{err}");

    // Positive control: the complete set merges to the unsharded file, byte for byte.
    let stdout = ok(&["merge", s(&l[2]), s(&l[0]), s(&l[1]), "--out", s(&out)]);
    assert!(
        stdout.contains("9 records") && !stdout.contains("PARTIAL"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), reference);

    // --allow-partial: written, and marked partial.
    let part = dir.path().join("partial.jsonl");
    let stdout = ok(&[
        "merge",
        s(&l[0]),
        s(&l[2]),
        "--out",
        s(&part),
        "--allow-partial",
    ]);
    assert!(
        stdout.contains("PARTIAL: 6 of 9 tasks, shard 1/3 missing"),
        "{stdout}"
    );
    let header = sweep::read_results(&part, false).unwrap().header.unwrap();
    assert!(header.partial);
    assert_eq!(header.shard, "0/1");
    // The report built from it says so, and calls no verdict final.
    let spec = Spec::load(&lemma).unwrap();
    let rep = predhead::commands::report::generate(&spec, &part, false, false).unwrap();
    assert_eq!(rep.partial, Some((6, 9)));
    assert!(rep.markdown.contains("**PARTIAL RESULTS: 6 of 9 tasks.**"));
    assert!(rep
        .markdown
        .contains("**Provisional verdict (6 of 9 tasks): "));
    assert!(!rep.markdown.contains("**Verdict: "));
    assert!(rep.tables.starts_with("> **PARTIAL RESULTS"));
    assert_eq!(
        sweep::read_results(&part, false).unwrap().lines.len(),
        6,
        "the report does not complete a partial file"
    );
    // A sweep completes it: the partial mark goes, and the file is the unsharded one.
    let stdout = ok(&["sweep", s(&lemma), "--results", s(&part)]);
    assert!(stdout.contains("6 already done, 3 run"), "{stdout}");
    assert_eq!(std::fs::read(&part).unwrap(), reference);
}

#[test]
fn a_second_sweep_on_a_locked_results_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lemma = spec_file(dir.path(), "lemma51.toml", LEMMA);
    let f = dir.path().join("f.jsonl");
    ok(&["sweep", s(&lemma), "--max-tasks", "4", "--results", s(&f)]);
    // Hold the lock as a running sweep does.
    let held = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(&f)
        .unwrap();
    held.try_lock().unwrap();
    let err = refused(&["sweep", s(&lemma), "--results", s(&f)], &f);
    assert!(
        err.contains(&format!(
            "results file {} is locked by another sweep",
            s(&f)
        )),
        "{err}"
    );
    // merge does not overwrite a file a sweep is writing either.
    let full = dir.path().join("full.jsonl");
    ok(&["sweep", s(&lemma), "--results", s(&full)]);
    let err = refused(&["merge", s(&full), "--out", s(&f)], &f);
    assert!(err.contains("is locked by another sweep"), "{err}");
    // Positive control: released, the sweep resumes and finishes. A child process that
    // another test forks while `held` is open shares its lock until that child execs
    // (the descriptor is close-on-exec), so wait until the lock is free before resuming.
    drop(held);
    let probe = std::fs::OpenOptions::new().read(true).open(&f).unwrap();
    let free = (0..500).any(|_| {
        let got = probe.try_lock().is_ok();
        if !got {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        got
    });
    assert!(free, "the lock was not released within 5 s");
    probe.unlock().unwrap();
    let out = ok(&["sweep", s(&lemma), "--results", s(&f)]);
    assert!(out.contains("4 already done, 5 run"), "{out}");
    assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(&full).unwrap());
}

/// Two sweep processes started together on one file: each either finishes or is refused
/// with the lock message (never another error), and the file ends complete and equal to an
/// uninterrupted run, with no temporary file left. Repeated to meet both interleavings.
#[test]
fn two_concurrent_sweeps_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lemma = spec_file(dir.path(), "lemma51.toml", LEMMA);
    let full = dir.path().join("full.jsonl");
    ok(&["sweep", s(&lemma), "--results", s(&full)]);
    let reference = std::fs::read(&full).unwrap();
    for round in 0..4 {
        let f = dir.path().join(format!("race{round}.jsonl"));
        let start = || {
            Command::new(env!("CARGO_BIN_EXE_predhead"))
                .args(["sweep", s(&lemma), "--results", s(&f)])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (start(), start());
        let mut finished = 0;
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8(out.stderr).unwrap();
            match out.status.code() {
                Some(0) => finished += 1,
                Some(2) => {
                    assert!(err.contains("is locked by another sweep"), "{err}");
                    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
                    assert!(out.stdout.is_empty());
                }
                other => panic!("exit {other:?}: {err}"),
            }
        }
        assert!(finished >= 1);
        // Whatever the interleaving, a last sweep completes the file; nothing was lost.
        ok(&["sweep", s(&lemma), "--results", s(&f)]);
        assert_eq!(std::fs::read(&f).unwrap(), reference, "round {round}");
    }
    let tmp: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}
