//! `predhead report`, `predhead sweep` and `predhead merge`.
//!
//! - `report [--dir reports] [--only NAME] [--quick] [--fresh]`: for every spec
//!   `DIR/*.toml` (sorted by name), runs its sweep ([`crate::sweep::run`], resumable, results
//!   in `DIR/results/NAME.jsonl`) and writes `DIR/NAME.md`, `DIR/NAME.csv` and the figures,
//!   then the index `DIR/README.md`. `--quick` uses the specs' `[quick]` grids and writes
//!   into `DIR/quick/` instead; `--fresh` discards earlier results first.
//! - `sweep SPEC [--shard i/n] [--results FILE] [--quick] [--max-tasks K]`: runs (a shard
//!   of) one sweep, appending to its results file (default
//!   `SPEC_DIR/results/NAME.jsonl`, or `NAME.shard-i-of-n.jsonl` for a shard; `NAME` is the
//!   spec's `results` stem, by default its name).
//! - `merge FILES... --out FILE [--allow-partial]`: joins the shard result files of one
//!   sweep, sorted by task id; refuses files of different specs and an incomplete set unless
//!   `--allow-partial` (the output is then marked partial, and so is its report).
//!
//! Results files carry a header and a checksum per line (`docs/cli.md`, "Sweep results
//! files", and [`crate::sweep::file`]).

use crate::error::{Error, Result};
use crate::report::{self, runner::ModelRunner};
use crate::sweep::{self, RunOptions, Shard, Spec};
use std::path::{Path, PathBuf};

/// Arguments of `predhead report`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The reports directory (specs in, reports out).
    #[arg(long, default_value = "reports")]
    pub dir: PathBuf,
    /// Only the report with this name (the spec's file stem).
    #[arg(long)]
    pub only: Option<String>,
    /// Use the specs' small `[quick]` grids; write into DIR/quick/.
    #[arg(long)]
    pub quick: bool,
    /// Discard earlier results and run every task again.
    #[arg(long)]
    pub fresh: bool,
}

/// Arguments of `predhead sweep`.
#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    /// The sweep spec (TOML).
    pub spec: PathBuf,
    /// Run only shard i of n (task k belongs to shard k mod n), e.g. `--shard 0/4`.
    #[arg(long)]
    pub shard: Option<String>,
    /// The results file (default: SPEC_DIR/results/NAME[.shard-i-of-n].jsonl).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Use the spec's `[quick]` grid.
    #[arg(long)]
    pub quick: bool,
    /// Stop after this many tasks (the rest stays pending for a re-run).
    #[arg(long)]
    pub max_tasks: Option<usize>,
}

/// Arguments of `predhead merge`.
#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// Shard result files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The merged results file.
    #[arg(long)]
    pub out: PathBuf,
    /// Merge an incomplete set of shards (a shard or a task missing); the output's header
    /// and every report built from it are marked partial.
    #[arg(long)]
    pub allow_partial: bool,
}

/// The spec files of a directory, sorted by name.
pub fn spec_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, &e))? {
        let p = entry.map_err(|e| Error::io(dir, &e))?.path();
        if p.extension().is_some_and(|e| e == "toml") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path, &e))
}

/// Runs the sweep of `spec` (resumably, into `results`) and builds its report from the
/// checked results ([`sweep::read_checked`]).
///
/// A results file marked partial (`predhead merge --allow-partial`) is not completed: the
/// report is built from the tasks it holds and marked partial ([`report::mark_partial`]).
/// Complete it first with `predhead sweep SPEC --results FILE` for a full report.
///
/// # Errors
/// A results file that fails its checks (another spec, a bad line), a sweep error.
pub fn generate(
    spec: &Spec,
    results: &Path,
    quick: bool,
    progress: bool,
) -> Result<report::Output> {
    let before = sweep::read_checked(spec, quick, results)?;
    if !before.header.is_some_and(|h| h.partial) {
        sweep::run(
            spec,
            &ModelRunner,
            &RunOptions {
                results: results.to_path_buf(),
                shard: Shard::ALL,
                quick,
                max_tasks: None,
                progress,
            },
        )?;
    }
    let checked = sweep::read_checked(spec, quick, results)?;
    report::runner::check_records(results, &checked.records)?;
    let rerun = match falsifier_results(spec, results, quick)? {
        Some((variant, path)) => {
            let options = RunOptions {
                results: path.clone(),
                shard: Shard::ALL,
                quick,
                max_tasks: None,
                progress,
            };
            sweep::run(&variant, &ModelRunner, &options)?;
            let f = sweep::read_checked(&variant, quick, &path)?;
            report::runner::check_records(&path, &f.records)?;
            Some(f.records)
        }
        None => None,
    };
    let mut out = report::build_with(spec, &checked.records, rerun.as_deref(), quick)?;
    if checked.records.len() < checked.tasks {
        report::mark_partial(&mut out, checked.records.len(), checked.tasks);
    }
    Ok(out)
}

