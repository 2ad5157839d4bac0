//! Core files of faulted tasks: made after the fault's report, streamed to
//! the host as typed events, written there as ELF core files.
//!
//! The server formats no ELF: it sends what a core holds as
//! `core_begin` (the registers at the fault, the fault, the task ELF's entry
//! point and GNU build id), `core_memory` chunks (memory, or runs of zero
//! bytes) and `core_end` (`abi::event`); the host writes
//! `target/rewind/cores/<task>-<seq>.core` (`xtask/src/cores.rs`).
//!
//! ## What a core holds, and how exact it is
//!
//! By the time the server makes a core, the task was rolled back or
//! restarted and ran again: its memory at the fault is gone, except what
//! the fault message copied then. So a core holds two kinds of memory,
//! each chunk marked (`at_fault`):
//!
//! - **at the fault (exact)**: the registers, the stack from `rsp` up as
//!   the message carries it (`abi::fault::STACK_WINDOW`, 4 KiB: every frame
//!   the walks of the test and demo tasks reach), and the recovery page;
//! - **read when the core is made** (after recovery, *not* the faulting
//!   state): the rest of the stack up to its top, the ELF's writable
//!   segments (`.data`, `.bss`), the heap (anonymous memory from
//!   `abi::layout::USER_MAP_BASE` up to its first unmapped page) and the
//!   shared regions the task holds.
//!
//! Code and constants are not in the core: a debugger reads them from the
//! executable, which the build id names. Nothing here runs on the recovery
//! path: the message's copies cost the kernel nothing more than they did,
//! and the rest is read after the report, at the server's lowered priority,
//! one `EMIT` batch per step of the main loop, which checks for faults
//! between steps — so a core never delays a recovery.
//!
//! ## How many
//!
//! The manifest's `core_dumps` (per task, or for the whole image; `TASK_INFO`
//! hands it to the server) is a rate: at most that many cores per task per
//! [`WINDOW_MS`] (0 = none, the default). A core also holds at most
//! [`MAX_CORE_BYTES`] bytes of memory besides zero runs, each area read at
//! report time at most [`MAX_AREA`], and at most [`MAX_PENDING`] cores wait
//! to be sent. A fault over any limit gets no core; the next core of its
//! task counts it (`skipped`), and a core cut short says why (`cut`).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use libtask::abi::event::{Bytes, Event};
use libtask::abi::fault::Parsed;
use libtask::abi::layout::{PAGE_SIZE, USER_MAP_BASE, USER_STACK_TOP};
use libtask::abi::trap::Registers;
use libtask::println;
use libtask::supervise::{self, EventBatch, TaskId};
use object::LittleEndian as LE;
use object::elf::{FileHeader64, NT_GNU_BUILD_ID, PF_W, PT_LOAD, PT_NOTE, ProgramHeader64};
use object::read::elf::{FileHeader, ProgramHeader};

/// The rate limit's window: at most `core_dumps` cores per task in it.
pub const WINDOW_MS: u64 = 60_000;
/// Most bytes of memory in one core, zero runs not counted.
pub const MAX_CORE_BYTES: usize = 64 * 1024;
/// Most bytes read of one area at report time (the stack's rest, a
/// writable segment, the heap, a region).
pub const MAX_AREA: u64 = 64 * 1024;
/// Cores made and waiting to be sent.
pub const MAX_PENDING: usize = 2;
/// Most memory bytes in one `core_memory` event: three fit an `EMIT`
/// batch (`abi::event::MAX_EMIT_BATCH`) with a `core_begin` and a
/// `core_end`.
const CHUNK: usize = 2048;
const CHUNKS_PER_STEP: usize = 3;
/// Most program headers read, and the largest note segment.
const MAX_PHDRS: usize = 32;
const MAX_NOTES: u64 = 4096;

/// What a core says about its executable, read once per task (a restart
/// reloads the same file).
#[derive(Default)]
struct Identity {
    entry: u64,
    build_id: Vec<u8>,
    /// Writable `PT_LOAD` segments: `(vaddr, memsz)`.
    writable: Vec<(u64, u64)>,
}

/// Per task: its limit and the window's count.
struct TaskCores {
    limit: u64,
    window_start: u64,
    in_window: u64,
    skipped: u64,
    identity: Result<Identity, &'static str>,
}

/// One piece of memory of a core: bytes, or `len` zero bytes (`data` empty).
struct Area {
    addr: u64,
    len: u64,
    at_fault: bool,
    data: Vec<u8>,
}

/// A core made and being sent.
struct Pending {
    task: TaskId,
    seq: u64,
    name: [u8; libtask::abi::image::NAME_LEN],
    fault: (u64, u64, u64, u64),
    regs: Registers,
    entry: u64,
    build_id: Vec<u8>,
    skipped: u64,
    areas: VecDeque<Area>,
    begun: bool,
    chunks: u64,
    bytes: u64,
    cut: Option<&'static str>,
}

