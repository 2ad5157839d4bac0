//! Task core files: the fault server's `core_begin`, `core_memory` and
//! `core_end` events assembled and written as ELF core files
//! (`<task>-<seq>.core`, in `cores/` next to `events.jsonl`).
//!
//! The guest sends what a core holds, not its ELF form
//! (`fault-server/server/src/coredump.rs`: what a core holds and how exact
//! each part is); this module writes the ELF that gdb, eu-stack and
//! `cargo xtask stack` read:
//!
//! - `PT_NOTE`: `NT_PRSTATUS` (the registers at the fault, the signal a
//!   Unix process would have got: SIGSEGV for a page or protection fault,
//!   SIGILL for `ud2`, SIGABRT for a panic...), `NT_PRPSINFO` (the task's
//!   name), `NT_AUXV` (`AT_ENTRY`: tools check the executable's entry point
//!   against it), the `GNU` build-id note of the task's ELF, and a
//!   `REWIND` note: text saying which memory is exact (copied at the fault)
//!   and which was read after recovery;
//! - one `PT_LOAD` per contiguous run of memory of one kind (at the fault,
//!   or read later). Where the two overlap (the recovery page lies in the
//!   task's `.bss`), the copy made at the fault wins.
//!
//! Code is not in the core: debuggers read it from the executable.

use abi::trap::Registers;
use object::elf;
use object::{LittleEndian as LE, U16, U32, U64};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What `core_begin` says.
#[derive(Clone, Debug, Default)]
pub struct CoreHead {
    pub task: u64,
    pub name: String,
    pub seq: u64,
    pub kind: u64,
    pub vector: u64,
    pub error_code: u64,
    pub cr2: u64,
    pub regs: Registers,
    pub entry: u64,
    pub build_id: Vec<u8>,
}

/// A core being received.
#[derive(Clone, Debug, Default)]
pub struct Core {
    pub head: CoreHead,
    /// `(addr, at_fault, bytes)` in the order received (zero runs expanded).
    pub memory: Vec<(u64, bool, Vec<u8>)>,
    chunks: u64,
    bytes: u64,
}

/// What became of a core at its `core_end`.
pub struct Written {
    pub head: CoreHead,
    /// The file, relative to the folder of `events.jsonl` (`None`: no
    /// folder to write to).
    pub file: Option<String>,
    /// Why no file was written, if none was.
    pub error: Option<String>,
    pub segments: usize,
    pub exact_bytes: u64,
    pub later_bytes: u64,
}

/// The cores of one event stream.
#[derive(Default)]
pub struct CoreSink {
    /// Where files go (`None`: cores are checked and counted, not written).
    dir: Option<PathBuf>,
    partial: HashMap<(u64, u64), Core>,
}

/// The file name of a core: `<task>-<seq>.core`, the name made safe.
pub fn file_name(task: &str, seq: u64) -> String {
    let safe: String =
        task.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{safe}-{seq}.core")
}

impl CoreSink {
    /// Cores written to `dir` (created on the first core).
    pub fn to_dir(dir: impl Into<PathBuf>) -> CoreSink {
        CoreSink { dir: Some(dir.into()), partial: HashMap::new() }
    }

    pub fn begin(&mut self, head: CoreHead) {
        self.partial.insert((head.task, head.seq), Core { head, ..Core::default() });
    }

    pub fn memory(&mut self, task: u64, seq: u64, addr: u64, len: u64, at_fault: bool, bytes: &[u8]) {
        let Some(core) = self.partial.get_mut(&(task, seq)) else { return };
        let data = if bytes.is_empty() { vec![0; len.min(1 << 30) as usize] } else { bytes.to_vec() };
        core.chunks += 1;
        core.bytes += len;
        core.memory.push((addr, at_fault, data));
    }

