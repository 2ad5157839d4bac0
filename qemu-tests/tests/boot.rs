//! The default boot: banner, `boot` and `shutdown` events, clean exit.

use abi::exit::GuestExit;
use qemu_tests::{Options, boot, boot_with};

#[test]
fn boots_to_a_clean_shutdown() {
    let run = boot("boot-clean", "");
    run.expect_exit(GuestExit::Success);
    assert!(run.console.contains("Rewind"), "no banner on the console:\n{}", run.console);

    let boot_ev = run.event("boot");
    assert_eq!(boot_ev["version"], env!("CARGO_PKG_VERSION"));
    let mem = boot_ev["mem_bytes"].as_u64().expect("mem_bytes is a number");
    // QEMU is given 256 MiB; the memory map reports slightly less as RAM.
    assert!((200 << 20..=256 << 20).contains(&mem), "implausible mem_bytes {mem}");

    let shutdown = run.event("shutdown");
    assert_eq!(shutdown["code"], 0);
    assert_eq!(run.events.last().unwrap()["ev"], "shutdown", "shutdown is the last event");
    assert_eq!(run.events.first().unwrap()["ev"], "boot", "boot is the first event");
}

#[test]
fn the_command_line_reaches_the_kernel() {
    let run = boot("boot-cmdline", "hello=world");
    run.expect_exit(GuestExit::Success);
    assert_eq!(run.event("boot")["cmdline"], "hello=world");
}

#[test]
fn an_unknown_selftest_fails_the_check() {
    let run = boot("boot-unknown-test", "test=no-such-test");
    run.expect_exit(GuestExit::CheckFailed);
    let check = run.event("check");
    assert_eq!(check["ok"], false);
}

/// Under `-icount shift=0,sleep=off` the guest is deterministic: two boots
/// give byte-identical event streams (time stamps included).
#[test]
fn icount_boots_are_byte_identical() {
    let opts = Options { icount: true, ..Options::default() };
    let a = boot_with("determinism-a", opts.clone());
    let b = boot_with("determinism-b", opts);
    a.expect_exit(GuestExit::Success);
    b.expect_exit(GuestExit::Success);
    assert!(!a.raw_events.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&a.raw_events),
        String::from_utf8_lossy(&b.raw_events),
        "two icount boots produced different event streams"
    );
}
