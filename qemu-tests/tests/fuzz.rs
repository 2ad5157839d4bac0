//! The in-guest system call fuzzer (`tasks/fuzz/`): every system call with
//! hostile arguments and random registers; the kernel must take all of
//! them without a fault or panic (the run shuts down cleanly: exit status
//! 0), and the fuzzer must get through its count (check `fuzz:done`).
//!
//! The 10 M-call form is `cargo xtask run --image fuzz --headless` or this
//! file's ignored test:
//! `REWIND_FUZZ_CALLS=10000000 REWIND_FUZZ_SEED=7 cargo xtask test fuzz_millions`
//! (with `-- --ignored` passed by hand to `cargo test -p qemu-tests --test fuzz`).

use abi::exit::GuestExit;
use qemu_tests::{Options, Run, boot_image, boot_with, task_bins};

fn done(run: &Run, calls: u64) {
    run.expect_exit(GuestExit::Success);
    let checks = run.checks("fuzz:done");
    assert!(
        checks.len() == 1 && checks[0]["ok"] == true && checks[0]["value"] == calls,
        "{}: {checks:#?}\nconsole:\n{}",
        run.name,
        run.console
    );
    let exits = run.task_events("task_exit", "fuzz");
    assert!(exits.len() == 1 && exits[0]["code"] == 0, "{exits:#?}");
    assert!(run.events_of("kernel_fault").is_empty() && run.events_of("kernel_panic").is_empty());
}

#[test]
fn fuzzed_syscalls_do_not_hurt_the_kernel() {
    let run = boot_image("fuzz-short", "fuzz-short");
    done(&run, 100_000);
    let spin = run.task_events("task_exit", "spinner");
    assert!(spin.len() == 1 && spin[0]["code"] == 0, "the bystander finished: {spin:#?}");
}

#[test]
fn fuzzed_task_ctl_with_the_supervisor_cap_leaves_the_fault_server_alive() {
    let run = boot_image("fuzz-supervisor", "fuzz-supervisor");
    done(&run, 100_000);
    let server = run.task_events("task_start", "fault-server")[0]["task"].as_u64().unwrap();
    assert!(run.task_events("task_exit", "fault-server").is_empty(), "the fault server exited");
    assert!(run.events_of("task_panic").iter().all(|e| e["task"] != server), "the fault server panicked");
}

/// `REWIND_FUZZ_CALLS` calls (default 10 M) from `REWIND_FUZZ_SEED`
/// (default 1): the long run, by hand.
#[test]
#[ignore]
fn fuzz_millions() {
    let calls: u64 = std::env::var("REWIND_FUZZ_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let seed: u64 = std::env::var("REWIND_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    assert!(calls < 1 << 40 && seed < 1 << 24);
    let manifest = std::fs::read_to_string(xtask::images::dir().join("fuzz.toml"))
        .unwrap()
        .replace("arg = 1099521627776", &format!("arg = {}", calls | seed << 40));
    let dir = xtask::paths::rewind_dir().join("qemu-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fuzz-millions.toml");
    std::fs::write(&path, manifest).unwrap();
    let img = xtask::images::pack_to_file(path.to_str().unwrap(), &task_bins()).unwrap();
    let run = boot_with("fuzz-millions", Options { image: Some(img), timeout_secs: Some(3600), ..Options::default() });
    done(&run, calls);
}
