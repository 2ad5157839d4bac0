//! Decoding the event stream: COM2's COBS frames of postcard records
//! (`abi::event`) to the JSON lines of `docs/events.md`.
//!
//! QEMU writes COM2 raw to `events.bin`; [`Decoder`] turns it into one JSON
//! object per event with the fields, types and order the kernel's JSON
//! writer had, so readers of `events.jsonl` see no difference: addresses
//! are `"0x…"` strings, names derived from numbers (exceptions, fault
//! kinds, exit reasons) are spelled out, and backtrace frames get their
//! `symbol` from the faulted task's ELF ([`ImageSymbols`]: the boot image
//! holds every task's ELF; `task_start` events give the task ids).
//!
//! It streams: feed it bytes as they come (the injection runner does, while
//! QEMU runs), and it writes a line per complete frame. A frame that does
//! not decode — truncated, corrupted, from a newer schema, or a
//! supervisor's payload the kernel wrote without decoding it (the kernel
//! vouches for a record's stamps and kind, not for a supervisor's event:
//! `abi::event`, "Who may write what") — becomes a `decode_error` line
//! carrying its bytes in hex, stamped with the record's `tsc`, `by` and
//! `emitted` when those decode; nothing is dropped, and frames being
//! separate, the next one decodes normally.

use crate::cores::{CoreHead, CoreSink};
use crate::symbols::Symbols;
use abi::event::{Decision, Event, FaultSummary, InjectDetail, MAX_FRAME, Record, Sym, WalkStop};
use abi::fault::FaultKind;
use abi::trap::{Registers, exception_name};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Names code addresses of tasks.
pub trait SymbolSource {
    /// The function of task `task` (its manifest name) that contains `addr`.
    fn name(&mut self, task: &str, addr: u64) -> Option<String>;
}

/// No symbols: every frame is `?`.
pub struct NoSymbols;

impl SymbolSource for NoSymbols {
    fn name(&mut self, _: &str, _: u64) -> Option<String> {
        None
    }
}

/// Symbols from the task ELFs packed in a boot image, read on first use.
pub struct ImageSymbols {
    image: Vec<u8>,
    tasks: HashMap<String, Option<Symbols>>,
}

impl ImageSymbols {
    /// `image`: the packed boot image (`-initrd`).
    pub fn new(image: Vec<u8>) -> ImageSymbols {
        ImageSymbols { image, tasks: HashMap::new() }
    }

    pub fn from_file(path: &std::path::Path) -> anyhow::Result<ImageSymbols> {
        use anyhow::Context;
        Ok(ImageSymbols::new(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?))
    }

    fn load(image: &[u8], task: &str) -> Option<Symbols> {
        let parsed = abi::image::parse(image).ok()?;
        (0..parsed.len())
            .filter_map(|i| parsed.task(i)?.ok())
            .find(|spec| spec.name == task)
            .and_then(|spec| Symbols::from_elf(spec.elf).ok())
    }
}

impl SymbolSource for ImageSymbols {
    fn name(&mut self, task: &str, addr: u64) -> Option<String> {
        let image = &self.image;
        let symbols = self.tasks.entry(task.to_owned()).or_insert_with(|| ImageSymbols::load(image, task));
        symbols.as_ref()?.name(addr).map(str::to_owned)
    }
}

/// The streaming decoder.
pub struct Decoder<S = NoSymbols> {
    symbols: S,
    /// Bytes of the frame being received.
    pending: Vec<u8>,
    /// Task id -> name, from `task_start` (and `fault`, `restart`).
    tasks: HashMap<u64, String>,
    /// The `tsc` of the last record decoded (stamped on `decode_error`).
    last_tsc: u64,
    scratch: Vec<u8>,
    /// Task core files being received (`core_*` events).
    cores: CoreSink,
    /// Frames decoded and frames that failed.
    pub records: u64,
    pub errors: u64,
}

impl Decoder<NoSymbols> {
    pub fn without_symbols() -> Decoder<NoSymbols> {
        Decoder::new(NoSymbols)
    }
}

impl<S: SymbolSource> Decoder<S> {
    pub fn new(symbols: S) -> Decoder<S> {
        Decoder {
            symbols,
            pending: Vec::new(),
            tasks: HashMap::new(),
            last_tsc: 0,
            scratch: vec![0; MAX_FRAME],
            cores: CoreSink::default(),
            records: 0,
            errors: 0,
        }
    }

