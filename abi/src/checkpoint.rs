//! Checkpoints, the recovery page and shared-object registries.
//!
//! A task opens a checkpoint scope with `CHECKPOINT_OPEN`; from then on the
//! kernel preserves the first version of every private page the task writes
//! (copy-on-write), so a rollback restores the scope's memory and registers
//! exactly. Shared regions are never rolled back: what a task holds in them
//! (mutexes, Arc references) is recorded in the task's **recovery page**,
//! whose layout is below, so the fault server can release it.
//!
//! The recovery page is private memory of the task, written by `libtask`
//! only. It is rolled back with the rest, which is what makes it right: the
//! fault server reads it *before* the rollback (it then lists what the task
//! held at the fault), releases the entries of the scopes being rolled back,
//! and after the rollback the page again lists what the task held when the
//! scope opened — still held. The fault server trusts nothing in it: every
//! address is checked against the task's shared regions, every count is
//! bounded, and a page that fails a check escalates to a fresh start.
//!
//! ## Exactness: the intent slot
//! In the style of Linux's robust futex `list_op_pending`: before touching a
//! shared object, `libtask` writes what it is about to do into
//! [`RecoveryPage::intent`], and clears it when the registry is up to date.
//! A fault in between leaves the intent, which tells the fault server to
//! look at the object itself:
//! * mutex lock/unlock: the mutex word holds its owner's task id, so the
//!   server sees whether the faulted task holds it, whatever the pc;
//! * Arc clone/drop: the count has no owner, so `libtask` does the count
//!   change as one `lock xadd` inside an asm block that starts at a global
//!   symbol and ends at another ([`ARC_INC_START_SYMBOL`] ..
//!   [`ARC_INC_COMMIT_SYMBOL`], likewise for drop): a fault with the pc in
//!   `[start, commit)` means the `lock xadd` did not run; anywhere else
//!   (with the intent still set), it did.

/// Most nested scopes.
pub const MAX_SCOPES: usize = 8;
/// Registry capacities.
pub const MAX_MUTEXES: usize = 32;
pub const MAX_ARCS: usize = 64;

/// `RecoveryPage::magic`.
pub const RECOVERY_MAGIC: u64 = u64::from_le_bytes(*b"RWNDRCV1");

/// Symbols (in libtask) that end the asm block of an Arc count change: a
/// fault at a pc below the symbol and at or after the block start means the
/// `lock xadd` did not run.
pub const ARC_INC_START_SYMBOL: &str = "__rewind_arc_inc_start";
pub const ARC_INC_COMMIT_SYMBOL: &str = "__rewind_arc_inc_commit";
pub const ARC_DEC_START_SYMBOL: &str = "__rewind_arc_dec_start";
pub const ARC_DEC_COMMIT_SYMBOL: &str = "__rewind_arc_dec_commit";

/// What the intent slot says a task is doing.
pub mod intent {
    pub const NONE: u64 = 0;
    pub const LOCK: u64 = 1;
    pub const UNLOCK: u64 = 2;
    pub const ARC_CLONE: u64 = 3;
    pub const ARC_DROP: u64 = 4;
}

/// One open scope, as libtask records it (the kernel's own record of the
/// scope's registers is authoritative; see `TASK_CTL SCOPE_REGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeRecord {
    /// Attempt number of the current run of the scope (0 = first).
    pub attempt: u64,
    /// The fault that caused the last rollback: kind, seq, pc (0 if none).
    pub fault_kind: u64,
    pub fault_seq: u64,
    pub fault_pc: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Intent {
    pub op: u64,
    pub addr: u64,
    /// Scope depth at the time (entries belong to the innermost scope).
    pub scope: u64,
}

/// A held mutex.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MutexEntry {
    /// Address of the mutex word in a shared region.
    pub addr: u64,
    /// Scope depth that owns the entry (0 = outside any scope).
    pub scope: u64,
}

/// A held Arc reference.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArcEntry {
    /// Address of the Arc block (its header) in a shared region.
    pub addr: u64,
    pub scope: u64,
}