/// The falsifier variant of `spec` and its results file (beside `results`, named
/// `<spec name>.falsifier[.quick].jsonl`), when the report has a rerun falsifier
/// ([`report::registry::needs_rerun`]).
///
/// # Errors
/// A bad `[options.falsifier]` table, or none where the registry needs one.
pub fn falsifier_results(
    spec: &Spec,
    results: &Path,
    quick: bool,
) -> Result<Option<(Spec, PathBuf)>> {
    if !report::registry::needs_rerun(spec) {
        return Ok(None);
    }
    let variant = report::registry::falsifier_spec(spec)?;
    let suffix = if quick { ".quick" } else { "" };
    let path = results.with_file_name(format!("{}{suffix}.jsonl", variant.name));
    Ok(Some((variant, path)))
}

/// ` (PARTIAL: k of n tasks)` for a partial report, else nothing.
fn partial_note(o: &report::Output) -> String {
    o.partial.map_or_else(String::new, |(k, n)| {
        format!(" (PARTIAL: {k} of {n} tasks)")
    })
}

/// The index page of the reports.
fn index(outputs: &[report::Output]) -> String {
    let mut s = String::from(
        "# Reports\n\n\
         Each report sets one claim of the paper (Sections 4-5) beside what the exact \
         population flow (and SGD, in the last one) measures, with a verdict by a rule stated \
         under its table. Regenerate all with `cargo run --release -- report` (specs: the \
         `*.toml` files here; raw results go to `results/`, which is not committed).\n\n\
         | report | claim | verdicts |\n|---|---|---|\n",
    );
    for o in outputs {
        let v: Vec<&str> = o.verdicts.iter().map(|(_, v)| v.name()).collect();
        s.push_str(&format!(
            "| [{0}]({0}.md) | {1} | {2}{3} |\n",
            o.name,
            o.title,
            v.join(", "),
            partial_note(o)
        ));
    }
    let rows: Vec<report::registry::Row> = outputs.iter().flat_map(|o| o.claims.clone()).collect();
    s.push_str(&format!(
        "\n## Claim registry\n\nOne row per claim of Sections 4-5 (`predhead::report::registry`, \
         `docs/claims.md`). Rule: {}\n\n{}",
        report::registry::RULE,
        report::registry::table(&rows, true).markdown()
    ));
    s
}

