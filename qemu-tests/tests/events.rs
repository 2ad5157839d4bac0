//! The typed event stream end to end: a supervisor's `emit_event` records
//! come out of the host decoder as the JSON of `docs/events.md`, with the
//! symbol names filled in from the task's ELF; bad `EMIT` bodies are
//! refused by the kernel and leave no trace; a supervisor's undecodable
//! payload (which the kernel takes: it checks framing, times and kinds,
//! not payloads) is one `decode_error` stamped with its writer, and the
//! events around it decode.

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
    for name in ["emit-typed", "emit-refused", "emit-garbage"] {
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

    // The garbage: one decode_error, stamped with the emitter's id (the
    // kernel's stamp, not the payload's), between its two neighbours.
    let errors = run.events_of("decode_error");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["by"], me);
    let at = |pred: &dyn Fn(&serde_json::Value) -> bool| run.events.iter().position(pred).unwrap();
    let before = at(&|e| e["name"] == "emitter:before-garbage");
    let garbage = at(&|e| e["ev"] == "decode_error");
    let after = at(&|e| e["name"] == "emitter:after-garbage");
    assert!(before + 1 == garbage && garbage + 1 == after, "{before} {garbage} {after}");
    for i in [before, after] {
        assert_eq!(run.events[i]["by"], me);
        assert_eq!(run.events[i]["ok"], true);
    }

    // Only what was accepted is in the stream: 5 events, then the batch of 3.
    assert_eq!(run.events.iter().filter(|e| e.get("by").is_some()).count(), 5 + 3);
    assert!(run.events_of("shutdown").len() == 1 && run.event("shutdown")["code"] == 0);
}