/// The recovery page.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecoveryPage {
    pub magic: u64,
    /// Scopes open, as libtask counts them.
    pub depth: u64,
    pub scopes: [ScopeRecord; MAX_SCOPES],
    pub intent: Intent,
    pub mutex_count: u64,
    pub mutexes: [MutexEntry; MAX_MUTEXES],
    pub arc_count: u64,
    pub arcs: [ArcEntry; MAX_ARCS],
}

pub const RECOVERY_PAGE_SIZE: usize = core::mem::size_of::<RecoveryPage>();
const _: () = assert!(RECOVERY_PAGE_SIZE <= 4096);

impl RecoveryPage {
    pub const EMPTY: RecoveryPage = RecoveryPage {
        magic: RECOVERY_MAGIC,
        depth: 0,
        scopes: [ScopeRecord { attempt: 0, fault_kind: 0, fault_seq: 0, fault_pc: 0 }; MAX_SCOPES],
        intent: Intent { op: 0, addr: 0, scope: 0 },
        mutex_count: 0,
        mutexes: [MutexEntry { addr: 0, scope: 0 }; MAX_MUTEXES],
        arc_count: 0,
        arcs: [ArcEntry { addr: 0, scope: 0 }; MAX_ARCS],
    };

    /// Parses a page read from a task (little-endian words); `None` if short.
    pub fn from_bytes(b: &[u8]) -> Option<RecoveryPage> {
        if b.len() < RECOVERY_PAGE_SIZE {
            return None;
        }
        let mut words = [0u64; RECOVERY_PAGE_SIZE / 8];
        for (i, w) in words.iter_mut().enumerate() {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i * 8..i * 8 + 8]);
            *w = u64::from_le_bytes(x);
        }
        let mut at = 0;
        let mut next = || {
            let v = words[at];
            at += 1;
            v
        };
        let mut p = RecoveryPage::EMPTY;
        p.magic = next();
        p.depth = next();
        for s in p.scopes.iter_mut() {
            *s = ScopeRecord { attempt: next(), fault_kind: next(), fault_seq: next(), fault_pc: next() };
        }
        p.intent = Intent { op: next(), addr: next(), scope: next() };
        p.mutex_count = next();
        for m in p.mutexes.iter_mut() {
            *m = MutexEntry { addr: next(), scope: next() };
        }
        p.arc_count = next();
        for a in p.arcs.iter_mut() {
            *a = ArcEntry { addr: next(), scope: next() };
        }
        Some(p)
    }
}

/// A shared region as `TASK_CTL REGIONS` reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RegionInfo {
    pub base: u64,
    pub size: u64,
}

/// Layout of the shared mutex word (`libtask::sync::Mutex`): 0 = unlocked,
/// else the owner's task id, with [`MUTEX_CONTENDED`] set when a task waits.
pub const MUTEX_CONTENDED: u32 = 1 << 31;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_page_parses_its_own_layout() {
        let mut p = RecoveryPage::EMPTY;
        p.depth = 2;
        p.intent = Intent { op: intent::LOCK, addr: 0x2000_0000_0040, scope: 2 };
        p.mutex_count = 1;
        p.mutexes[0] = MutexEntry { addr: 0x2000_0000_0000, scope: 1 };
        p.arcs[63] = ArcEntry { addr: 9, scope: 3 };
        // SAFETY: RecoveryPage is repr(C) plain u64 words, no padding.
        let bytes = unsafe { core::slice::from_raw_parts(&p as *const RecoveryPage as *const u8, RECOVERY_PAGE_SIZE) };
        let q = RecoveryPage::from_bytes(bytes).unwrap();
        assert_eq!(q.magic, RECOVERY_MAGIC);
        assert_eq!((q.depth, q.intent, q.mutexes[0], q.arcs[63]), (2, p.intent, p.mutexes[0], p.arcs[63]));
        assert!(RecoveryPage::from_bytes(&bytes[..100]).is_none());
    }
}
