//! The benchmark image under icount: every figure is reported, and two runs
//! of one build report the same values.
//!
//! Why this test and not a speed test: the project measures performance and
//! never asserts it (a threshold would fail on an honest slowdown and pass
//! a broken measurement). What a test can hold the benchmarks to is that
//! they work — each role of `images/bench.toml` reports its figure, ok —
//! and that the figures mean something: under `-icount shift=0,sleep=off`
//! the TSC counts guest instructions and the run is deterministic, so a
//! figure that changes between two runs of the same build is measuring
//! something other than the code (host time leaking in, a race between the
//! roles). The figures themselves are printed by `cargo xtask bench`.
//!
//! The parsing is `cargo xtask bench`'s own (`xtask::bench::parse`): this
//! test fails exactly when that command would.

use abi::exit::GuestExit;
use qemu_tests::{Options, boot_with, image};
use xtask::bench::{FIGURES, Measured, SMP_CPUS, SMP_FIGURES, SMP_IMAGE, parse, parse_smp};

fn measure(name: &str) -> Vec<Measured> {
    let run = boot_with(name, Options { icount: true, image: Some(image("bench")), ..Options::default() });
    run.expect_exit(GuestExit::Success);
    let lines: Vec<String> = String::from_utf8_lossy(&run.raw_events).lines().map(str::to_owned).collect();
    parse(&lines).unwrap_or_else(|e| panic!("{name}: {e:#}\nconsole:\n{}", run.console))
}

#[test]
fn bench_reports_every_figure_identically_twice() {
    let first = measure("bench-1");
    let second = measure("bench-2");
    assert_eq!(first.len(), FIGURES.len(), "every figure is reported");
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.figure.name, b.figure.name);
        assert_eq!(
            a.value, b.value,
            "{}: {} guest instructions in the first run, {} in the second: icount runs must be deterministic",
            a.figure.name, a.value, b.value
        );
    }
}

fn measure_smp(name: &str) -> Vec<Measured> {
    let options = Options { icount: true, image: Some(image(SMP_IMAGE)), cpus: SMP_CPUS, ..Options::default() };
    let run = boot_with(name, options);
    run.expect_exit(GuestExit::Success);
    let lines: Vec<String> = String::from_utf8_lossy(&run.raw_events).lines().map(str::to_owned).collect();
    parse_smp(&lines).unwrap_or_else(|e| panic!("{name}: {e:#}\nconsole:\n{}", run.console))
}

/// The two-CPU rows (`images/bench-smp.toml` on 2 CPUs): every one is
/// reported, each pair ran where its row says (`parse_smp` checks the
/// events' `cpu`s), and under icount the round-robin vCPUs make two runs
/// give the same figures. A cross-CPU row costs more than its same-CPU
/// row: the other CPU is woken by an IPI out of `hlt`.
#[test]
fn bench_smp_reports_every_placed_figure_identically_twice() {
    let first = measure_smp("bench-smp-1");
    let second = measure_smp("bench-smp-2");
    assert_eq!(first.len(), SMP_FIGURES.len(), "every figure is reported");
    assert_eq!(first, second, "two icount runs on {SMP_CPUS} CPUs must give the same figures");
    let value = |name: &str| first.iter().find(|m| m.figure.name == name).map(|m| m.value).unwrap();
    assert!(value("ipc_call_reply_cross_cpu") > value("ipc_call_reply_same_cpu"), "{first:#?}");
    assert!(value("fault_to_recovered_cross_cpu") > value("fault_to_recovered_same_cpu"), "{first:#?}");
}