/// Runs `predhead report`.
pub fn run(args: &Args) -> Result<String> {
    let specs = spec_files(&args.dir)?;
    if specs.is_empty() {
        return Err(Error::invalid(
            "--dir",
            format!("{} holds no *.toml spec", args.dir.display()),
        ));
    }
    let out_dir = if args.quick {
        args.dir.join("quick")
    } else {
        args.dir.clone()
    };
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, &e))?;
    let results_dir = args.dir.join("results");
    let mut outputs = Vec::new();
    let mut text = String::new();
    let mut found = false;
    let mut cleared: Vec<PathBuf> = Vec::new();
    for path in &specs {
        let spec = Spec::load(path)?;
        if args.only.as_ref().is_some_and(|o| *o != spec.name) {
            continue;
        }
        found = true;
        let suffix = if args.quick { ".quick" } else { "" };
        let results = results_dir.join(format!("{}{suffix}.jsonl", spec.results));
        if args.fresh && results.exists() && !cleared.contains(&results) {
            std::fs::remove_file(&results).map_err(|e| Error::io(&results, &e))?;
        }
        cleared.push(results.clone());
        if let Some((_, f)) = falsifier_results(&spec, &results, args.quick)? {
            if args.fresh && f.exists() {
                std::fs::remove_file(&f).map_err(|e| Error::io(&f, &e))?;
            }
        }
        let start = std::time::Instant::now();
        let o = generate(&spec, &results, args.quick, true)?;
        write(&out_dir.join(format!("{}.md", o.name)), &o.markdown)?;
        write(&out_dir.join(format!("{}.csv", o.name)), &o.csv)?;
        for (file, svg) in &o.figures {
            write(&out_dir.join(file), svg)?;
        }
        let verdicts: Vec<String> = o
            .verdicts
            .iter()
            .map(|(h, v)| format!("{h}: {}", v.name()))
            .collect();
        text.push_str(&format!(
            "{}: {}{} ({:.1} s)\n",
            o.name,
            verdicts.join("; "),
            partial_note(&o),
            start.elapsed().as_secs_f64()
        ));
        outputs.push(o);
    }
    if !found {
        return Err(Error::invalid(
            "--only",
            format!(
                "no spec named {:?} in {}",
                args.only.as_deref().unwrap_or(""),
                args.dir.display()
            ),
        ));
    }
    if args.only.is_none() {
        // The index follows KINDS order.
        outputs.sort_by_key(|o| {
            report::KINDS
                .iter()
                .position(|k| specs_kind(&o.name, k.0))
                .unwrap_or(usize::MAX)
        });
        write(&out_dir.join("README.md"), &index(&outputs))?;
    }
    Ok(text)
}

/// Whether the spec `name` is of report kind `kind`: the kind itself, or `<kind>_<part>`
/// (one report kind over several specs, e.g. `regime_alpha`).
fn specs_kind(name: &str, kind: &str) -> bool {
    name == kind
        || name
            .strip_prefix(kind)
            .is_some_and(|rest| rest.starts_with('_') && !KIND_NAMES.contains(&name))
}

/// The names of the report kinds (a spec named like a kind is of that kind only).
const KIND_NAMES: [&str; report::KINDS.len()] = {
    let mut out = [""; report::KINDS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = report::KINDS[i].0;
        i += 1;
    }
    out
};

/// Runs `predhead sweep`.
pub fn run_sweep(args: &SweepArgs) -> Result<String> {
    let spec = Spec::load(&args.spec)?;
    report::runner::check_runners(&spec)?;
    let shard = match &args.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::ALL,
    };
    let results = match &args.results {
        Some(p) => p.clone(),
        None => {
            let dir = args.spec.parent().unwrap_or(Path::new(".")).join("results");
            let quick = if args.quick { ".quick" } else { "" };
            if shard == Shard::ALL {
                dir.join(format!("{}{quick}.jsonl", spec.results))
            } else {
                dir.join(format!(
                    "{}{quick}.shard-{}-of-{}.jsonl",
                    spec.results, shard.index, shard.count
                ))
            }
        }
    };
    let stats = sweep::run(
        &spec,
        &ModelRunner,
        &RunOptions {
            results: results.clone(),
            shard,
            quick: args.quick,
            max_tasks: args.max_tasks,
            progress: true,
        },
    )?;
    Ok(format!(
        "{}: {} tasks in shard {}/{}: {} already done, {} run, {} pending; results in {}\n",
        spec.name,
        stats.total,
        shard.index,
        shard.count,
        stats.skipped,
        stats.ran,
        stats.remaining,
        results.display()
    ))
}

/// Runs `predhead merge`.
pub fn run_merge(args: &MergeArgs) -> Result<String> {
    let m = sweep::merge_with(&args.files, &args.out, args.allow_partial)?;
    let note = if m.partial {
        let missing: Vec<String> = m
            .missing_shards
            .iter()
            .map(|i| format!("{i}/{}", m.shards))
            .collect();
        let shards = if missing.is_empty() {
            String::new()
        } else {
            format!(", shard {} missing", missing.join(", "))
        };
        format!(" (PARTIAL: {} of {} tasks{shards})", m.records, m.tasks)
    } else {
        String::new()
    };
    Ok(format!(
        "merged {} files: {} records in {}{note}\n",
        args.files.len(),
        m.records,
        args.out.display()
    ))
}
