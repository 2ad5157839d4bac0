//! The fault message: what the kernel sends a fault endpoint when a task
//! faults, and how the fault server answers.
//!
//! The kernel suspends the faulted task and delivers one message on its
//! fault endpoint, with badge [`crate::ipc::FAULT_BADGE`] (no task can send
//! that badge, so the message cannot be forged), label [`FAULT_LABEL`],
//! words `[task, kind, vector, seq]`, and a buffer holding a
//! [`FaultMessage`] (followed, for a panic, by the panic text). The server
//! answers with the `TASK_CTL` operations (`RESUME` after optional
//! `SET_REGS`, `RESTART`, `STOP`); until it does, the task stays suspended.

use crate::trap::Registers;

/// Label of fault messages.
pub const FAULT_LABEL: u64 = 0xfa17;

/// The resume convention: a task that executes `ud2` with `rax` equal to
/// this value asks its fault server to resume it after the `ud2` (2 bytes)
/// with `rax = 0`, every other register unchanged. Any other `ud2` is an
/// ordinary invalid-opcode fault.
pub const RESUME_REQUEST: u64 = 0x7265_7375_6d65_2121; // "resume!!"

/// What happened.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A CPU exception (`vector`, `error_code`, `cr2` say which).
    Exception = 1,
    /// The task panicked; the panic text follows the message.
    Panic = 2,
    /// The watchdog stopped it: it ran too long without a system call.
    Watchdog = 3,
    /// Its supervisor killed it (`TASK_CTL KILL`).
    Kill = 4,
    /// `CHECKPOINT_COMMIT` of a sealed scope found a callee-saved register
    /// or the stack pointer not as it was at the scope's open: a value the
    /// scope's caller relies on was corrupted inside the scope (see
    /// `abi::checkpoint::SEAL`). `error_code` names the register
    /// (`SEAL_REGS` index), the text says both values.
    ScopeCheck = 5,
}

impl FaultKind {
    pub fn from_u64(v: u64) -> Option<FaultKind> {
        match v {
            1 => Some(FaultKind::Exception),
            2 => Some(FaultKind::Panic),
            3 => Some(FaultKind::Watchdog),
            4 => Some(FaultKind::Kill),
            5 => Some(FaultKind::ScopeCheck),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::Exception => "exception",
            FaultKind::Panic => "panic",
            FaultKind::Watchdog => "watchdog",
            FaultKind::Kill => "kill",
            FaultKind::ScopeCheck => "scope_check",
        }
    }
}

/// Shared regions a fault message lists (a task with more is rare; the
/// server asks `TASK_CTL REGIONS` for the rest: `region_count` says how
/// many there are in all).
pub const MAX_FAULT_REGIONS: usize = 8;
/// Most bytes of the faulted task's stack a fault message carries, from its
/// `rsp` up: enough for the walk to a checkpoint frame and a backtrace in
/// every test and demo task. Beyond it the server reads the task's memory.
pub const STACK_WINDOW: usize = 4096;
/// Longest panic text.
pub const MAX_FAULT_TEXT: usize = 256;
/// A receive buffer this large takes every fault message whole.
pub const FAULT_BUFFER: usize =
    FAULT_MESSAGE_SIZE + MAX_FAULT_TEXT + crate::checkpoint::RECOVERY_PAGE_SIZE.next_multiple_of(8) + STACK_WINDOW;

/// The fault message body: everything the fault server needs to decide and
/// recover travels with the fault (no `TASK_INFO`, `SCOPE_REGS`, `REGIONS`
/// or `READ_MEM` round trips on the recovery path).
///
/// The buffer holds this struct, then three byte sections, each starting
/// 8-aligned: the panic text (`text_len` bytes), a copy of the task's
/// recovery page as it was at the fault (`recovery_len` bytes: 0 if the
/// task registered none or it was unreadable), and the task's stack from
/// `stack_base` (= `regs.rsp`) up (`stack_len` bytes, at most
/// [`STACK_WINDOW`], cut at the first unreadable page). [`FaultMessage::parse`]
/// checks the lengths against the bytes received.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FaultMessage {
    pub task: u64,
    pub kind: u64,
    pub vector: u64,
    pub error_code: u64,
    pub cr2: u64,
    /// Fault sequence number, unique for the run; ties together the
    /// `fault`, `backtrace`, `release` and `restart` events.
    pub seq: u64,
    /// How many times this task was restarted before.
    pub restarts: u64,
    /// Address of the task's `.eh_frame_hdr` (0 if it has none).
    pub eh_frame_hdr: u64,
    /// Length in bytes of the panic text after this struct (0 if none).
    pub text_len: u64,
    /// Address of the task's recovery page (0 if it registered none).
    pub recovery: u64,
    /// Checkpoint scopes open at the fault.
    pub scopes: u64,
    pub regs: Registers,
    /// Guest TSC when the fault was taken (guest instructions under icount).
    pub fault_tsc: u64,
    /// The kernel's tick clock (ms) at the fault, for the supervisor's
    /// restart-policy windows.
    pub fault_ticks: u64,
    /// The task's name, NUL-padded.
    pub name: [u8; crate::image::NAME_LEN],
    /// The manifest's restart policy (0 = the supervisor's default).
    pub max_restarts: u64,
    pub restart_window_ms: u64,
    /// The stack pointer saved when each open scope opened (outermost
    /// first; `scopes` of them): the walk's target frames.
    pub scope_rsp: [u64; crate::checkpoint::MAX_SCOPES],
    /// How many shared regions the task holds; the first
    /// [`MAX_FAULT_REGIONS`] are in `regions`.
    pub region_count: u64,
    pub regions: [crate::checkpoint::RegionInfo; MAX_FAULT_REGIONS],
    /// Bytes of the recovery-page copy after the text.
    pub recovery_len: u64,
    /// Address of the first stack byte carried (the faulting `rsp`).
    pub stack_base: u64,
    /// Bytes of stack carried after the recovery-page copy.
    pub stack_len: u64,
    /// The CPU the fault happened on (the kernel's CPU index, 0 = boot).
    pub cpu: u64,
}

