//! `cargo xtask test`: the host unit tests, then the QEMU integration tests,
//! then the fault-injection smoke campaign (`faults/smoke.toml`).
//!
//! Both are ordinary `cargo test` runs; we stream their output and add up
//! their `test result:` lines into one closing `N passed, M failed` line. A
//! test binary that does not even build counts as one failure, so a broken
//! build can never look like "0 failed".

use anyhow::{Context, Result};
use clap::Args;
use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use xtask::build::{self, Profile};
use xtask::{images, paths, qemu};

#[derive(Args)]
pub struct TestArgs {
    /// Only run tests whose name contains this string.
    filter: Option<String>,
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

pub fn run(args: TestArgs) -> Result<ExitCode> {
    let kernel = build::kernel(Profile::Debug)?;
    let bins = build::tasks(Profile::Debug)?;
    for name in images::list()? {
        images::pack_to_file(&name, &bins)?;
    }
    qemu::ensure_qemu()?;
    let mut totals = Totals::default();

    eprintln!("xtask: host unit tests");
    let host_only = [
        "--workspace",
        "--exclude",
        "kernel",
        "--exclude",
        "libtask",
        "--exclude",
        "task-*",
        "--exclude",
        "qemu-tests",
    ];
    cargo_test(&host_only, &args, &[], &[], &mut totals)?;

    eprintln!("xtask: QEMU integration tests");
    let kernel = kernel.display().to_string();
    let bins = bins.display().to_string();
    let env = [("REWIND_KERNEL", kernel.as_str()), ("REWIND_TASK_BINS", bins.as_str())];
    cargo_test(&["--package", "qemu-tests"], &args, &env, SMP4_SKIPPED, &mut totals)?;

    smoke_injection(&args, std::path::Path::new(&kernel), std::path::Path::new(&bins), 1, &mut totals);
    smoke_injection(&args, std::path::Path::new(&kernel), std::path::Path::new(&bins), 4, &mut totals);

    if totals.ignored > 0 {
        eprintln!("xtask: {} tests ignored", totals.ignored);
    }
    println!("{} passed, {} failed", totals.passed, totals.failed);
    Ok(if totals.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The fault-injection smoke campaign (`faults/smoke.toml`), through the
/// same runner as `cargo xtask inject`: one test, `inject::smoke`, and
/// again with 4 CPUs per boot, `inject::smoke_cpus4` (reports under
/// `target/rewind/inject/cpus4`).
fn smoke_injection(args: &TestArgs, kernel: &std::path::Path, bins: &std::path::Path, cpus: u32, totals: &mut Totals) {
    let name = if cpus == 1 { "inject::smoke".to_string() } else { format!("inject::smoke_cpus{cpus}") };
    if args.filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
        return;
    }
    eprintln!("xtask: fault injection: faults/smoke.toml, {cpus} CPU(s)");
    let opts = xtask::inject::Options {
        kernel: Some(kernel.into()),
        bins: Some(bins.into()),
        cpus: Some(cpus),
        out_dir: (cpus > 1).then(|| paths::rewind_dir().join("inject").join(format!("cpus{cpus}"))),
        ..Default::default()
    };
    match xtask::inject::run_script(&paths::root().join("faults/smoke.toml"), &opts) {
        Ok(done) => {
            xtask::inject::print_result(&done);
            let failures = done.failures();
            if failures.is_empty() {
                println!("test {name} ... ok");
                totals.passed += 1;
            } else {
                println!("test {name} ... FAILED: {}", failures.join("; "));
                totals.failed += 1;
            }
        }
        Err(e) => {
            println!("test {name} ... FAILED: {e:#}");
            totals.failed += 1;
        }
    }
}

/// The long sweeps and campaigns of `recovery_acceptance.rs` in its 4-CPU
/// run (`qemu-tests/tests/smp4.rs`, where their names carry the module
/// path): left out of the default suite, which they would take past ten
/// minutes; they pass (`cargo xtask test recovery_acceptance::` runs the
/// whole file on 4 CPUs, ~6 minutes). The 1-CPU runs are not affected.
const SMP4_SKIPPED: &[&str] = &[
    "recovery_acceptance::sweep_",
    "recovery_acceptance::bank_total_holds",
    "recovery_acceptance::pipeline_frees",
    "recovery_acceptance::every_fault_of_a_storm",
];

/// Runs `cargo test` on `selection`; without a filter, the tests whose
/// names contain one of `skips` are left out.
fn cargo_test(
    selection: &[&str],
    args: &TestArgs,
    env: &[(&str, &str)],
    skips: &[&str],
    totals: &mut Totals,
) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(paths::root()).arg("test").args(selection).arg("--no-fail-fast");
    cmd.envs(env.iter().copied());
    if let Some(filter) = &args.filter {
        cmd.args(["--", filter.as_str()]);
    } else if !skips.is_empty() {
        cmd.arg("--");
        for skip in skips {
            cmd.args(["--skip", skip]);
        }
    }
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().context("running cargo test")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut saw_result = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some((p, f, i)) = parse_result_line(&line) {
            saw_result = true;
            totals.passed += p;
            totals.failed += f;
            totals.ignored += i;
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() && (!saw_result || totals.failed == 0) {
        eprintln!(
            "xtask: `cargo test {}` failed ({status}) without a failing test: counted as one failure",
            selection.join(" ")
        );
        totals.failed += 1;
    }
    Ok(())
}

/// Parses `test result: ok. 3 passed; 1 failed; 0 ignored; ...`.
fn parse_result_line(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |word: &str| -> Option<u64> {
        rest.split(';')
            .find_map(|part| part.trim().strip_suffix(word).and_then(|n| n.trim().rsplit(' ').next()?.parse().ok()))
    };
    Some((count(" passed")?, count(" failed")?, count(" ignored").unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::parse_result_line;

    #[test]
    fn parses_cargo_test_summary_lines() {
        assert_eq!(
            parse_result_line(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
            ),
            Some((12, 0, 1))
        );
        assert_eq!(parse_result_line("test result: FAILED. 3 passed; 2 failed; 0 ignored"), Some((3, 2, 0)));
        assert_eq!(parse_result_line("running 3 tests"), None);
    }
}
