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
}

impl FaultKind {
    pub fn from_u64(v: u64) -> Option<FaultKind> {
        match v {
            1 => Some(FaultKind::Exception),
            2 => Some(FaultKind::Panic),
            3 => Some(FaultKind::Watchdog),
            4 => Some(FaultKind::Kill),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::Exception => "exception",
            FaultKind::Panic => "panic",
            FaultKind::Watchdog => "watchdog",
            FaultKind::Kill => "kill",
        }
    }
}

/// The fault message body.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
}

/// Size of [`FaultMessage`] in bytes.
pub const FAULT_MESSAGE_SIZE: usize = core::mem::size_of::<FaultMessage>();
const _: () = assert!(FAULT_MESSAGE_SIZE + 256 <= crate::ipc::MAX_BUFFER);

const HEAD_WORDS: usize = 11;

impl FaultMessage {
    /// The message as bytes (for the kernel to copy).
    pub fn to_bytes(&self) -> [u8; FAULT_MESSAGE_SIZE] {
        let mut out = [0u8; FAULT_MESSAGE_SIZE];
        let head = [
            self.task,
            self.kind,
            self.vector,
            self.error_code,
            self.cr2,
            self.seq,
            self.restarts,
            self.eh_frame_hdr,
            self.text_len,
            self.recovery,
            self.scopes,
        ];
        for (i, w) in head.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        out[HEAD_WORDS * 8..].copy_from_slice(&self.regs.to_bytes());
        out
    }

    /// Parses a message; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<FaultMessage> {
        if bytes.len() < FAULT_MESSAGE_SIZE {
            return None;
        }
        let w = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        Some(FaultMessage {
            task: w(0),
            kind: w(1),
            vector: w(2),
            error_code: w(3),
            cr2: w(4),
            seq: w(5),
            restarts: w(6),
            eh_frame_hdr: w(7),
            text_len: w(8),
            recovery: w(9),
            scopes: w(10),
            regs: Registers::from_bytes(&bytes[HEAD_WORDS * 8..])?,
        })
    }
}

#[cfg(test)]
mod tests {
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
        };
        m.regs.r15 = 0x1515;
        m.regs.rip = 0x401000;
        m.regs.gs_base = 7;
        assert_eq!(FaultMessage::from_bytes(&m.to_bytes()), Some(m));
        assert_eq!(FaultMessage::from_bytes(&[0; 10]), None);
    }
}