/// The core files the server makes (see the module note).
#[derive(Default)]
pub struct Cores {
    tasks: BTreeMap<TaskId, TaskCores>,
    pending: VecDeque<Pending>,
}

impl Cores {
    /// Whether cores wait to be sent (the server stays at its lowered
    /// priority and sends a step at a time between polls for faults).
    pub fn sending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Makes the core of the fault in `p` if its task's limit allows:
    /// copies what the message holds, reads the rest of its memory now.
    pub fn make(&mut self, p: &Parsed<'_>) {
        let msg = p.msg;
        let state = self.tasks.entry(msg.task).or_insert_with(|| TaskCores {
            // A task whose policy is unreadable gets no core.
            limit: supervise::task_info(msg.task).map_or(0, |i| i.core_dumps),
            window_start: msg.fault_ticks,
            in_window: 0,
            skipped: 0,
            identity: identity(msg.task),
        });
        if state.limit == 0 {
            return;
        }
        if msg.fault_ticks.saturating_sub(state.window_start) >= WINDOW_MS {
            state.window_start = msg.fault_ticks;
            state.in_window = 0;
        }
        if state.in_window >= state.limit || self.pending.len() >= MAX_PENDING {
            state.skipped += 1;
            return;
        }
        state.in_window += 1;
        let (entry, build_id, writable) = match &state.identity {
            Ok(id) => (id.entry, id.build_id.clone(), &id.writable[..]),
            Err(_) => (0, Vec::new(), &[][..]),
        };
        let mut core = Pending {
            task: msg.task,
            seq: msg.seq,
            name: msg.name,
            fault: (msg.kind, msg.vector, msg.error_code, msg.cr2),
            regs: msg.regs,
            entry,
            build_id,
            skipped: core::mem::take(&mut state.skipped),
            areas: VecDeque::new(),
            begun: false,
            chunks: 0,
            bytes: 0,
            cut: state.identity.as_ref().err().copied(),
        };
        let mut budget = MAX_CORE_BYTES;
        // At the fault: the message's copies.
        core.copy(msg.stack_base, p.stack, &mut budget);
        if msg.recovery != 0 {
            core.copy(msg.recovery, p.recovery, &mut budget);
        }
        // Now: the rest of the stack, the writable segments, the heap, the
        // shared regions.
        let stack_end = msg.stack_base.saturating_add(p.stack.len() as u64);
        if !p.stack.is_empty() && stack_end < USER_STACK_TOP {
            core.read(stack_end, USER_STACK_TOP - stack_end, &mut budget);
        }
        for &(addr, len) in writable {
            core.read(addr, len, &mut budget);
        }
        core.read(USER_MAP_BASE, MAX_AREA, &mut budget);
        for r in msg.regions() {
            core.read(r.base, r.size, &mut budget);
        }
        self.pending.push_back(core);
    }

    /// Sends the next piece of the oldest core: one `EMIT` batch.
    pub fn send_step(&mut self, batch: &mut EventBatch) {
        let Some(core) = self.pending.front_mut() else { return };
        let mut push = |event: &Event<'_>| {
            if let Err(e) = batch.push(event, 0) {
                println!("fault-server: core event {} refused ({})", event.name(), e.name());
            }
        };
        if !core.begun {
            core.begun = true;
            let n = core.name.iter().position(|&b| b == 0).unwrap_or(core.name.len());
            let (kind, vector, error_code, cr2) = core.fault;
            push(&Event::CoreBegin {
                task: core.task,
                name: core::str::from_utf8(&core.name[..n]).unwrap_or("?"),
                seq: core.seq,
                kind,
                vector,
                error_code,
                cr2,
                regs: core.regs,
                entry: core.entry,
                build_id: Bytes(&core.build_id),
                skipped: core.skipped,
            });
        }
        let (task, seq) = (core.task, core.seq);
        for _ in 0..CHUNKS_PER_STEP {
            let Some(area) = core.areas.front_mut() else { break };
            let n = if area.data.is_empty() { area.len } else { area.len.min(CHUNK as u64) };
            let bytes = if area.data.is_empty() { &[][..] } else { &area.data[..n as usize] };
            let at_fault = area.at_fault;
            push(&Event::CoreMemory { task, seq, addr: area.addr, len: n, at_fault, bytes: Bytes(bytes) });
            core.chunks += 1;
            core.bytes += n;
            if n == area.len {
                core.areas.pop_front();
            } else {
                area.data.drain(..n as usize);
                area.addr += n;
                area.len -= n;
            }
        }
        let done = core.areas.is_empty();
        if done {
            push(&Event::CoreEnd { task, seq, chunks: core.chunks, bytes: core.bytes, cut: core.cut });
        }
        if let Err(e) = batch.send() {
            println!("fault-server: core of task {task} fault {seq} refused ({})", e.name());
        }
        if done {
            self.pending.pop_front();
        }
    }
}

