//! Ring-3 tasks: preemption, isolation, containment of faults, loading.
//!
//! Images are the manifests in `images/`; tasks report what they observe
//! through `check` events (the `REPORT` syscall), and the kernel reports
//! what it did (`task_start`, `task_exit`, `fault`, `task_rejected`).

use abi::exit::GuestExit;
use abi::image::TaskSpec;
use qemu_tests::{Run, boot_image, boot_tasks, hex, task_elf};
use serde_json::Value;

fn task_id(run: &Run, name: &str) -> u64 {
    let starts = run.task_events("task_start", name);
    assert_eq!(starts.len(), 1, "{}: expected one task_start for {name}: {:#?}", run.name, run.events);
    starts[0]["task"].as_u64().unwrap()
}

fn exit_code(run: &Run, name: &str) -> Option<i64> {
    run.task_events("task_exit", name).first().map(|e| e["code"].as_i64().unwrap())
}

#[test]
fn demo_tasks_make_progress_under_preemption() {
    let run = boot_image("tasks-demo", "demo");
    run.expect_exit(GuestExit::Success);
    assert!(
        run.checks("hello").iter().all(|c| c["ok"] == true) && !run.checks("hello").is_empty(),
        "hello did not report"
    );

    // The spinners never yield: if both make progress and their progress
    // reports interleave, the timer preempted them.
    let progress: Vec<u64> = run.checks("progress").iter().map(|c| c["task"].as_u64().unwrap()).collect();
    let mut ids = progress.clone();
    ids.sort();
    ids.dedup();
    assert!(ids.len() >= 2, "expected progress from two spinners, got tasks {ids:?}");
    let switches = progress.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches >= 3, "progress reports do not interleave (switches: {switches}): {progress:?}");
    // Every task but the fault server (which waits for faults forever)
    // ends with exit code 0 ...
    for start in run.events_of("task_start") {
        let name = start["name"].as_str().unwrap();
        if name != "fault-server" {
            assert_eq!(exit_code(&run, name), Some(0), "{name} did not exit 0");
        }
    }
    // ... including `crasher`, whose one fault the fault server reported
    // and answered with a restart, and `teller-faulty`, whose one fault
    // mid-transfer it answered with a rollback; nothing else faults.
    let crasher = task_id(&run, "crasher");
    let teller = task_id(&run, "teller-faulty");
    let faults = run.events_of("fault");
    let faulted: Vec<&Value> = faults.iter().map(|f| &f["task"]).collect();
    assert!(
        faults.len() == 2 && faulted.contains(&&crasher.into()) && faulted.contains(&&teller.into()),
        "crasher and teller-faulty fault, once each: {faults:#?}"
    );
    let reports = run.events_of("fault_report");
    let action = |task: u64| reports.iter().find(|r| r["task"] == task).map(|r| r["action"].clone());
    assert!(
        reports.len() == 2 && action(crasher) == Some("restart".into()) && action(teller) == Some("rollback".into()),
        "{reports:#?}"
    );
    assert_eq!(run.task_events("restart", "crasher").len(), 1, "crasher restarted once");
    assert!(run.checks("bank:total").iter().any(|c| c["ok"] == true), "the bank's total was not conserved");
    run.event("all_tasks_done");
}

/// `(manifest arg, vector, error code mask/value, whether cr2 is checked)`
struct Expect {
    arg: u64,
    vector: u64,
    error_code: Option<u64>,
}

const FAULTS: &[Expect] = &[
    Expect { arg: 1, vector: 6, error_code: Some(0) },        // ud2
    Expect { arg: 2, vector: 14, error_code: Some(0b100) },   // null read: user, not present
    Expect { arg: 3, vector: 14, error_code: Some(0b111) },   // write to read-only: present, write, user
    Expect { arg: 4, vector: 14, error_code: Some(0b10101) }, // execute NX: present, user, fetch
    Expect { arg: 5, vector: 0, error_code: Some(0) },        // divide by zero
    Expect { arg: 6, vector: 13, error_code: Some(0) },       // hlt
    Expect { arg: 7, vector: 13, error_code: Some(0) },       // cli
    Expect { arg: 8, vector: 13, error_code: Some(0) },       // mov cr3
    Expect { arg: 9, vector: 14, error_code: None },          // stack overflow into the guard page
];

