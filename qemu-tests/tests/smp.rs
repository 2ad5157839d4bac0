//! Application-processor bring-up (issue 14, step 1): with `-smp N` the
//! kernel starts every CPU the MADT lists, each reports online and parks;
//! a CPU that never starts is reported and left out, and boot goes on.
//! Tasks still run on the boot CPU only.

use abi::exit::GuestExit;
use qemu_tests::{Options, Run, boot, boot_with, image};
use serde_json::Value;

fn num(ev: &Value, key: &str) -> u64 {
    ev[key].as_u64().unwrap_or_else(|| panic!("{key} is not a number: {ev}"))
}

fn position(run: &Run, ev: &str) -> usize {
    run.events.iter().position(|e| e["ev"] == ev).unwrap_or_else(|| panic!("{}: no {ev} event", run.name))
}

#[test]
fn four_cpus_come_online_and_the_demo_exits_cleanly() {
    let run = boot_with("smp-demo-4", Options { image: Some(image("demo")), cpus: 4, ..Options::default() });
    run.expect_exit(GuestExit::Success);
    assert_eq!(num(run.event("platform"), "cpus"), 4);
    let smp = run.event("smp");
    assert_eq!((num(smp, "cpus"), num(smp, "cpus_online")), (4, 4), "{smp}");
    assert!(run.events_of("cpu_failed").is_empty(), "{:#?}", run.events_of("cpu_failed"));
    // Bring-up is over before the first task starts, and the tasks ran to
    // the end with the other CPUs parked.
    assert!(position(&run, "platform") < position(&run, "smp"));
    assert!(position(&run, "smp") < position(&run, "task_start"));
    assert!(!run.events_of("task_exit").is_empty(), "no task ran to its end");
}

#[test]
fn one_cpu_needs_no_trampoline() {
    let run = boot("smp-1", "");
    run.expect_exit(GuestExit::Success);
    let smp = run.event("smp");
    assert_eq!((num(smp, "cpus"), num(smp, "cpus_online")), (1, 1), "{smp}");
    assert_eq!(smp["trampoline"], "0x0", "{smp}");
}

/// `smp.nosipi=2` sends the CPU with APIC id 2 INIT but no startup IPI: it
/// never reports, bring-up gives up on it after its timeout, starts the
/// next one in its place, and the boot finishes.
#[test]
fn a_cpu_that_never_starts_is_reported_and_left_out() {
    let options = Options { cmdline: "smp.nosipi=2".into(), cpus: 4, ..Options::default() };
    let run = boot_with("smp-nosipi", options);
    run.expect_exit(GuestExit::Success);
    let failed = run.events_of("cpu_failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!((num(failed[0], "apic_id"), failed[0]["reason"].as_str()), (2, Some("timeout")));
    let smp = run.event("smp");
    assert_eq!((num(smp, "cpus"), num(smp, "cpus_online")), (4, 3), "{smp}");
    // The wait was bounded: about the timeout (1 s of TSC), not more than
    // a few times it.
    let hz = num(run.event("platform"), "tsc_hz");
    let waited = num(smp, "tsc") - num(run.event("platform"), "tsc");
    assert!(waited < 5 * hz, "bring-up took {} ms", waited * 1000 / hz);
}
