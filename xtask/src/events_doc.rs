//! The test that `docs/events.md` documents every event kind and field the
//! decoder ([`crate::events::Decoder`]) can write.
//!
//! [`samples`] builds one record of every `abi::event::Event` variant —
//! every optional field present, every variant of the nested enums
//! (`Decision`, `InjectDetail`, `WalkStop`, `Sym`) used once — plus the
//! lines the decoder writes on its own (`decode_error`, a `core_end` with
//! an `error`). [`variant`] is an exhaustive `match` with no wildcard: a
//! new `Event` variant does not compile until it is listed there, and the
//! test fails until [`samples`] has one of it.
//!
//! **The documented form** (what the test reads in `docs/events.md`): a
//! kind is documented by a `###` heading that names it in backticks (one
//! heading may name several kinds; a kind may have several headings); its
//! fields are the backticked names in the **first cell of a table row** in
//! that heading's section (up to the next `#`/`##`/`###` heading). The
//! common fields (`ev`, `tsc`, `by`, `emitted`) are the first cells of the
//! table under `## Common fields` and count for every kind. The keys of a
//! field whose value is an object or an array of objects (`phases`,
//! `frames`) must appear in backticks somewhere in the kind's section;
//! `regs` is the register file (`Registers::named`), listed once under
//! `kernel_fault`.

use crate::events::{Decoder, NoSymbols};
use abi::event::*;
use abi::trap::Registers;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The number of `Event` variants ([`variant`] returns `0..VARIANTS`).
const VARIANTS: usize = 46;

/// The variant's index. Exhaustive: a new variant must be added here.
fn variant(e: &Event<'_>) -> usize {
    match e {
        Event::Boot { .. } => 0,
        Event::Platform { .. } => 1,
        Event::Shutdown { .. } => 2,
        Event::BootError { .. } => 3,
        Event::KernelFault { .. } => 4,
        Event::KernelPanic { .. } => 5,
        Event::BacktraceFrame { .. } => 6,
        Event::Check { .. } => 7,
        Event::TaskStart { .. } => 8,
        Event::TaskRejected { .. } => 9,
        Event::ImageRejected { .. } => 10,
        Event::TaskExit { .. } => 11,
        Event::TaskPanic { .. } => 12,
        Event::Fault { .. } => 13,
        Event::FaultPending { .. } => 14,
        Event::Resume { .. } => 15,
        Event::RestartImage { .. } => 16,
        Event::RestartCheckpoint { .. } => 17,
        Event::Escalate { .. } => 18,
        Event::Object { .. } => 19,
        Event::CapRejected { .. } => 20,
        Event::RegionRejected { .. } => 21,
        Event::RegionMapFailed { .. } => 22,
        Event::AllTasksDone { .. } => 23,
        Event::InjectError { .. } => 24,
        Event::InjectArmed { .. } => 25,
        Event::TaskInfo { .. } => 26,
        Event::Stats { .. } => 27,
        Event::InjectMissed { .. } => 28,
        Event::Inject { .. } => 29,
        Event::Backtrace { .. } => 30,
        Event::Release { .. } => 31,
        Event::FaultReport { .. } => 32,
        Event::RegsCheck { .. } => 33,
        Event::Legacy { .. } => 34,
        Event::TooLarge { .. } => 35,
        Event::CoreBegin { .. } => 36,
        Event::CoreMemory { .. } => 37,
        Event::CoreEnd { .. } => 38,
        Event::Smp { .. } => 39,
        Event::CpuFailed { .. } => 40,
        Event::FaultV2 { .. } => 41,
        Event::TaskExitV2 { .. } => 42,
        Event::TaskStartV2 { .. } => 43,
        Event::RestartImageV2 { .. } => 44,
        Event::RestartCheckpointV2 { .. } => 45,
    }
}