    /// Decodes what `bytes` completes; appends one line per frame to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &b in bytes {
            if b == 0 {
                let frame = std::mem::take(&mut self.pending);
                self.frame(&frame, out);
            } else {
                self.pending.push(b);
                if self.pending.len() > MAX_FRAME {
                    // No delimiter in sight: report what we have, go on.
                    let frame = std::mem::take(&mut self.pending);
                    self.error(&frame, "frame longer than MAX_FRAME (no delimiter)", out);
                }
            }
        }
    }

    /// The end of the stream: a frame cut short is reported, and so is a
    /// core whose `core_end` never came (a `core_end` line with an `error`).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            let frame = std::mem::take(&mut self.pending);
            self.error(&frame, "truncated frame at the end of the stream", out);
        }
        for head in self.cores.unfinished() {
            let mut l = Line::new("core_end", self.last_tsc);
            l.u64("task", head.task).str("name", &head.name).u64("seq", head.seq);
            l.str("error", "the stream ended before the core's end: not written");
            out.extend_from_slice(l.end().as_bytes());
            out.push(b'\n');
        }
    }

    /// Writes the task core files of the stream to `dir` (`crate::cores`).
    pub fn with_cores(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.cores = CoreSink::to_dir(dir);
        self
    }

    fn frame(&mut self, frame: &[u8], out: &mut Vec<u8>) {
        let mut scratch = std::mem::take(&mut self.scratch);
        match abi::event::decode_frame(frame, &mut scratch) {
            Ok(record) => {
                self.records += 1;
                self.last_tsc = record.tsc;
                let line = self.json(&record);
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
            Err(e) => {
                // A record whose stamps decode but whose event does not (a
                // supervisor's payload the kernel wrote as it was given):
                // the line says who wrote it and when.
                let stamps = abi::event::cobs_decode(frame, &mut scratch)
                    .ok()
                    .and_then(|n| abi::event::decode_record_head(&scratch[..n]));
                self.report_error(frame, e.reason(), stamps, out);
            }
        }
        self.scratch = scratch;
    }

    fn error(&mut self, frame: &[u8], reason: &str, out: &mut Vec<u8>) {
        self.report_error(frame, reason, None, out);
    }

    /// A `decode_error` line: at the record's own stamps when its head
    /// decoded, else at the last good record's `tsc`.
    fn report_error(
        &mut self,
        frame: &[u8],
        reason: &str,
        stamps: Option<(u64, Option<u32>, Option<u64>)>,
        out: &mut Vec<u8>,
    ) {
        self.errors += 1;
        let (tsc, by, emitted) = stamps.unwrap_or((self.last_tsc, None, None));
        let mut l = Line::new("decode_error", tsc);
        if let Some(by) = by {
            l.u64("by", by as u64);
        }
        l.opt_u64("emitted", emitted);
        l.str("error", reason).u64("len", frame.len() as u64);
        let mut hex = String::with_capacity(frame.len() * 2);
        for b in frame {
            let _ = write!(hex, "{b:02x}");
        }
        l.str("bytes", &hex);
        out.extend_from_slice(l.end().as_bytes());
        out.push(b'\n');
    }

    fn symbol(&mut self, task: u64, addr: u64) -> String {
        let name = self.tasks.get(&task).cloned();
        name.and_then(|n| self.symbols.name(&n, addr)).unwrap_or_else(|| "?".into())
    }

    fn sym(&mut self, task: u64, sym: &Sym<'_>) -> String {
        match sym {
            Sym::Name(n) => (*n).to_owned(),
            Sym::Addr(a) => self.symbol(task, *a),
        }
    }

    /// One record as a JSON line (without the newline).
    pub fn json(&mut self, record: &Record<'_>) -> String {
        let e = &record.event;
        let mut l = Line::new(e.name(), record.tsc);
        if let Some(by) = record.by {
            l.u64("by", by as u64);
        }
        if let Some(at) = record.emitted {
            l.u64("emitted", at);
        }
        match *e {
            Event::Boot {
                version,
                mem_bytes,
                memmap_entries,
                rsdp,
                cmdline,
                pvh_version,
                free_frames,
                ram_above_4g_ignored,
                smep,
                smap,
            } => {
                l.str("version", version)
                    .u64("mem_bytes", mem_bytes)
                    .u64("memmap_entries", memmap_entries)
                    .hex("rsdp", rsdp)
                    .str("cmdline", cmdline)
                    .u64("pvh_version", pvh_version)
                    .u64("free_frames", free_frames)
                    .u64("ram_above_4g_ignored", ram_above_4g_ignored)
                    .bool("smep", smep)
                    .bool("smap", smap);
            }
            Event::Platform {
                acpi_revision,
                cpus,
                lapic,
                apic_id,
                ioapics,
                ioapic,
                ioapic_pins,
                ref_timer,
                ref_timer_addr,
                ref_hz,
                calibration_ref_ticks,
                lapic_divide,
                lapic_ticks_per_ms,
                lapic_timer_hz,
                tsc_hz,
            } => {
                l.u64("acpi_revision", acpi_revision)
                    .u64("cpus", cpus)
                    .hex("lapic", lapic)
                    .u64("apic_id", apic_id)
                    .u64("ioapics", ioapics)
                    .hex("ioapic", ioapic)
                    .u64("ioapic_pins", ioapic_pins)
                    .str("ref_timer", ref_timer)
                    .hex("ref_timer_addr", ref_timer_addr)
                    .u64("ref_hz", ref_hz)
                    .u64("calibration_ref_ticks", calibration_ref_ticks)
                    .u64("lapic_divide", lapic_divide)
                    .u64("lapic_ticks_per_ms", lapic_ticks_per_ms)
                    .u64("lapic_timer_hz", lapic_timer_hz)
                    .u64("tsc_hz", tsc_hz);
            }
            Event::Shutdown { code } => {
                let reason =
                    abi::exit::GuestExit::ALL.into_iter().find(|c| *c as u64 == code).map_or("?", |c| c.name());
                l.u64("code", code).str("reason", reason);
            }
            Event::BootError { error } => {
                l.str("error", error);
            }
            Event::KernelFault { vector, error_code, cr2, ref regs } => {
                l.u64("vector", vector)
                    .str("name", exception_name(vector as u8))
                    .hex("error_code", error_code)
                    .hex("cr2", cr2)
                    .hex("rip", regs.rip)
                    .regs(regs);
            }
            Event::KernelPanic { message, file, line } => {
                l.str("message", message).str("file", file).u64("line", line);
            }
            Event::BacktraceFrame { index, pc, cfa } => {
                l.u64("index", index).hex("pc", pc).hex("cfa", cfa);
            }
            Event::Check { task, task_name, name, ok, value, error } => {
                l.opt_u64("task", task).opt_str("task_name", task_name).str("name", name).bool("ok", ok);
                l.opt_u64("value", value).opt_str("error", error);
            }
            Event::TaskStart { task, name, priority, arg, entry, image_bytes, fault_endpoint } => {
                self.tasks.insert(task, name.to_owned());
                l.u64("task", task)
                    .str("name", name)
                    .u64("priority", priority)
                    .u64("arg", arg)
                    .hex("entry", entry)
                    .u64("image_bytes", image_bytes)
                    .opt_str("fault_endpoint", fault_endpoint);
            }
            Event::TaskStartV2 { task, name, priority, arg, entry, image_bytes, fault_endpoint, cpu } => {
                self.tasks.insert(task, name.to_owned());
                l.u64("task", task)
                    .str("name", name)
                    .u64("priority", priority)
                    .u64("arg", arg)
                    .hex("entry", entry)
                    .u64("image_bytes", image_bytes)
                    .opt_str("fault_endpoint", fault_endpoint)
                    .u64("cpu", cpu);
            }
            Event::TaskRejected { index, name, reason } => {
                l.u64("index", index).str("name", name).str("reason", reason);
            }
            Event::ImageRejected { reason, detail } => {
                l.str("reason", reason).str("detail", detail);
            }
            Event::TaskExit { task, name, code } => {
                l.u64("task", task).str("name", name).i64("code", code);
            }
            Event::TaskExitV2 { task, name, code, cpu } => {
                l.u64("task", task).str("name", name).i64("code", code).u64("cpu", cpu);
            }
            Event::TaskPanic { task, name, seq, message, file, line } => {
                l.u64("task", task)
                    .str("name", name)
                    .u64("seq", seq)
                    .str("message", message)
                    .str("file", file)
                    .u64("line", line);
            }
            Event::Fault { task, name, seq, kind, vector, error_code, cr2, ref regs, scopes, fault_tsc } => {
                self.tasks.insert(task, name.to_owned());
                fault_fields(&mut l, task, name, seq, kind, vector, error_code, cr2, regs)
                    .u64("scopes", scopes)
                    .u64("fault_tsc", fault_tsc);
            }
            Event::FaultV2 { task, name, seq, kind, vector, error_code, cr2, ref regs, scopes, fault_tsc, cpu } => {
                self.tasks.insert(task, name.to_owned());
                fault_fields(&mut l, task, name, seq, kind, vector, error_code, cr2, regs)
                    .u64("scopes", scopes)
                    .u64("fault_tsc", fault_tsc)
                    .u64("cpu", cpu);
            }
            Event::FaultPending { task, name, seq, endpoint } => {
                l.u64("task", task).str("name", name).u64("seq", seq).str("endpoint", endpoint);
            }
            Event::Resume { task, name, seq, rip } => {
                l.u64("task", task).str("name", name).u64("seq", seq).hex("rip", rip);
            }
            Event::RestartImage { task, name, seq, delay_ms, restarts, reason, redelivered } => {
                self.tasks.insert(task, name.to_owned());
                l.u64("task", task)
                    .str("name", name)
                    .u64("seq", seq)
                    .str("from", "image")
                    .u64("delay_ms", delay_ms)
                    .u64("restarts", restarts)
                    .opt_str("reason", reason)
                    .opt_u64("redelivered", redelivered);
            }
            Event::RestartCheckpoint { task, name, seq, scope, attempt, pages } => {
                l.u64("task", task)
                    .str("name", name)
                    .u64("seq", seq)
                    .str("from", "checkpoint")
                    .u64("scope", scope)
                    .u64("attempt", attempt)
                    .u64("pages", pages);
            }
            Event::RestartImageV2 { task, name, seq, delay_ms, restarts, reason, redelivered, cpu } => {
                self.tasks.insert(task, name.to_owned());
                l.u64("task", task)
                    .str("name", name)
                    .u64("seq", seq)
                    .str("from", "image")
                    .u64("delay_ms", delay_ms)
                    .u64("restarts", restarts)
                    .opt_str("reason", reason)
                    .opt_u64("redelivered", redelivered)
                    .u64("cpu", cpu);
            }
            Event::RestartCheckpointV2 { task, name, seq, scope, attempt, pages, cpu } => {
                l.u64("task", task)
                    .str("name", name)
                    .u64("seq", seq)
                    .str("from", "checkpoint")
                    .u64("scope", scope)
                    .u64("attempt", attempt)
                    .u64("pages", pages)
                    .u64("cpu", cpu);
            }
            Event::Escalate {
                task,
                name,
                seq,
                action,
                reason_code,
                reason,
                restarts,
                from_scope,
                retries_in_window,
                window_ms,
            } => {
                l.u64("task", task).opt_str("name", name).u64("seq", seq).str("action", action);
                l.opt_u64("reason_code", reason_code).opt_str("reason", reason).opt_u64("restarts", restarts);
                l.opt_u64("from_scope", from_scope)
                    .opt_u64("retries_in_window", retries_in_window)
                    .opt_u64("window_ms", window_ms);
            }
            Event::Object { kind, index, name, base, size } => {
                l.str("kind", kind).u64("index", index).str("name", name).opt_hex("base", base).opt_u64("size", size);
            }
            Event::CapRejected { index, reason } | Event::RegionRejected { index, reason } => {
                l.u64("index", index).str("reason", reason);
            }
            Event::RegionMapFailed { task, region } => {
                l.u64("task", task).str("region", region);
            }
            Event::AllTasksDone { exited, faulted, stopped, blocked, free_frames } => {
                l.u64("exited", exited)
                    .u64("faulted", faulted)
                    .u64("stopped", stopped)
                    .u64("blocked", blocked)
                    .u64("free_frames", free_frames);
            }
            Event::InjectError { id, line, error } => {
                l.opt_u64("id", id).opt_str("line", line).str("error", error);
            }
            Event::InjectArmed { id, kind } => {
                l.u64("id", id).str("kind", kind);
            }
            Event::TaskInfo { task, name, state, scopes, restarts } => {
                l.u64("task", task)
                    .str("name", name)
                    .str("state", state)
                    .u64("scopes", scopes)
                    .u64("restarts", restarts);
            }
            Event::Stats { ticks, tasks, alive, injected, armed, free_frames } => {
                l.u64("ticks", ticks)
                    .u64("tasks", tasks)
                    .u64("alive", alive)
                    .u64("injected", injected)
                    .u64("armed", armed)
                    .u64("free_frames", free_frames);
            }
            Event::InjectMissed { id, reason } => {
                l.u64("id", id).str("reason", reason);
            }
            Event::Inject { id, task, name, kind, rip, detail, seq } => {
                l.u64("id", id).u64("task", task).str("name", name).str("kind", kind).hex("rip", rip);
                match detail {
                    InjectDetail::None => {}
                    InjectDetail::PageFault { cr2 } => {
                        l.hex("cr2", cr2);
                    }
                    InjectDetail::RegFlip { reg, bit, before, after } => {
                        l.str("reg", reg).u64("bit", bit).hex("before", before).hex("after", after);
                    }
                    InjectDetail::MemFlip { addr, bit } => {
                        l.hex("addr", addr).u64("bit", bit);
                    }
                    InjectDetail::Missed { missed } => {
                        l.str("missed", missed);
                    }
                    InjectDetail::Skip { len } => {
                        l.u64("len", len);
                    }
                }
                l.opt_u64("seq", seq);
            }
            Event::Backtrace { task, seq, stop, truncated, pages_read, ref frames } => {
                let stop = match stop {
                    WalkStop::Outermost => "outermost".to_owned(),
                    WalkStop::DepthLimit => "depth_limit".to_owned(),
                    WalkStop::NoFde(pc) => format!("no_fde at {pc:#x}"),
                    WalkStop::Unreadable(addr) => format!("unreadable {addr:#x}"),
                    WalkStop::Other(text) => text.to_owned(),
                };
                l.u64("task", task)
                    .u64("seq", seq)
                    .u64("count", frames.len() as u64)
                    .str("stop", &stop)
                    .bool("truncated", truncated)
                    .u64("pages_read", pages_read);
                let mut list = String::from("[");
                for (i, f) in frames.iter().enumerate() {
                    let at = if f.exact { f.pc } else { f.pc.saturating_sub(1) };
                    let symbol = self.symbol(task, at);
                    if i > 0 {
                        list.push(',');
                    }
                    let _ = write!(list, "{{\"pc\":\"{:#x}\",\"symbol\":{}}}", f.pc, quote(&symbol));
                }
                list.push(']');
                l.raw("frames", &list);
            }
            Event::Release {
                task,
                seq,
                kind,
                addr,
                scope,
                origin,
                ref frame,
                outcome,
                woken,
                count,
                error,
                poisoned,
            } => {
                let frame = self.sym(task, frame);
                l.u64("task", task)
                    .u64("seq", seq)
                    .str("kind", kind)
                    .hex("addr", addr)
                    .u64("scope", scope)
                    .str("origin", origin)
                    .str("frame", &frame)
                    .str("outcome", outcome)
                    .opt_u64("woken", woken)
                    .opt_u64("count", count)
                    .opt_str("error", error)
                    .bool("poisoned", poisoned);
            }
            Event::FaultReport { task, seq, ref fault, message, ref action, ref cost } => {
                l.u64("task", task).u64("seq", seq);
                if let Some(f) = fault {
                    describe(&mut l, f);
                }
                l.opt_str("message", message);
                match *action {
                    Decision::Restart { delay_ms } => {
                        l.str("action", "restart").u64("delay_ms", delay_ms);
                    }
                    Decision::Resume { resume_rip } => {
                        l.str("action", "resume").hex("resume_rip", resume_rip);
                    }
                    Decision::Stop { reason, restarts_in_window, window_ms } => {
                        l.str("action", "stop")
                            .str("reason", reason)
                            .opt_u64("restarts_in_window", restarts_in_window)
                            .opt_u64("window_ms", window_ms);
                    }
                    Decision::Rollback { scope, ref frame, releases, pages } => {
                        let frame = self.sym(task, frame);
                        l.str("action", "rollback")
                            .u64("scope", scope)
                            .str("frame", &frame)
                            .u64("releases", releases)
                            .u64("pages", pages);
                    }
                    Decision::Other { action } => {
                        l.str("action", action);
                    }
                }
                if let Some(c) = cost {
                    let phases: Vec<String> =
                        abi::event::PHASES.iter().zip(c.phases).map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    l.u64("fault_tsc", c.fault_tsc)
                        .u64("stack_bytes", c.stack_bytes)
                        .raw("phases", &format!("{{{}}}", phases.join(",")))
                        .u64("backlog", c.backlog)
                        .u64("late", c.late);
                }
            }
            Event::RegsCheck { task, seq, vector, ok, compared, ref first, error } => {
                l.str("name", "regs-match").u64("task", task).u64("seq", seq).bool("ok", ok).u64("vector", vector);
                if let Some((fields, mismatches)) = compared {
                    l.u64("mismatches", mismatches).u64("fields", fields);
                }
                if let Some(m) = first {
                    l.str("first", m.field).hex("expected", m.expected).hex("got", m.got);
                }
                l.opt_str("error", error);
            }
            Event::Legacy { json, .. } => {
                if !json.is_empty() {
                    l.text.push(',');
                    l.text.push_str(json);
                }
            }
            Event::TooLarge { kind } => {
                l.str("kind", kind);
            }
            Event::CoreBegin { task, name, seq, kind, vector, error_code, cr2, regs, entry, build_id, skipped } => {
                self.tasks.insert(task, name.to_owned());
                l.u64("task", task).str("name", name).u64("seq", seq);
                l.str("build_id", &crate::cores::hex(build_id.0)).hex("entry", entry).u64("skipped", skipped);
                let build_id = build_id.0.to_vec();
                let (name, regs) = (name.to_owned(), regs);
                let head = CoreHead { task, name, seq, kind, vector, error_code, cr2, regs, entry, build_id };
                self.cores.begin(head);
            }
            Event::CoreMemory { task, seq, addr, len, at_fault, bytes } => {
                l.u64("task", task).u64("seq", seq).hex("addr", addr).u64("len", len);
                l.bool("at_fault", at_fault).bool("zeros", bytes.0.is_empty());
                self.cores.memory(task, seq, addr, len, at_fault, bytes.0);
            }
            Event::CoreEnd { task, seq, chunks, bytes, cut } => {
                let w = self.cores.end(task, seq, chunks, bytes);
                l.u64("task", task).str("name", &w.head.name).u64("seq", seq).u64("chunks", chunks).u64("bytes", bytes);
                l.opt_str("cut", cut).opt_str("file", w.file.as_deref()).u64("segments", w.segments as u64);
                l.u64("exact_bytes", w.exact_bytes).u64("later_bytes", w.later_bytes);
                l.opt_str("error", w.error.as_deref());
            }
            Event::Smp { cpus, cpus_online, trampoline } => {
                l.u64("cpus", cpus).u64("cpus_online", cpus_online).hex("trampoline", trampoline);
            }
            Event::CpuFailed { apic_id, reason } => {
                l.u64("apic_id", apic_id).str("reason", reason);
            }
        }
        l.end()
    }
}