impl Pending {
    /// Bytes copied at the fault, zero pages as zero runs.
    fn copy(&mut self, addr: u64, bytes: &[u8], budget: &mut usize) {
        let mut at = 0;
        while at < bytes.len() {
            // Up to the next page boundary.
            let a = addr + at as u64;
            let n = ((PAGE_SIZE - a % PAGE_SIZE) as usize).min(bytes.len() - at);
            self.push(a, &bytes[at..at + n], true, budget);
            at += n;
        }
    }

    /// Reads `[addr, addr + len)` of the task now (at most [`MAX_AREA`]),
    /// a page at a time, up to its first unreadable page.
    fn read(&mut self, addr: u64, len: u64, budget: &mut usize) {
        let end = addr.saturating_add(len.min(MAX_AREA));
        let mut a = addr;
        let mut page = vec![0u8; PAGE_SIZE as usize];
        while a < end {
            let n = (PAGE_SIZE - a % PAGE_SIZE).min(end - a) as usize;
            if supervise::read_mem(self.task, a, &mut page[..n]).is_err() {
                return;
            }
            self.push(a, &page[..n], false, budget);
            a += n as u64;
        }
        if len > MAX_AREA {
            self.cut = Some("an area larger than MAX_AREA");
        }
    }

    fn push(&mut self, addr: u64, bytes: &[u8], at_fault: bool, budget: &mut usize) {
        let len = bytes.len() as u64;
        if bytes.iter().all(|&b| b == 0) {
            // Merged with the previous zero run when contiguous.
            if let Some(last) = self.areas.back_mut()
                && last.data.is_empty()
                && last.at_fault == at_fault
                && last.addr + last.len == addr
            {
                last.len += len;
                return;
            }
            self.areas.push_back(Area { addr, len, at_fault, data: Vec::new() });
            return;
        }
        if bytes.len() > *budget {
            self.cut = Some("MAX_CORE_BYTES reached");
            return;
        }
        *budget -= bytes.len();
        if let Some(last) = self.areas.back_mut()
            && !last.data.is_empty()
            && last.at_fault == at_fault
            && last.addr + last.len == addr
        {
            last.data.extend_from_slice(bytes);
            last.len += len;
            return;
        }
        self.areas.push_back(Area { addr, len, at_fault, data: bytes.to_vec() });
    }
}

/// The entry point, build id and writable segments of `task`'s ELF file.
fn identity(task: TaskId) -> Result<Identity, &'static str> {
    let read = |offset: u64, len: usize| -> Result<Vec<u8>, &'static str> {
        let mut buf = vec![0u8; len];
        match supervise::read_image(task, offset, &mut buf) {
            Ok(n) if n == len => Ok(buf),
            _ => Err("the task's ELF file is unreadable"),
        }
    };
    let bad = "the task's ELF program headers are malformed";
    let head = read(0, core::mem::size_of::<FileHeader64<LE>>())?;
    let header = FileHeader64::<LE>::parse(&head[..]).map_err(|_| bad)?;
    let (phoff, phnum) = (header.e_phoff.get(LE), header.e_phnum.get(LE) as usize);
    if header.e_phentsize.get(LE) as usize != core::mem::size_of::<ProgramHeader64<LE>>() || phnum > MAX_PHDRS {
        return Err(bad);
    }
    let table = read(phoff, phnum * core::mem::size_of::<ProgramHeader64<LE>>())?;
    let phdrs: &[ProgramHeader64<LE>] = object::pod::slice_from_bytes(&table, phnum).map_err(|_| bad)?.0;
    let mut id = Identity { entry: header.e_entry.get(LE), ..Identity::default() };
    for ph in phdrs {
        match ph.p_type(LE) {
            PT_LOAD if ph.p_flags(LE).0 & PF_W.0 != 0 => id.writable.push((ph.p_vaddr(LE), ph.p_memsz(LE))),
            PT_NOTE if ph.p_filesz(LE) <= MAX_NOTES => {
                let notes = read(ph.p_offset(LE), ph.p_filesz(LE) as usize)?;
                if let Some(b) = build_id(&notes) {
                    id.build_id = b.to_vec();
                }
            }
            _ => {}
        }
    }
    Ok(id)
}

/// The descriptor of the `GNU` `NT_GNU_BUILD_ID` note in `notes`.
fn build_id(notes: &[u8]) -> Option<&[u8]> {
    let word = |at: usize| Some(u32::from_le_bytes(notes.get(at..at + 4)?.try_into().ok()?) as usize);
    let mut at = 0;
    while at + 12 <= notes.len() {
        let (namesz, descsz, kind) = (word(at)?, word(at + 4)?, word(at + 8)?);
        let name = at + 12;
        let desc = name.checked_add(namesz.next_multiple_of(4))?;
        let end = desc.checked_add(descsz.next_multiple_of(4))?;
        if notes.get(name..name + namesz)? == b"GNU\0" && kind == NT_GNU_BUILD_ID.0 as usize {
            return notes.get(desc..desc + descsz);
        }
        at = end;
    }
    None
}