/// One event of every variant (and of every nested variant), every
/// `Option` present.
fn samples() -> Vec<Event<'static>> {
    let regs = Registers { rip: 0x400b32, ..Default::default() };
    let fault = FaultSummary { kind: 1, rip: 0x400b32, restarts: 1, vector: 14, error_code: 6, cr2: 0x10 };
    let cost = RecoveryCost { fault_tsc: 1, stack_bytes: 64, phases: [1; 7], backlog: 1, late: 0 };
    let mut frames = heapless::Vec::new();
    frames.push(Frame { pc: 0x400b32, exact: true }).unwrap();
    let report = |action| Event::FaultReport {
        task: 6,
        seq: 3,
        fault: Some(fault),
        message: Some("boom"),
        action,
        cost: Some(cost),
    };
    let backtrace =
        |stop| Event::Backtrace { task: 6, seq: 3, stop, truncated: false, pages_read: 1, frames: frames.clone() };
    let inject = |detail| Event::Inject { id: 1, task: 6, name: "t", kind: "k", rip: 0x1, detail, seq: Some(3) };
    let release = |frame| Event::Release {
        task: 6,
        seq: 3,
        kind: "mutex",
        addr: 0x2000_0000_0000,
        scope: 1,
        origin: "intent",
        frame,
        outcome: "released",
        woken: Some(0),
        count: Some(1),
        error: Some("e"),
        poisoned: true,
    };
    let mut all = vec![
        Event::Boot {
            version: "0",
            mem_bytes: 1,
            memmap_entries: 1,
            rsdp: 1,
            cmdline: "",
            pvh_version: 1,
            free_frames: 1,
            ram_above_4g_ignored: 0,
            smep: true,
            smap: true,
        },
        Event::Platform {
            acpi_revision: 2,
            cpus: 1,
            lapic: 1,
            apic_id: 0,
            ioapics: 1,
            ioapic: 1,
            ioapic_pins: 24,
            ref_timer: "pm_timer",
            ref_timer_addr: 1,
            ref_hz: 1,
            calibration_ref_ticks: 1,
            lapic_divide: 16,
            lapic_ticks_per_ms: 1,
            lapic_timer_hz: 1,
            tsc_hz: 1,
        },
        Event::Shutdown { code: 0 },
        Event::BootError { error: "e" },
        Event::KernelFault { vector: 14, error_code: 0, cr2: 0, regs },
        Event::KernelPanic { message: "m", file: "f", line: 1 },
        Event::BacktraceFrame { index: 0, pc: 1, cfa: 2 },
        Event::Check { task: Some(6), task_name: Some("t"), name: "c", ok: true, value: Some(1), error: Some("e") },
        Event::TaskStart {
            task: 6,
            name: "t",
            priority: 2,
            arg: 0,
            entry: 0x400000,
            image_bytes: 9,
            fault_endpoint: Some("faults"),
        },
        Event::TaskRejected { index: 0, name: "t", reason: "r" },
        Event::ImageRejected { reason: "r", detail: "d" },
        Event::TaskExit { task: 6, name: "t", code: 0 },
        Event::TaskPanic { task: 6, name: "t", seq: 3, message: "m", file: "f", line: 1 },
        Event::Fault {
            task: 6,
            name: "t",
            seq: 3,
            kind: 1,
            vector: 14,
            error_code: 6,
            cr2: 0x10,
            regs,
            scopes: 1,
            fault_tsc: 2,
        },
        Event::FaultPending { task: 6, name: "t", seq: 3, endpoint: "faults" },
        Event::Resume { task: 6, name: "t", seq: 3, rip: 1 },
        Event::RestartImage {
            task: 6,
            name: "t",
            seq: 3,
            delay_ms: 0,
            restarts: 1,
            reason: Some("r"),
            redelivered: Some(0),
        },
        Event::RestartCheckpoint { task: 6, name: "t", seq: 3, scope: 1, attempt: 1, pages: 2 },
        Event::Escalate {
            task: 6,
            name: Some("t"),
            seq: 3,
            action: "stop",
            reason_code: Some(1),
            reason: Some("r"),
            restarts: Some(1),
            from_scope: Some(1),
            retries_in_window: Some(1),
            window_ms: Some(1),
        },
        Event::Object { kind: "region", index: 0, name: "r", base: Some(1), size: Some(4096) },
        Event::CapRejected { index: 0, reason: "r" },
        Event::RegionRejected { index: 0, reason: "r" },
        Event::RegionMapFailed { task: 6, region: "r" },
        Event::AllTasksDone { exited: 1, faulted: 0, stopped: 0, blocked: 0, free_frames: 1 },
        Event::InjectError { id: Some(1), line: Some("l"), error: "e" },
        Event::InjectArmed { id: 1, kind: "k" },
        Event::TaskInfo { task: 6, name: "t", state: "s", scopes: 0, restarts: 0 },
        Event::Stats { ticks: 1, tasks: 1, alive: 1, injected: 1, armed: 1, free_frames: 1 },
        Event::InjectMissed { id: 1, reason: "r" },
        Event::RegsCheck {
            task: 6,
            seq: 3,
            vector: 14,
            ok: false,
            compared: Some((20, 1)),
            first: Some(Mismatch { field: "rax", expected: 1, got: 2 }),
            error: Some("e"),
        },
        Event::Legacy { kind: "check", json: "\"name\":\"x\",\"ok\":true" },
        Event::TooLarge { kind: "fault" },
        // A core: begun, one piece, ended (a file is written), then an end
        // without a begin (the `error` form).
        Event::CoreBegin {
            task: 6,
            name: "t",
            seq: 3,
            kind: 1,
            vector: 14,
            error_code: 6,
            cr2: 0x10,
            regs,
            entry: 0x400000,
            build_id: Bytes(&[1, 2]),
            skipped: 0,
        },
        Event::CoreMemory { task: 6, seq: 3, addr: 0x1000, len: 2, at_fault: true, bytes: Bytes(&[1, 2]) },
        Event::CoreEnd { task: 6, seq: 3, chunks: 1, bytes: 2, cut: Some("c") },
        Event::CoreEnd { task: 6, seq: 4, chunks: 1, bytes: 2, cut: None },
        Event::Smp { cpus: 4, cpus_online: 3, trampoline: 0x3000 },
        Event::CpuFailed { apic_id: 2, reason: "timeout" },
        Event::FaultV2 {
            task: 6,
            name: "t",
            seq: 3,
            kind: 1,
            vector: 14,
            error_code: 6,
            cr2: 0x10,
            regs,
            scopes: 1,
            fault_tsc: 2,
            cpu: 1,
        },
        Event::TaskExitV2 { task: 6, name: "t", code: 0, cpu: 2 },
        Event::TaskStartV2 {
            task: 6,
            name: "t",
            priority: 2,
            arg: 0,
            entry: 0x400000,
            image_bytes: 9,
            fault_endpoint: Some("faults"),
            cpu: 1,
        },
        Event::RestartImageV2 {
            task: 6,
            name: "t",
            seq: 3,
            delay_ms: 0,
            restarts: 1,
            reason: Some("r"),
            redelivered: Some(0),
            cpu: 1,
        },
        Event::RestartCheckpointV2 { task: 6, name: "t", seq: 3, scope: 1, attempt: 1, pages: 2, cpu: 1 },
    ];
    for d in [
        Decision::Restart { delay_ms: 1 },
        Decision::Resume { resume_rip: 1 },
        Decision::Stop { reason: "restart_storm", restarts_in_window: Some(1), window_ms: Some(1) },
        Decision::Rollback { scope: 1, frame: Sym::Name("f"), releases: 1, pages: 1 },
        Decision::Other { action: "x" },
    ] {
        all.push(report(d));
    }
    for d in [
        InjectDetail::None,
        InjectDetail::PageFault { cr2: 1 },
        InjectDetail::RegFlip { reg: "rax", bit: 1, before: 1, after: 3 },
        InjectDetail::MemFlip { addr: 1, bit: 1 },
        InjectDetail::Missed { missed: "m" },
        InjectDetail::Skip { len: 1 },
    ] {
        all.push(inject(d));
    }
    for s in
        [WalkStop::Outermost, WalkStop::DepthLimit, WalkStop::NoFde(1), WalkStop::Unreadable(1), WalkStop::Other("o")]
    {
        all.push(backtrace(s));
    }
    all.push(release(Sym::Name("f")));
    all.push(release(Sym::Addr(0x400900)));
    all
}