/// The common fields of a `fault_report` (the fault server's `describe`).
/// The fields every version of the `fault` event has, in their order.
#[allow(clippy::too_many_arguments)]
fn fault_fields<'l>(
    l: &'l mut Line,
    task: u64,
    name: &str,
    seq: u64,
    kind: u64,
    vector: u64,
    error_code: u64,
    cr2: u64,
    regs: &Registers,
) -> &'l mut Line {
    let kind_name = FaultKind::from_u64(kind).map_or("?", FaultKind::name);
    let exception = if kind == FaultKind::Exception as u64 { exception_name(vector as u8) } else { kind_name };
    l.u64("task", task)
        .str("name", name)
        .u64("seq", seq)
        .str("kind", kind_name)
        .u64("vector", vector)
        .str("exception", exception)
        .hex("error_code", error_code)
        .hex("cr2", cr2)
        .hex("rip", regs.rip)
        .regs(regs)
}

fn describe(l: &mut Line, f: &FaultSummary) {
    let kind = FaultKind::from_u64(f.kind);
    l.str("kind", kind.map_or("unknown", FaultKind::name)).hex("rip", f.rip).u64("restarts", f.restarts);
    if kind == Some(FaultKind::Exception) {
        l.u64("vector", f.vector)
            .str("exception", exception_name(f.vector.min(255) as u8))
            .hex("error_code", f.error_code);
        if f.vector == 14 {
            l.hex("cr2", f.cr2);
        }
    }
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"?\"".into())
}