fn faulter_with_arg<'r>(run: &'r Run, arg: u64) -> &'r Value {
    run.events_of("task_start")
        .into_iter()
        .find(|s| s["name"].as_str().unwrap().starts_with("fault") && s["arg"] == arg)
        .unwrap_or_else(|| panic!("no faulter with arg {arg} started"))
}

#[test]
fn each_fault_kind_is_contained_and_reported_exactly() {
    let run = boot_image("tasks-faults", "faults");
    run.expect_exit(GuestExit::Success);
    for e in FAULTS {
        let start = faulter_with_arg(&run, e.arg);
        let id = start["task"].as_u64().unwrap();
        let name = start["name"].as_str().unwrap();
        let faults: Vec<&Value> =
            run.events_of("fault").into_iter().filter(|f| f["task"].as_u64() == Some(id)).collect();
        assert_eq!(faults.len(), 1, "arg {}: expected one fault for {name}, got {faults:#?}", e.arg);
        let f = faults[0];
        assert_eq!(f["vector"], e.vector, "arg {}: vector of {f}", e.arg);
        if let Some(code) = e.error_code {
            assert_eq!(hex(&f["error_code"]), code, "arg {}: error code of {f}", e.arg);
        }
        // The task said where it would fault (0 = no address to check).
        let about: Vec<&Value> =
            run.checks("about-to-fault").into_iter().filter(|c| c["task"].as_u64() == Some(id)).collect();
        assert_eq!(about.len(), 1, "arg {}: {name} did not announce its fault", e.arg);
        let expected_addr = about[0]["value"].as_u64().unwrap();
        if e.vector == 14 && expected_addr != 0 {
            assert_eq!(hex(&f["cr2"]), expected_addr, "arg {}: cr2 of {f}", e.arg);
        }
        if e.arg == 4 {
            assert_eq!(hex(&f["rip"]), expected_addr, "executing NX memory faults at the jump target");
        }
        if e.arg == 9 {
            let cr2 = hex(&f["cr2"]);
            let stack_top = abi::layout::USER_STACK_TOP;
            assert!(
                cr2 < stack_top && cr2 >= stack_top - (8 << 20),
                "stack overflow cr2 {cr2:#x} not just below the stack"
            );
        }
        assert_eq!(hex(&f["regs"]["rip"]), hex(&f["rip"]));
        assert_eq!(hex(&f["regs"]["cs"]) & 3, 3, "faulted in ring 3");
        assert_eq!(exit_code(&run, name), None, "a faulted task does not exit normally");
    }

    // A bad syscall pointer is an error code, not a fault.
    let bad = faulter_with_arg(&run, 10);
    let bad_id = bad["task"].as_u64();
    let checks = run.checks("bad-pointer");
    assert!(
        !checks.is_empty() && checks.iter().all(|c| c["ok"] == true && c["task"].as_u64() == bad_id),
        "bad-pointer checks: {checks:#?}"
    );
    assert_eq!(exit_code(&run, bad["name"].as_str().unwrap()), Some(0));

    // The spinner kept running while the others faulted, and finished.
    let faults_tsc: Vec<u64> = run.events_of("fault").iter().map(|f| f["tsc"].as_u64().unwrap()).collect();
    let last_fault = *faults_tsc.iter().max().unwrap();
    let first_fault = *faults_tsc.iter().min().unwrap();
    let progress: Vec<u64> = run.checks("progress").iter().map(|c| c["tsc"].as_u64().unwrap()).collect();
    assert!(progress.iter().any(|&t| t > first_fault), "no progress after the first fault");
    let _ = last_fault;
    assert_eq!(exit_code(&run, "spinner"), Some(0), "the spinner finished");
}

