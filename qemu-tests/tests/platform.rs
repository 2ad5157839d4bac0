//! Platform discovery (ACPI tables, local APIC, I/O APIC, reference timer)
//! and the timer calibration, as reported by the `platform` event.
//!
//! QEMU's `pc` machine has one local APIC at 0xfee00000 per CPU, one I/O
//! APIC at 0xfec00000 with 24 pins, the ACPI PM timer, and an HPET. Its
//! LAPIC timer counts the virtual clock in nanoseconds, so at divide 16 it
//! ticks 62 500 times per ms; under `-icount shift=0` the TSC counts one per
//! instruction and one instruction is one virtual nanosecond, so the TSC
//! rate is 1 GHz.

use abi::exit::GuestExit;
use qemu_tests::{Options, Run, boot, boot_with, hex};
use serde_json::Value;

fn platform(run: &Run) -> &Value {
    let ev = run.event("platform");
    let boot_at = run.events.iter().position(|e| e["ev"] == "boot");
    let platform_at = run.events.iter().position(|e| e["ev"] == "platform");
    assert!(boot_at < platform_at, "{}: platform must follow boot: {:#?}", run.name, run.events);
    ev
}

fn num(ev: &Value, key: &str) -> u64 {
    ev[key].as_u64().unwrap_or_else(|| panic!("platform.{key} is not a number: {ev}"))
}

#[test]
fn discovers_the_apics_and_a_reference_timer() {
    let run = boot("platform", "");
    run.expect_exit(GuestExit::Success);
    let ev = platform(&run);

    assert_eq!(hex(&ev["lapic"]), 0xfee0_0000, "{ev}");
    assert_eq!(num(ev, "apic_id"), 0, "{ev}");
    assert_eq!(num(ev, "cpus"), 1, "{ev}");
    assert!(num(ev, "ioapics") >= 1, "{ev}");
    assert_eq!(hex(&ev["ioapic"]), 0xfec0_0000, "{ev}");
    assert!(num(ev, "ioapic_pins") >= 16, "{ev}");

    // The PM timer is preferred, and the pc machine has one (port 0x608).
    assert_eq!(ev["ref_timer"], "pm_timer", "{ev}");
    assert_eq!(num(ev, "ref_hz"), 3_579_545, "{ev}");
    assert_eq!(hex(&ev["ref_timer_addr"]), 0x608, "{ev}");
    // At least 10 ms of reference ticks.
    assert!(num(ev, "calibration_ref_ticks") >= 35_795, "{ev}");

    // Plain TCG: host scheduling blurs the measurement, so only plausible.
    assert_eq!(num(ev, "lapic_divide"), 16, "{ev}");
    let per_ms = num(ev, "lapic_ticks_per_ms");
    assert!((31_250..=125_000).contains(&per_ms), "implausible LAPIC timer rate {per_ms}/ms: {ev}");
    assert_eq!(num(ev, "lapic_timer_hz") / 1000, per_ms, "{ev}");
    let tsc_hz = num(ev, "tsc_hz");
    assert!((100_000_000..=10_000_000_000).contains(&tsc_hz), "implausible TSC rate {tsc_hz} Hz: {ev}");

    assert!(run.console.contains("local APIC 0xfee00000"), "no platform line on the console:\n{}", run.console);
}

/// Under `-icount shift=0,sleep=off` calibration is exact (62 500 LAPIC
/// ticks per ms, a 1 GHz TSC) and two boots report the same numbers.
#[test]
fn icount_calibration_is_exact_and_reproducible() {
    let opts = Options { icount: true, ..Options::default() };
    let a = boot_with("platform-icount-a", opts.clone());
    let b = boot_with("platform-icount-b", opts);
    a.expect_exit(GuestExit::Success);
    b.expect_exit(GuestExit::Success);
    let (ea, eb) = (platform(&a), platform(&b));
    assert_eq!(ea, eb, "two icount boots calibrated differently");

    let per_ms = num(ea, "lapic_ticks_per_ms");
    assert!((62_000..=63_000).contains(&per_ms), "LAPIC timer {per_ms}/ms under icount, expected 62500: {ea}");
    let tsc_hz = num(ea, "tsc_hz");
    assert!((990_000_000..=1_010_000_000).contains(&tsc_hz), "TSC {tsc_hz} Hz under icount, expected 1 GHz: {ea}");
}
