//! The typed event stream end to end: a supervisor's `emit_event` records
//! come out of the host decoder as the JSON of `docs/events.md`, with the
//! symbol names filled in from the task's ELF; bad `EMIT` bodies are
//! refused by the kernel and leave no trace; the stream has no
//! `decode_error`.

use abi::exit::GuestExit;
use qemu_tests::{Options, Symbols, boot_with, hex, task_bins};

fn boot() -> qemu_tests::Run {
    let dir = xtask::paths::rewind_dir().join("qemu-tests").join("events");
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("emitter.toml");
    std::fs::write(
        &toml,
        "description = \"emitter\"\n\n[[task]]\nname = \"emitter\"\nbin = \"emitter\"\ncaps = [\"supervisor\"]\n",
    )
    .unwrap();
    let m = xtask::images::Manifest::load(toml.to_str().unwrap()).expect("manifest");
    let img = dir.join("emitter.img");
    std::fs::write(&img, m.pack(&task_bins()).expect("pack")).unwrap();
    boot_with("events-emitter", Options { image: Some(img), icount: true, ..Options::default() })
}

#[test]
fn typed_supervisor_events_decode_with_symbols_and_bad_ones_are_refused() {
    let run = boot();
    run.expect_exit(GuestExit::Success);
    assert!(run.events_of("decode_error").is_empty(), "{:#?}", run.events_of("decode_error"));
    for name in ["emit-typed", "emit-refused"] {
        let c = run.checks(name);
        assert!(c.len() == 1 && c[0]["ok"] == true, "{name}: {c:#?}\nconsole:\n{}", run.console);
    }
    let me = run.task_events("task_start", "emitter")[0]["task"].clone();
    let symbols = Symbols::of(&task_bins().join("emitter")).unwrap();

    let bt = run.event("backtrace");
    assert_eq!(bt["by"], me);
    assert_eq!(bt["task"], me);
    assert_eq!(bt["count"], 2);
    assert_eq!(bt["stop"], "no_fde at 0x10");
    let marker = hex(&bt["frames"][0]["pc"]);
    assert_eq!(symbols.name(marker), Some("emitter_marker"));
    assert_eq!(bt["frames"][0]["symbol"], "emitter_marker");
    assert_eq!(hex(&bt["frames"][1]["pc"]), marker + 1);
    assert_eq!(bt["frames"][1]["symbol"], "emitter_marker", "a return address is named at pc - 1");

    let release = run.event("release");
    assert_eq!(release["by"], me);
    assert_eq!(release["frame"], "emitter_marker");
    assert_eq!(release["poisoned"], true);
    assert_eq!(release["addr"], "0x200000000000");

    let report = run.event("fault_report");
    assert_eq!(report["action"], "rollback");
    assert_eq!(report["frame"], "emitter_marker");
    assert_eq!(report["exception"], "page_fault");
    assert_eq!(report["cr2"], "0x10");

    assert_eq!(run.event("escalate")["reason"], "emitter test");
    let typed = run.checks("emitter:typed-check");
    assert!(typed.len() == 1 && typed[0]["by"] == me, "{typed:#?}");
    // Only what was accepted is in the stream: 5 events by the emitter.
    assert_eq!(run.events.iter().filter(|e| e.get("by").is_some()).count(), 5);
    assert!(run.events_of("shutdown").len() == 1 && run.event("shutdown")["code"] == 0);
}