/// Every line the decoder writes for [`samples`], plus its own lines.
fn decoded() -> Vec<Value> {
    let dir = std::env::temp_dir().join(format!("rewind-events-doc-{}", std::process::id()));
    let mut decoder = Decoder::new(NoSymbols).with_cores(&dir);
    let mut out = Vec::new();
    let mut buf = [0u8; MAX_FRAME];
    for e in samples() {
        let frame = encode_frame(7, Some(1), &e, &mut buf).unwrap();
        decoder.feed(frame, &mut out);
    }
    // A record with a later `emitted`, a frame that does not decode, and a
    // core that never ends.
    let n = {
        let mut head = [0u8; MAX_HEAD];
        let n = record_head(7, Some(1), Some(9), &mut head);
        let mut raw = head[..n].to_vec();
        raw.extend_from_slice(encode_event(&Event::Shutdown { code: 0 }, &mut buf).unwrap());
        let mut framed = vec![0u8; cobs_room(raw.len())];
        let n = cobs_encode(&raw, &mut framed).unwrap();
        framed.truncate(n);
        framed
    };
    decoder.feed(&n, &mut out);
    decoder.feed(&[0x02, 0x7f, 0x00], &mut out);
    let begin = samples().into_iter().find(|e| matches!(e, Event::CoreBegin { .. })).unwrap();
    let begin = match begin {
        Event::CoreBegin { seq: _, task, name, kind, vector, error_code, cr2, regs, entry, build_id, skipped } => {
            Event::CoreBegin { seq: 99, task, name, kind, vector, error_code, cr2, regs, entry, build_id, skipped }
        }
        _ => unreachable!(),
    };
    decoder.feed(encode_frame(8, Some(1), &begin, &mut buf).unwrap(), &mut out);
    decoder.finish(&mut out);
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// What `docs/events.md` documents: kind -> (fields in first cells, all
/// backticked words of its sections), and the common fields.
struct Documented {
    kinds: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    common: BTreeSet<String>,
}

/// The backticked words of `text`.
fn ticked(text: &str) -> Vec<String> {
    text.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

fn parse_doc(doc: &str) -> Documented {
    let mut d = Documented { kinds: BTreeMap::new(), common: BTreeSet::new() };
    let mut current: Vec<String> = Vec::new();
    let mut in_common = false;
    for line in doc.lines() {
        if line.starts_with('#') {
            let level = line.chars().take_while(|c| *c == '#').count();
            in_common = level == 2 && line.contains("Common fields");
            current = if level == 3 { ticked(line) } else { Vec::new() };
            for k in &current {
                d.kinds.entry(k.clone()).or_default();
            }
            continue;
        }
        let first_cell = line.strip_prefix('|').and_then(|rest| rest.split('|').next());
        if in_common && let Some(cell) = first_cell {
            d.common.extend(ticked(cell));
        }
        for k in &current {
            let entry = d.kinds.get_mut(k).unwrap();
            if let Some(cell) = first_cell {
                entry.0.extend(ticked(cell));
            }
            entry.1.extend(ticked(line));
        }
    }
    d
}

/// Every (kind, field) the decoder writes that the documentation lacks.
fn undocumented(doc: &str, lines: &[Value]) -> Vec<String> {
    let d = parse_doc(doc);
    let regs: BTreeSet<String> = d.kinds.get("kernel_fault").map(|k| k.1.clone()).unwrap_or_default();
    let mut missing = BTreeSet::new();
    for line in lines {
        let obj = line.as_object().unwrap();
        let kind = obj["ev"].as_str().unwrap();
        let Some((fields, words)) = d.kinds.get(kind) else {
            missing.insert(format!("kind `{kind}` (no `###` heading names it)"));
            continue;
        };
        for (key, value) in obj {
            if !d.common.contains(key) && !fields.contains(key) {
                missing.insert(format!("`{kind}` field `{key}` (no table row's first cell names it)"));
            }
            let nested: Vec<&String> = match value {
                Value::Object(o) => o.keys().collect(),
                Value::Array(a) => a.iter().filter_map(Value::as_object).flat_map(|o| o.keys()).collect(),
                _ => Vec::new(),
            };
            let known = if key == "regs" { &regs } else { words };
            for n in nested {
                if !known.contains(n) {
                    missing.insert(format!("`{kind}` field `{key}`: key `{n}` (not in backticks in its section)"));
                }
            }
        }
    }
    missing.into_iter().collect()
}

fn doc() -> String {
    std::fs::read_to_string(crate::paths::root().join("docs/events.md")).expect("docs/events.md")
}

#[test]
fn samples_cover_every_event_variant() {
    let mut seen = BTreeSet::new();
    let mut buf = [0u8; MAX_FRAME];
    for e in samples() {
        // The index is postcard's tag: the first byte of the encoding.
        let tag = encode_event(&e, &mut buf).unwrap()[0] as usize;
        assert_eq!(tag, variant(&e), "{e:?}");
        seen.insert(variant(&e));
    }
    let missing: Vec<usize> = (0..VARIANTS).filter(|v| !seen.contains(v)).collect();
    assert!(missing.is_empty(), "variants without a sample in `samples()`: {missing:?}");
}

#[test]
fn every_emitted_event_kind_and_field_is_documented() {
    let lines = decoded();
    let kinds: BTreeSet<&str> = lines.iter().map(|l| l["ev"].as_str().unwrap()).collect();
    for expected in ["decode_error", "core_end", "restart", "fault_report", "inject", "backtrace"] {
        assert!(kinds.contains(expected), "{expected} not decoded: {kinds:?}");
    }
    let missing = undocumented(&doc(), &lines);
    assert!(
        missing.is_empty(),
        "docs/events.md does not document (see xtask/src/events_doc.rs for the form):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_check_fails_on_a_removed_word() {
    // The check itself can fail: drop a field's row, a kind's heading.
    let lines = decoded();
    let doc = doc();
    let without_row = doc.replace("| `fault_tsc` |", "| fault_tsc |");
    assert!(undocumented(&without_row, &lines).iter().any(|m| m.contains("`fault` field `fault_tsc`")));
    let without_kind = doc.replace("### `inject_missed`", "### inject_missed");
    assert!(undocumented(&without_kind, &lines).iter().any(|m| m.contains("kind `inject_missed`")));
    assert!(undocumented(&doc.replace("`delivery`", "delivery"), &lines).iter().any(|m| m.contains("`delivery`")));
}