    /// The core's end: checks the counts and writes the file.
    pub fn end(&mut self, task: u64, seq: u64, chunks: u64, bytes: u64) -> Written {
        let Some(core) = self.partial.remove(&(task, seq)) else {
            let head = CoreHead { task, seq, ..CoreHead::default() };
            let error = Some(format!("no core_begin for task {task} fault {seq} (lost or cut stream)"));
            return Written { head, file: None, error, segments: 0, exact_bytes: 0, later_bytes: 0 };
        };
        let segments = segments(&core.memory);
        let (mut exact_bytes, mut later_bytes) = (0, 0);
        for s in &segments {
            *if s.1 { &mut exact_bytes } else { &mut later_bytes } += s.2.len() as u64;
        }
        let mut w = Written {
            head: core.head.clone(),
            file: None,
            error: None,
            segments: segments.len(),
            exact_bytes,
            later_bytes,
        };
        if (core.chunks, core.bytes) != (chunks, bytes) {
            w.error = Some(format!(
                "received {} chunks of {} bytes, the core's end says {chunks} chunks of {bytes} bytes: not written",
                core.chunks, core.bytes
            ));
            return w;
        }
        let Some(dir) = &self.dir else { return w };
        let name = file_name(&core.head.name, seq);
        let bytes = write_core(&core.head, &segments);
        let result = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(dir.join(&name), bytes));
        match result {
            Ok(()) => {
                w.file = Some(format!("{}/{name}", dir.file_name().map_or("cores".into(), |d| d.to_string_lossy())))
            }
            Err(e) => w.error = Some(format!("writing {}: {e}", dir.join(&name).display())),
        }
        w
    }

    /// Cores whose end never came (the stream ended): their heads.
    pub fn unfinished(&mut self) -> Vec<CoreHead> {
        let mut left: Vec<CoreHead> = self.partial.drain().map(|(_, c)| c.head).collect();
        left.sort_by_key(|h| h.seq);
        left
    }
}

/// The memory as `(addr, at_fault, bytes)` runs, sorted, contiguous runs of
/// one kind merged, memory copied at the fault winning over memory read
/// later where they overlap.
pub fn segments(memory: &[(u64, bool, Vec<u8>)]) -> Vec<(u64, bool, Vec<u8>)> {
    // Exact runs first, then the later ones minus what the exact ones cover.
    let mut pieces: Vec<(u64, bool, Vec<u8>)> = memory.iter().filter(|m| m.1).cloned().collect();
    let exact: Vec<(u64, u64)> = pieces.iter().map(|p| (p.0, p.0 + p.2.len() as u64)).collect();
    for (addr, _, data) in memory.iter().filter(|m| !m.1) {
        let mut rest = vec![(*addr, *addr + data.len() as u64)];
        for &(a, b) in &exact {
            rest = rest
                .into_iter()
                .flat_map(|(s, e)| {
                    let mut out = Vec::new();
                    if s < a.min(e) {
                        out.push((s, a.min(e)));
                    }
                    if b.max(s) < e {
                        out.push((b.max(s), e));
                    }
                    if a >= e || b <= s {
                        out = vec![(s, e)];
                    }
                    out
                })
                .collect();
        }
        for (s, e) in rest {
            let off = (s - addr) as usize;
            pieces.push((s, false, data[off..off + (e - s) as usize].to_vec()));
        }
    }
    pieces.sort_by_key(|p| p.0);
    let mut out: Vec<(u64, bool, Vec<u8>)> = Vec::new();
    for p in pieces {
        if let Some(last) = out.last_mut()
            && last.1 == p.1
            && last.0 + last.2.len() as u64 == p.0
        {
            last.2.extend_from_slice(&p.2);
            continue;
        }
        out.push(p);
    }
    out
}

/// The Unix signal a fault would have raised (what gdb prints).
pub fn signal(kind: u64, vector: u64) -> u32 {
    const SIGILL: u32 = 4;
    const SIGTRAP: u32 = 5;
    const SIGABRT: u32 = 6;
    const SIGBUS: u32 = 7;
    const SIGFPE: u32 = 8;
    const SIGKILL: u32 = 9;
    const SIGSEGV: u32 = 11;
    const SIGXCPU: u32 = 24;
    match abi::fault::FaultKind::from_u64(kind) {
        Some(abi::fault::FaultKind::Panic) => SIGABRT,
        Some(abi::fault::FaultKind::Watchdog) => SIGXCPU,
        Some(abi::fault::FaultKind::Kill) => SIGKILL,
        _ => match vector {
            0 | 16 | 19 => SIGFPE,
            1 | 3 => SIGTRAP,
            6 => SIGILL,
            17 => SIGBUS,
            _ => SIGSEGV,
        },
    }
}