/// One JSON line under construction, fields in the order written.
struct Line {
    text: String,
}

impl Line {
    fn new(ev: &str, tsc: u64) -> Line {
        let mut l = Line { text: String::with_capacity(256) };
        l.text.push_str("{\"ev\":");
        l.text.push_str(&quote(ev));
        l.u64("tsc", tsc);
        l
    }

    fn key(&mut self, k: &str) -> &mut String {
        self.text.push_str(",\"");
        self.text.push_str(k);
        self.text.push_str("\":");
        &mut self.text
    }

    fn u64(&mut self, k: &str, v: u64) -> &mut Line {
        let _ = write!(self.key(k), "{v}");
        self
    }

    fn i64(&mut self, k: &str, v: i64) -> &mut Line {
        let _ = write!(self.key(k), "{v}");
        self
    }

    fn hex(&mut self, k: &str, v: u64) -> &mut Line {
        let _ = write!(self.key(k), "\"{v:#x}\"");
        self
    }

    fn bool(&mut self, k: &str, v: bool) -> &mut Line {
        self.key(k).push_str(if v { "true" } else { "false" });
        self
    }

    fn str(&mut self, k: &str, v: &str) -> &mut Line {
        let q = quote(v);
        self.key(k).push_str(&q);
        self
    }

    fn raw(&mut self, k: &str, json: &str) -> &mut Line {
        self.key(k).push_str(json);
        self
    }