#[test]
fn tasks_cannot_reach_kernel_or_each_other() {
    let run = boot_image("tasks-isolation", "isolation");
    run.expect_exit(GuestExit::Success);
    // Reading kernel memory: a present supervisor page, so P=1, U=1.
    let kernel_read = faulter_with_arg(&run, 11);
    let f = run
        .events_of("fault")
        .into_iter()
        .find(|f| f["task"] == kernel_read["task"])
        .expect("reading kernel memory faults");
    assert_eq!(f["vector"], 14);
    assert_eq!(hex(&f["error_code"]) & 0b101, 0b101);
    assert!(hex(&f["cr2"]) >= 0xffff_8000_0000_0000);
    // Mapping kernel pages is refused with an error.
    let map_kernel = faulter_with_arg(&run, 12);
    let checks = run.checks("map-kernel");
    assert!(
        !checks.is_empty() && checks.iter().all(|c| c["ok"] == true && c["task"] == map_kernel["task"]),
        "{checks:#?}"
    );
    // Another task's memory is not mapped here.
    let other = faulter_with_arg(&run, 13);
    let f = run
        .events_of("fault")
        .into_iter()
        .find(|f| f["task"] == other["task"])
        .expect("reading another task's page faults");
    assert_eq!(f["vector"], 14);
    assert_eq!(hex(&f["cr2"]), abi::layout::USER_MAP_BASE + 0x4000_0000);
    assert_eq!(hex(&f["error_code"]) & 1, 0, "not present in this space");
    assert_eq!(exit_code(&run, "owner"), Some(0));
}

#[test]
fn thirty_two_tasks_run_to_completion() {
    let run = boot_image("tasks-many", "many");
    run.expect_exit(GuestExit::Success);
    let starts = run.events_of("task_start");
    assert_eq!(starts.len(), 32);
    let exits: Vec<&Value> = run.events_of("task_exit");
    assert_eq!(exits.len(), 32);
    assert!(exits.iter().all(|e| e["code"] == 0), "{exits:#?}");
    let done = run.event("all_tasks_done");
    assert_eq!(done["exited"], 32);
}

// --- malformed images -------------------------------------------------------

fn phdr_offset(elf: &[u8], index: usize) -> usize {
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes(elf[0x36..0x38].try_into().unwrap()) as usize;
    phoff + index * phentsize
}

fn load_phdrs(elf: &[u8]) -> Vec<usize> {
    let phnum = u16::from_le_bytes(elf[0x38..0x3a].try_into().unwrap()) as usize;
    (0..phnum)
        .map(|i| phdr_offset(elf, i))
        .filter(|&o| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 1)
        .collect()
}

fn set_u64(elf: &mut [u8], at: usize, v: u64) {
    elf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn malformed_images_are_rejected_and_the_rest_runs() {
    let good = task_elf("hello");
    let loads = load_phdrs(&good);
    assert!(loads.len() >= 2, "hello has text and data segments");

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let truncated = good[..good.len() / 3].to_vec();
    let mut kernel_range = good.clone();
    set_u64(&mut kernel_range, loads[0] + 16, 0xffff_8000_0000_0000);
    let mut overlapping = good.clone();
    let first_vaddr = u64::from_le_bytes(good[loads[0] + 16..loads[0] + 24].try_into().unwrap());
    set_u64(&mut overlapping, loads[1] + 16, first_vaddr);
    let mut huge = good.clone();
    set_u64(&mut huge, loads[0] + 40, 1 << 40);
    let mut beyond_file = good.clone();
    set_u64(&mut beyond_file, loads[0] + 8, good.len() as u64 * 4);

    let spec = |name: &'static str, elf: &'static [u8]| TaskSpec {
        name,
        elf,
        priority: 2,
        stack_bytes: 64 << 10,
        ..TaskSpec::default()
    };
    let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
    let cases: Vec<(&'static str, &'static [u8], &str)> = vec![
        ("bad-magic", leak(bad_magic), "not an ELF64"),
        ("truncated", leak(truncated), "outside the file"),
        ("kernel-range", leak(kernel_range), "outside the user image range"),
        ("overlapping", leak(overlapping), "overlap"),
        ("huge", leak(huge), ""),
        ("beyond-file", leak(beyond_file), "outside the file"),
    ];
    let mut specs: Vec<TaskSpec> = cases.iter().map(|(n, e, _)| spec(n, e)).collect();
    specs.push(spec("hello", leak(good)));
    let run = boot_tasks("tasks-malformed", &specs);
    run.expect_exit(GuestExit::Success);

    let rejected = run.events_of("task_rejected");
    assert_eq!(rejected.len(), cases.len(), "every bad image is rejected: {rejected:#?}");
    for (name, _, reason) in &cases {
        let r = rejected.iter().find(|r| r["name"] == *name).unwrap_or_else(|| panic!("{name} not rejected"));
        assert!(
            r["reason"].as_str().unwrap().contains(reason),
            "{name}: reason {:?} should mention {reason:?}",
            r["reason"]
        );
    }
    task_id(&run, "hello");
    assert_eq!(exit_code(&run, "hello"), Some(0), "the good task still runs");
}