/// Size of [`FaultMessage`] in bytes.
pub const FAULT_MESSAGE_SIZE: usize = core::mem::size_of::<FaultMessage>();
const _: () = assert!(FAULT_MESSAGE_SIZE % 8 == 0);

/// A received fault message with its byte sections.
#[derive(Clone, Copy, Debug)]
pub struct Parsed<'a> {
    pub msg: &'a FaultMessage,
    pub text: &'a [u8],
    pub recovery: &'a [u8],
    pub stack: &'a [u8],
}

/// Offsets of the sections after the struct: `(text, recovery, stack)`.
pub const fn section_offsets(text_len: usize, recovery_len: usize) -> (usize, usize, usize) {
    let text = FAULT_MESSAGE_SIZE;
    let recovery = text + text_len.next_multiple_of(8);
    let stack = recovery + recovery_len.next_multiple_of(8);
    (text, recovery, stack)
}

impl FaultMessage {
    /// The struct as bytes (what the kernel writes first).
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
    }

    /// Parses a message in place; `None` if `bytes` is too short for the
    /// struct or not 8-aligned (receive into a `u64` buffer; or use
    /// [`Self::from_bytes`], which copies). Sections whose lengths run past
    /// the bytes received are cut to what arrived (the kernel never sends
    /// that; a receive buffer too small for the message does).
    pub fn parse(bytes: &[u8]) -> Option<Parsed<'_>> {
        let head = bytes.get(..FAULT_MESSAGE_SIZE)?;
        // In place: no copy of the struct on the recovery path.
        let msg = bytemuck::try_from_bytes::<FaultMessage>(head).ok()?;
        let len = |l: u64, cap: usize| (l.min(cap as u64)) as usize;
        let (text_len, recovery_len, stack_len) = (
            len(msg.text_len, MAX_FAULT_TEXT),
            len(msg.recovery_len, crate::checkpoint::RECOVERY_PAGE_SIZE),
            len(msg.stack_len, STACK_WINDOW),
        );
        let (t, r, st) = section_offsets(text_len, recovery_len);
        let cut = |at: usize, n: usize| bytes.get(at.min(bytes.len())..(at + n).min(bytes.len())).unwrap_or(&[]);
        Some(Parsed { msg, text: cut(t, text_len), recovery: cut(r, recovery_len), stack: cut(st, stack_len) })
    }

    /// Parses just the struct; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<FaultMessage> {
        bytes.get(..FAULT_MESSAGE_SIZE).map(bytemuck::pod_read_unaligned)
    }

    /// The name as text.
    pub fn name(&self) -> &str {
        let n = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        core::str::from_utf8(&self.name[..n]).unwrap_or("?")
    }

    /// The shared regions listed in the message.
    pub fn regions(&self) -> &[crate::checkpoint::RegionInfo] {
        &self.regions[..(self.region_count as usize).min(MAX_FAULT_REGIONS)]
    }

    /// The saved stack pointer of scope `depth` (1 = outermost), if open.
    pub fn scope_rsp(&self, depth: u64) -> Option<u64> {
        if depth == 0 || depth > self.scopes.min(crate::checkpoint::MAX_SCOPES as u64) {
            return None;
        }
        Some(self.scope_rsp[depth as usize - 1])
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn fault_message_round_trips() {
        let mut m = FaultMessage {
            task: 3,
            kind: 1,
            vector: 14,
            error_code: 6,
            cr2: 0xdead,
            seq: 9,
            restarts: 2,
            eh_frame_hdr: 0x4000,
            text_len: 0,
            recovery: 0x5000,
            scopes: 2,
            regs: Registers::default(),
            ..FaultMessage::default()
        };
        m.regs.r15 = 0x1515;
        m.regs.rip = 0x401000;
        m.regs.gs_base = 7;
        m.text_len = 3;
        m.recovery_len = 9;
        m.stack_len = 16;
        let mut bytes = m.as_bytes().to_vec();
        bytes.extend_from_slice(b"abc\0\0\0\0\0");
        bytes.extend_from_slice(&[7; 16]);
        bytes.extend_from_slice(&[9; 16]);
        // Parsed in place: from a `u64` buffer, as the fault server does.
        let words: std::vec::Vec<u64> = bytes.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        let p = FaultMessage::parse(bytes).unwrap();
        assert_eq!(*p.msg, m);
        // Unaligned bytes are refused by `parse`, copied by `from_bytes`.
        let at = (8 - words.as_ptr() as usize % 8) % 8 + 1; // 1 past an 8-aligned address
        let mut shifted = std::vec![0u8; at];
        shifted.extend_from_slice(bytes);
        let odd = &shifted[at..];
        if (odd.as_ptr() as usize) % 8 != 0 {
            assert!(FaultMessage::parse(odd).is_none());
        }
        assert_eq!(FaultMessage::from_bytes(odd), Some(m));
        assert_eq!((p.text, p.recovery.len(), p.stack), (&b"abc"[..], 9, &[9u8; 16][..]));
        // Lengths past the bytes received are cut, never read out of bounds.
        let p = FaultMessage::parse(&bytes[..FAULT_MESSAGE_SIZE + 10]).unwrap();
        assert_eq!((p.text.len(), p.recovery.len(), p.stack.len()), (3, 2, 0));
        assert!(FaultMessage::from_bytes(&[0; 10]).is_none());
    }
}