    fn opt_u64(&mut self, k: &str, v: Option<u64>) -> &mut Line {
        if let Some(v) = v {
            self.u64(k, v);
        }
        self
    }

    fn opt_hex(&mut self, k: &str, v: Option<u64>) -> &mut Line {
        if let Some(v) = v {
            self.hex(k, v);
        }
        self
    }

    fn opt_str(&mut self, k: &str, v: Option<&str>) -> &mut Line {
        if let Some(v) = v {
            self.str(k, v);
        }
        self
    }

    fn regs(&mut self, r: &Registers) -> &mut Line {
        let mut obj = String::from("{");
        for (i, (name, value)) in r.named().iter().enumerate() {
            if i > 0 {
                obj.push(',');
            }
            let _ = write!(obj, "\"{name}\":\"{value:#x}\"");
        }
        obj.push('}');
        self.raw("regs", &obj)
    }

    fn end(mut self) -> String {
        self.text.push('}');
        self.text
    }
}

/// Decodes a whole capture (`events.bin`) to JSON lines (task core files
/// are checked, not written: [`decode_all_with_cores`]).
pub fn decode_all<S: SymbolSource>(raw: &[u8], symbols: S) -> Vec<u8> {
    decode(raw, Decoder::new(symbols))
}

/// [`decode_all`], writing the stream's task core files to `cores`.
pub fn decode_all_with_cores<S: SymbolSource>(raw: &[u8], symbols: S, cores: &std::path::Path) -> Vec<u8> {
    decode(raw, Decoder::new(symbols).with_cores(cores))
}