fn note(out: &mut Vec<u8>, name: &[u8], kind: u32, desc: &[u8]) {
    let namesz = name.len() as u32 + 1;
    out.extend_from_slice(&namesz.to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(name);
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// `elf_prstatus` (x86_64, 336 bytes): the signal, a pid, the registers.
fn prstatus(head: &CoreHead) -> Vec<u8> {
    let mut d = vec![0u8; 336];
    let sig = signal(head.kind, head.vector);
    d[0..4].copy_from_slice(&sig.to_le_bytes()); // si_signo
    d[12..14].copy_from_slice(&(sig as u16).to_le_bytes()); // pr_cursig
    d[32..36].copy_from_slice(&(head.task as u32).to_le_bytes()); // pr_pid
    let r = &head.regs;
    // `user_regs_struct`, from offset 112.
    let regs = [
        r.r15,
        r.r14,
        r.r13,
        r.r12,
        r.rbp,
        r.rbx,
        r.r11,
        r.r10,
        r.r9,
        r.r8,
        r.rax,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        u64::MAX, // orig_rax: not in a system call
        r.rip,
        r.cs,
        r.rflags,
        r.rsp,
        r.ss,
        r.fs_base,
        r.gs_base,
        0,
        0,
        0,
        0,
    ];
    for (i, v) in regs.iter().enumerate() {
        d[112 + i * 8..120 + i * 8].copy_from_slice(&v.to_le_bytes());
    }
    d
}

/// `elf_prpsinfo` (x86_64, 136 bytes): state, pid, the name.
fn prpsinfo(head: &CoreHead) -> Vec<u8> {
    let mut d = vec![0u8; 136];
    d[1] = b'R';
    d[24..28].copy_from_slice(&(head.task as u32).to_le_bytes());
    let name = head.name.as_bytes();
    let n = name.len().min(15);
    d[40..40 + n].copy_from_slice(&name[..n]);
    let args = format!("{} (Rewind task {}, fault {})", head.name, head.task, head.seq);
    let n = args.len().min(79);
    d[56..56 + n].copy_from_slice(&args.as_bytes()[..n]);
    d
}

/// The `REWIND` note's text.
fn describe(head: &CoreHead, segments: &[(u64, bool, Vec<u8>)]) -> String {
    let mut t = format!("Rewind task {} ({}), fault {}\n", head.task, head.name, head.seq);
    let id: String = head.build_id.iter().map(|b| format!("{b:02x}")).collect();
    let _ = writeln!(t, "build id: {}", if id.is_empty() { "none" } else { &id });
    for (addr, exact, data) in segments {
        let when = if *exact { "exact: copied at the fault" } else { "read after recovery, not the faulting state" };
        let _ = writeln!(t, "{addr:#x}..{:#x} {when}", addr + data.len() as u64);
    }
    t
}

/// The ELF core file of `head` with memory `segments` ([`segments`]).
pub fn write_core(head: &CoreHead, segments: &[(u64, bool, Vec<u8>)]) -> Vec<u8> {
    let mut notes = Vec::new();
    note(&mut notes, b"CORE", elf::NT_PRSTATUS.0, &prstatus(head));
    note(&mut notes, b"CORE", elf::NT_PRPSINFO.0, &prpsinfo(head));
    let mut auxv = Vec::new();
    for (k, v) in [(9u64, head.entry), (6, 4096), (0, 0)] {
        // AT_ENTRY, AT_PAGESZ, AT_NULL
        auxv.extend_from_slice(&k.to_le_bytes());
        auxv.extend_from_slice(&v.to_le_bytes());
    }
    note(&mut notes, b"CORE", elf::NT_AUXV.0, &auxv);
    if !head.build_id.is_empty() {
        note(&mut notes, b"GNU", elf::NT_GNU_BUILD_ID.0, &head.build_id);
    }
    note(&mut notes, b"REWIND", 1, describe(head, segments).as_bytes());

    let ehsize = size_of::<elf::FileHeader64<LE>>();
    let phsize = size_of::<elf::ProgramHeader64<LE>>();
    let phnum = 1 + segments.len();
    let notes_at = ehsize + phnum * phsize;
    let mut data_at = (notes_at + notes.len()).next_multiple_of(16);
    let header = elf::FileHeader64::<LE> {
        e_ident: elf::Ident {
            magic: elf::ELFMAG,
            class: elf::ELFCLASS64,
            data: elf::ELFDATA2LSB,
            version: elf::EV_CURRENT,
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            padding: [0; 7],
        },
        e_type: U16::new(LE, elf::ET_CORE),
        e_machine: U16::new(LE, elf::EM_X86_64),
        e_version: U32::new(LE, u32::from(elf::EV_CURRENT.0)),
        e_entry: U64::new(LE, 0),
        e_phoff: U64::new(LE, ehsize as u64),
        e_shoff: U64::new(LE, 0),
        e_flags: U32::new(LE, elf::FileFlags(0)),
        e_ehsize: U16::new(LE, ehsize as u16),
        e_phentsize: U16::new(LE, phsize as u16),
        e_phnum: U16::new(LE, phnum as u16),
        e_shentsize: U16::new(LE, 0),
        e_shnum: U16::new(LE, 0),
        e_shstrndx: U16::new(LE, elf::SymbolSection(0)),
    };
    let ph = |p_type: elf::ProgramType, flags: elf::ProgramFlags, offset: usize, vaddr: u64, size: usize| {
        elf::ProgramHeader64::<LE> {
            p_type: U32::new(LE, p_type),
            p_flags: U32::new(LE, flags),
            p_offset: U64::new(LE, offset as u64),
            p_vaddr: U64::new(LE, vaddr),
            p_paddr: U64::new(LE, 0),
            p_filesz: U64::new(LE, size as u64),
            p_memsz: U64::new(LE, size as u64),
            p_align: U64::new(LE, 1),
        }
    };
    let mut out = Vec::new();
    out.extend_from_slice(object::bytes_of(&header));
    out.extend_from_slice(object::bytes_of(&ph(elf::PT_NOTE, elf::ProgramFlags(0), notes_at, 0, notes.len())));
    for (addr, _, data) in segments {
        out.extend_from_slice(object::bytes_of(&ph(
            elf::PT_LOAD,
            elf::ProgramFlags(elf::PF_R.0 | elf::PF_W.0),
            data_at,
            *addr,
            data.len(),
        )));
        data_at += data.len();
    }
    out.extend_from_slice(&notes);
    out.resize(out.len().next_multiple_of(16), 0);
    for (_, _, data) in segments {
        out.extend_from_slice(data);
    }
    out
}

/// The folder cores of a run go to: `cores/` next to its `events.jsonl`.
pub fn dir_for(events: &Path) -> PathBuf {
    events.parent().unwrap_or(Path::new(".")).join("cores")
}

pub use walker::host::build_id;

/// Hex of a build id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> CoreHead {
        let mut regs = Registers::default();
        regs.rip = 0x40_1234;
        regs.rsp = 0x7fff_fefe_ff00;
        regs.rbp = 0x7fff_fefe_ff40;
        CoreHead {
            task: 6,
            name: "teller-faulty".into(),
            seq: 3,
            kind: 1,
            vector: 6,
            regs,
            entry: 0x40_1000,
            build_id: vec![0xab; 20],
            ..CoreHead::default()
        }
    }

    #[test]
    fn memory_copied_at_the_fault_wins_and_runs_merge() {
        let mem = vec![
            (0x1000, false, vec![1u8; 0x2000]), // later: 0x1000..0x3000
            (0x1800, true, vec![2u8; 0x100]),   // exact inside it
            (0x3000, false, vec![3u8; 0x10]),   // contiguous with the first
        ];
        let s = segments(&mem);
        let spans: Vec<(u64, bool, usize)> = s.iter().map(|p| (p.0, p.1, p.2.len())).collect();
        assert_eq!(spans, vec![(0x1000, false, 0x800), (0x1800, true, 0x100), (0x1900, false, 0x1710)]);
        assert_eq!(s[2].2[0x16ff], 1);
        assert_eq!(s[2].2[0x1700], 3);
    }

    #[test]
    fn a_written_core_reads_back_with_its_registers_memory_and_build_id() {
        let mem = vec![(0x7fff_fefe_ff00, true, (0..=255u8).collect::<Vec<u8>>())];
        let bytes = write_core(&head(), &segments(&mem));
        let core = walker::host::CoreFile::parse(bytes.clone(), "test").unwrap();
        assert_eq!(core.regs().pc(), Some(0x40_1234));
        assert_eq!(core.at_entry, Some(0x40_1000));
        assert_eq!(core.bytes(0x7fff_fefe_ff10, 2), Some(&[0x10u8, 0x11][..]));
        assert_eq!(build_id(&bytes), Some(vec![0xab; 20]));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("0x7ffffefeff00..0x7ffffeff0000 exact: copied at the fault"), "{text}");
    }

    #[test]
    fn counts_that_disagree_write_nothing() {
        let dir = std::env::temp_dir().join(format!("rewind-cores-test-{}", std::process::id()));
        let mut sink = CoreSink::to_dir(&dir);
        sink.begin(head());
        sink.memory(6, 3, 0x1000, 16, true, &[]);
        let w = sink.end(6, 3, 2, 16);
        assert!(w.file.is_none() && w.error.as_deref().unwrap().contains("received 1 chunks of 16 bytes"));
        sink.begin(head());
        sink.memory(6, 3, 0x1000, 16, true, &[]);
        let w = sink.end(6, 3, 1, 16);
        assert_eq!(
            w.file.as_deref(),
            Some(format!("{}/teller-faulty-3.core", dir.file_name().unwrap().to_string_lossy()).as_str())
        );
        let bytes = std::fs::read(dir.join("teller-faulty-3.core")).unwrap();
        assert_eq!(walker::host::CoreFile::parse(bytes, "t").unwrap().bytes(0x1000, 16), Some(&[0u8; 16][..]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn signals_follow_the_fault() {
        assert_eq!(signal(1, 14), 11);
        assert_eq!(signal(1, 6), 4);
        assert_eq!(signal(2, 0), 6);
    }
}