fn decode<S: SymbolSource>(raw: &[u8], mut decoder: Decoder<S>) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() * 3);
    decoder.feed(raw, &mut out);
    decoder.finish(&mut out);
    out
}

/// Decodes the capture `raw` to `jsonl`, naming task frames from the boot
/// image `image` if given; the task core files of the stream go to
/// `cores/` next to `jsonl` (emptied first: the cores of this run only).
pub fn decode_file(
    raw: &std::path::Path,
    jsonl: &std::path::Path,
    image: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let bytes = std::fs::read(raw).with_context(|| format!("reading {}", raw.display()))?;
    let cores = crate::cores::dir_for(jsonl);
    let _ = std::fs::remove_dir_all(&cores);
    let out = match image.and_then(|p| ImageSymbols::from_file(p).ok()) {
        Some(symbols) => decode_all_with_cores(&bytes, symbols, &cores),
        None => decode_all_with_cores(&bytes, NoSymbols, &cores),
    };
    std::fs::write(jsonl, out).with_context(|| format!("writing {}", jsonl.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::event::{Frame, heapless};
    use serde_json::Value;

    /// Names `addr` `fn_<hex>` in task `bank`, nothing elsewhere.
    struct Fake;

    impl SymbolSource for Fake {
        fn name(&mut self, task: &str, addr: u64) -> Option<String> {
            (task == "bank").then(|| format!("fn_{addr:x}"))
        }
    }

    fn frame(tsc: u64, by: Option<u32>, event: &Event<'_>) -> Vec<u8> {
        let mut buf = [0u8; MAX_FRAME];
        abi::event::encode_frame(tsc, by, event, &mut buf).unwrap().to_vec()
    }

    fn lines(out: &[u8]) -> Vec<Value> {
        String::from_utf8(out.to_vec()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn stream() -> Vec<u8> {
        let mut frames = heapless::Vec::new();
        frames.push(Frame { pc: 0x400b32, exact: true }).unwrap();
        frames.push(Frame { pc: 0x401001, exact: false }).unwrap();
        let regs = abi::trap::Registers { rip: 0x400b32, rax: 0x10, ..Default::default() };
        let mut raw = Vec::new();
        raw.extend(frame(
            1,
            None,
            &Event::TaskStart {
                task: 6,
                name: "bank",
                priority: 2,
                arg: 1,
                entry: 0x400000,
                image_bytes: 9,
                fault_endpoint: Some("faults"),
            },
        ));
        raw.extend(frame(
            2,
            None,
            &Event::Fault {
                task: 6,
                name: "bank",
                seq: 3,
                kind: 1,
                vector: 14,
                error_code: 6,
                cr2: 0x10,
                regs,
                scopes: 1,
                fault_tsc: 2,
            },
        ));
        raw.extend(frame(
            3,
            Some(1),
            &Event::Backtrace { task: 6, seq: 3, stop: WalkStop::Outermost, truncated: false, pages_read: 2, frames },
        ));
        raw.extend(frame(
            4,
            Some(1),
            &Event::Release {
                task: 6,
                seq: 3,
                kind: "mutex",
                addr: 0x2000_0000_0000,
                scope: 1,
                origin: "mutex_registry",
                frame: Sym::Addr(0x400900),
                outcome: "released",
                woken: Some(0),
                count: None,
                error: None,
                poisoned: true,
            },
        ));
        raw.extend(frame(
            5,
            Some(1),
            &Event::FaultReport {
                task: 6,
                seq: 3,
                fault: Some(FaultSummary { kind: 1, rip: 0x400b32, restarts: 0, vector: 14, error_code: 6, cr2: 0x10 }),
                message: None,
                action: Decision::Rollback { scope: 1, frame: Sym::Name("bank::transfer"), releases: 1, pages: 8 },
                cost: None,
            },
        ));
        raw.extend(frame(6, Some(1), &Event::Legacy { kind: "check", json: "\"name\":\"x\",\"ok\":true" }));
        raw.extend(frame(7, None, &Event::Shutdown { code: 0 }));
        raw
    }

    #[test]
    fn records_become_the_documented_json() {
        let out = decode_all(&stream(), Fake);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("{\"ev\":\"task_start\",\"tsc\":1,\"task\":6,"), "{text}");
        let v = lines(&out);
        assert_eq!(v.len(), 7);
        let fault = &v[1];
        assert_eq!(fault["ev"], "fault");
        assert_eq!(fault["kind"], "exception");
        assert_eq!(fault["exception"], "page_fault");
        assert_eq!(fault["error_code"], "0x6");
        assert_eq!(fault["rip"], "0x400b32");
        assert_eq!(fault["regs"]["rax"], "0x10");
        assert_eq!(fault["regs"].as_object().unwrap().len(), 22);
        assert_eq!(fault["fault_tsc"], 2);
        assert!(fault.get("by").is_none());
        let bt = &v[2];
        assert_eq!(bt["by"], 1);
        assert_eq!(bt["count"], 2);
        assert_eq!(bt["stop"], "outermost");
        // Frame 0 is named at its pc, callers at pc - 1 (the call).
        assert_eq!(bt["frames"][0]["pc"], "0x400b32");
        assert_eq!(bt["frames"][0]["symbol"], "fn_400b32");
        assert_eq!(bt["frames"][1]["symbol"], "fn_401000");
        let release = &v[3];
        assert_eq!(release["frame"], "fn_400900");
        assert_eq!(release["addr"], "0x200000000000");
        assert_eq!(release["poisoned"], true);
        let report = &v[4];
        assert_eq!(report["action"], "rollback");
        assert_eq!(report["frame"], "bank::transfer");
        assert_eq!(report["exception"], "page_fault");
        assert_eq!(report["cr2"], "0x10");
        assert_eq!(v[5]["ev"], "check");
        assert_eq!(v[5]["name"], "x");
        assert_eq!(v[5]["by"], 1);
        assert_eq!(v[6]["reason"], "success");
    }

    #[test]
    fn streaming_in_any_chunks_gives_the_same_lines() {
        let raw = stream();
        let whole = decode_all(&raw, Fake);
        for size in [1, 2, 3, 7, 64] {
            let mut d = Decoder::new(Fake);
            let mut out = Vec::new();
            for chunk in raw.chunks(size) {
                d.feed(chunk, &mut out);
            }
            d.finish(&mut out);
            assert_eq!(out, whole, "chunks of {size}");
        }
    }

    #[test]
    fn unknown_tasks_get_question_marks() {
        let out = decode_all(&stream(), NoSymbols);
        let v = lines(&out);
        assert_eq!(v[2]["frames"][0]["symbol"], "?");
        assert_eq!(v[3]["frame"], "?");
    }

    #[test]
    fn bad_frames_become_decode_error_lines_with_their_bytes() {
        let mut raw = stream();
        let good = raw.len();
        // Garbage between two good frames, an empty frame, then a cut one.
        raw.extend_from_slice(&[0x02, 0x7f, 0x00]);
        raw.push(0x00);
        raw.extend(frame(9, None, &Event::Shutdown { code: 1 }));
        let last = frame(10, None, &Event::Shutdown { code: 0 });
        raw.extend_from_slice(&last[..last.len() - 2]);
        let out = decode_all(&raw, NoSymbols);
        let v = lines(&out);
        assert_eq!(v.len(), 7 + 4, "{}", String::from_utf8_lossy(&out));
        assert_eq!(v[7]["ev"], "decode_error");
        assert_eq!(v[7]["bytes"], "027f");
        assert_eq!(v[7]["tsc"], 7, "the last good record's tsc");
        assert_eq!(v[8]["ev"], "decode_error");
        assert_eq!(v[8]["error"], "empty frame");
        assert_eq!(v[9]["reason"], "check_failed");
        assert_eq!(v[10]["ev"], "decode_error");
        assert_eq!(v[10]["error"], "truncated frame at the end of the stream");
        assert!(good > 0);
    }

    #[test]
    fn a_supervisors_garbage_is_a_decode_error_with_its_stamps_and_spares_its_neighbours() {
        // What the kernel writes for an `EMIT`ted event it does not decode:
        // its stamps, then the supervisor's bytes (here a `release` tag and
        // garbage), framed alone.
        let record = |tsc: u64, emitted: Option<u64>, payload: &[u8]| {
            let mut head = [0u8; abi::event::MAX_HEAD];
            let n = abi::event::record_head(tsc, Some(9), emitted, &mut head);
            let mut raw = head[..n].to_vec();
            raw.extend_from_slice(payload);
            let mut framed = vec![0u8; abi::event::cobs_room(raw.len())];
            let n = abi::event::cobs_encode(&raw, &mut framed).unwrap();
            framed.truncate(n);
            framed
        };
        let check = Event::Check { task: None, task_name: None, name: "x", ok: true, value: None, error: None };
        let mut good = [0u8; MAX_FRAME];
        let good = abi::event::encode_event(&check, &mut good).unwrap().to_vec();
        let mut raw = record(10, Some(20), &good);
        raw.extend(record(11, Some(21), &[31, 0xff, 0xff, 0x00, 0x07]));
        raw.extend(record(12, None, &good));
        let v = lines(&decode_all(&raw, NoSymbols));
        assert_eq!(v.len(), 3);
        assert_eq!(
            (v[0]["ev"].as_str(), v[0]["tsc"].as_u64(), v[0]["emitted"].as_u64()),
            (Some("check"), Some(10), Some(20))
        );
        let bad = &v[1];
        assert_eq!(bad["ev"], "decode_error");
        assert_eq!(bad["tsc"], 11, "the record's own time, not the last good one");
        assert_eq!(bad["by"], 9);
        assert_eq!(bad["emitted"], 21);
        assert_eq!(bad["error"], "truncated record");
        assert_eq!(
            (v[2]["ev"].as_str(), v[2]["tsc"].as_u64(), v[2]["by"].as_u64()),
            (Some("check"), Some(12), Some(9))
        );
    }

    #[test]
    fn a_frame_without_delimiter_is_cut_and_reported() {
        let raw = vec![0x55u8; MAX_FRAME * 2 + 10];
        let v = lines(&decode_all(&raw, NoSymbols));
        assert!(v.len() >= 2);
        assert!(v.iter().all(|e| e["ev"] == "decode_error"));
        let total: u64 = v.iter().map(|e| e["len"].as_u64().unwrap()).sum();
        assert_eq!(total, raw.len() as u64, "every byte is accounted for");
    }
}
