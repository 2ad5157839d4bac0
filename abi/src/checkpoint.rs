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
//! ## Exactness
//! A fault can hit between any two instructions of libtask, so every change
//! to the page is a sequence of single aligned 8-byte stores, each leaving
//! the page exact (the argument, window by window, is in
//! `docs/recovery.md`):
//! * **mutexes** need no intent: libtask registers a mutex *before* its
//!   `CAS` and unregisters it *after* its unlock (swap and wake). An entry
//!   therefore means "may be held": the fault server releases it only if
//!   the mutex word — which holds its owner's task id — names the task,
//!   and wakes one waiter in any case;
//! * **Arc counts** have no owner, so an Arc count change is announced in
//!   [`RecoveryPage::intent`] (in the style of Linux's robust futex
//!   `list_op_pending`) and done as one `lock xadd` inside an asm block
//!   whose bounds libtask records in [`RecoveryPage::arc_blocks`]: a fault
//!   with the pc in `[start, commit)` means the `lock xadd` did not run;
//!   anywhere else (with the intent still set), it did. The blocks are
//!   also global symbols ([`ARC_INC_START_SYMBOL`] ...), for debuggers;
//!   the fault server needs only the page, so a stripped task recovers.
//!
//! ## Reading it
//! Every part is `#[repr(C)]` `u64` words without padding, so the page is
//! [`bytemuck::Pod`]: [`RecoveryPage::from_bytes`] is one copy
//! (`pod_read_unaligned`), in the native byte order — little-endian, as
//! both the guest (x86_64) and the hosts that test it are.

/// Most nested scopes.
pub const MAX_SCOPES: usize = 8;

/// `rdx` of a `CHECKPOINT_OPEN` that *seals* its scope (libtask's opens all
/// do): its `CHECKPOINT_COMMIT` must then be made with the callee-saved
/// registers and the stack pointer exactly as they were at the open, or the
/// kernel refuses to close the scope and faults the task inside it
/// ([`crate::fault::FaultKind::ScopeCheck`]), so the fault server rolls it
/// back. libtask makes both calls from one asm function that touches none
/// of those registers between them and calls the scope's body in between:
/// the body, an ordinary function, must hand them back as it found them
/// (the SysV ABI), so a difference is a corruption of state the scope's
/// caller relies on — a flipped register that would otherwise survive the
/// commit unseen. Any other `rdx` (a raw open) opens an unsealed scope.
///
/// Its bytes, little-endian, are `0f 0b` four times: `ud2`. libtask loads
/// it with a `movabs` right before the open, so an instruction skip that
/// lands inside that `movabs` executes its immediate — and faults cleanly
/// rather than running whatever other bytes would decode to.
pub const SEAL: u64 = 0x0b0f_0b0f_0b0f_0b0f;
/// The registers a seal compares, in the order a `ScopeCheck` fault's
/// `error_code` indexes them.
pub const SEAL_REGS: [&str; 7] = ["rbx", "rbp", "r12", "r13", "r14", "r15", "rsp"];
/// Registry capacities.
pub const MAX_MUTEXES: usize = 32;
pub const MAX_ARCS: usize = 64;

/// `RecoveryPage::magic`.
pub const RECOVERY_MAGIC: u64 = u64::from_le_bytes(*b"RWNDRCV1");

/// Symbols (in libtask) that start and end the asm block of an Arc count
/// change: a fault at a pc below the commit symbol and at or after the
/// start means the `lock xadd` did not run. libtask also records their
/// addresses in [`RecoveryPage::arc_blocks`], which is what the fault
/// server uses.
pub const ARC_INC_START_SYMBOL: &str = "__rewind_arc_inc_start";
pub const ARC_INC_COMMIT_SYMBOL: &str = "__rewind_arc_inc_commit";
pub const ARC_DEC_START_SYMBOL: &str = "__rewind_arc_dec_start";
pub const ARC_DEC_COMMIT_SYMBOL: &str = "__rewind_arc_dec_commit";

/// What the intent slot says a task is doing. libtask writes only the Arc
/// operations; `LOCK` and `UNLOCK` (a mutex's own word decides them) stay
/// valid for the fault server, which handles them as it handles a mutex
/// entry.
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ScopeRecord {
    /// Attempt number of the current run of the scope (0 = first).
    pub attempt: u64,
    /// The fault that caused the last rollback: kind, seq, pc (0 if none).
    pub fault_kind: u64,
    pub fault_seq: u64,
    pub fault_pc: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Intent {
    pub op: u64,
    pub addr: u64,
    /// Scope depth at the time (entries belong to the innermost scope).
    pub scope: u64,
}

/// A mutex the task holds, or is about to lock (registered before the
/// `CAS`), or has just unlocked (unregistered after the swap and wake):
/// the fault server decides by the mutex word. `addr == 0`: a free slot
/// (a tombstone when below the count).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MutexEntry {
    /// Address of the mutex word in a shared region.
    pub addr: u64,
    /// Scope depth that owns the entry (0 = outside any scope), with
    /// [`RELEASE_AT_COMMIT`] possibly set.
    pub scope: u64,
}

/// Set in a registry entry's `scope` (over the owning depth, kept in the
/// low bits): the task dropped the object in a later scope than the one
/// owning it, and the kernel gives it back — a mutex unlocked, an Arc
/// reference decremented, exactly as libtask would — and clears the entry
/// at the next `CHECKPOINT_COMMIT` / `CHECKPOINT_RENEW`, inside that call.
/// libtask marks such releases right before `CHECKPOINT_RENEW`
/// (`checkpoint::repeat`), which leaves no instruction of the task between
/// the release and the commit that makes it final. Anyone else reading
/// the entry masks the bit off: the entry is still held, by its depth,
/// until then. Only untagged mutex entries and Arc entries are marked.
pub const RELEASE_AT_COMMIT: u64 = 1 << 63;

/// A held Arc reference.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ArcEntry {
    /// Address of the Arc block (its header) in a shared region.
    pub addr: u64,
    pub scope: u64,
}

/// The bounds of libtask's two Arc asm blocks in the task's image, recorded
/// by libtask when it registers the page (before the first write of an
/// intent). The fault server checks them (non-zero, ordered, at most 64
/// bytes each) before it decides an Arc intent by them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ArcBlocks {
    pub inc_start: u64,
    pub inc_commit: u64,
    pub dec_start: u64,
    pub dec_commit: u64,
}

impl ArcBlocks {
    pub const NONE: ArcBlocks = ArcBlocks { inc_start: 0, inc_commit: 0, dec_start: 0, dec_commit: 0 };
}

/// The recovery page.
///
/// The Arc registry comes last, so that everything a reader looks at is
/// the prefix up to its last live entry ([`RecoveryPage::live_len`]): the
/// kernel copies only that into a fault message (the Arc array is the
/// largest and usually the emptiest part).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RecoveryPage {
    pub magic: u64,
    /// Scopes open, as libtask counts them.
    pub depth: u64,
    pub scopes: [ScopeRecord; MAX_SCOPES],
    pub intent: Intent,
    /// Where libtask's Arc asm blocks are (all 0 until registered).
    pub arc_blocks: ArcBlocks,
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
        arc_blocks: ArcBlocks::NONE,
    };

    /// Parses a page read from a task (one copy; any alignment); `None`
    /// if short. Only the first [`RECOVERY_PAGE_SIZE`] bytes are read.
    pub fn from_bytes(b: &[u8]) -> Option<RecoveryPage> {
        b.get(..RECOVERY_PAGE_SIZE).map(bytemuck::pod_read_unaligned)
    }

    /// The page in place, when `b` is 8-aligned and long enough; `None`
    /// otherwise (then [`Self::from_bytes`] copies it). No large enum of
    /// "borrowed or owned": returning one moves the whole page every time.
    pub fn view(b: &[u8]) -> Option<&RecoveryPage> {
        bytemuck::try_from_bytes::<RecoveryPage>(b.get(..RECOVERY_PAGE_SIZE)?).ok()
    }

    /// Bytes of a page whose Arc registry counts `arc_count` entries that
    /// a reader may look at: the page up to its last live Arc entry (the
    /// count clamped to the registry's size). Readers look at `count`
    /// entries only, so a copy of this prefix reads as the whole page.
    pub const fn live_len(arc_count: u64) -> usize {
        let n = if arc_count > MAX_ARCS as u64 { MAX_ARCS } else { arc_count as usize };
        core::mem::offset_of!(RecoveryPage, arcs) + n * core::mem::size_of::<ArcEntry>()
    }

    /// The page's bytes, as a task's memory holds them.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
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

/// Lock kinds that share the mutex registry: the low three bits of a
/// [`MutexEntry::addr`] (objects are 8-aligned, so a plain mutex entry has
/// them 0) say what the entry's object is and how the fault server
/// releases it. The record layout stays `{addr, scope}`, so the kernel's
/// hand-over at a commit (which looks only at `addr != 0` and `scope`) and
/// the fault message's copy of the page need no change; a fault server that
/// does not know the tags refuses such a page (a misaligned address) and
/// escalates, which is safe.
pub mod lock_tag {
    /// A `Mutex` (untagged, as before the tags existed).
    pub const MUTEX: u64 = 0;
    /// An `RwLock` write lock, held or about to be: decided by the
    /// `RwLock`'s writer word, which names its owner.
    pub const RWLOCK_WRITE: u64 = 1;
    /// One `RwLock` read lock, held or about to be: decided by the
    /// `RwLock`'s reader slots, which name their holders (one entry per
    /// read held).
    pub const RWLOCK_READ: u64 = 2;
    /// A `Once` being run, or about to be: decided by its state word,
    /// which names the running initializer.
    pub const ONCE: u64 = 3;
    /// The bits of `addr` that hold the tag.
    pub const MASK: u64 = 7;

    /// The object's address and the tag of a registry `addr`.
    pub const fn split(addr: u64) -> (u64, u64) {
        (addr & !MASK, addr & MASK)
    }
}

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
        p.arc_blocks = ArcBlocks { inc_start: 1, inc_commit: 2, dec_start: 3, dec_commit: 4 };
        let bytes = p.as_bytes();
        assert_eq!(bytes.len(), RECOVERY_PAGE_SIZE);
        let q = RecoveryPage::from_bytes(bytes).unwrap();
        assert_eq!(q.magic, RECOVERY_MAGIC);
        assert_eq!((q.depth, q.intent, q.mutexes[0], q.arcs[63]), (2, p.intent, p.mutexes[0], p.arcs[63]));
        assert_eq!(q.arc_blocks, p.arc_blocks);
        assert!(RecoveryPage::from_bytes(&bytes[..100]).is_none());
        // Any alignment, and a longer buffer (a whole page) is fine.
        let mut buf = [0u8; 4097];
        buf[1..1 + RECOVERY_PAGE_SIZE].copy_from_slice(bytes);
        assert_eq!(RecoveryPage::from_bytes(&buf[1..]).unwrap().arc_blocks, p.arc_blocks);
    }

    /// The word map the kernel, libtask's asm and the fault server's
    /// tombstones rely on: little-endian `u64` words in this order.
    #[test]
    fn recovery_page_word_map() {
        use core::mem::offset_of;
        assert_eq!(offset_of!(RecoveryPage, magic), 0);
        assert_eq!(offset_of!(RecoveryPage, depth), 8);
        assert_eq!(offset_of!(RecoveryPage, scopes), 16);
        assert_eq!(offset_of!(RecoveryPage, intent), 16 + 32 * MAX_SCOPES);
        assert_eq!(offset_of!(RecoveryPage, arc_blocks), 16 + 32 * MAX_SCOPES + 24);
        assert_eq!(offset_of!(RecoveryPage, mutex_count), 16 + 32 * MAX_SCOPES + 56);
        assert_eq!(offset_of!(RecoveryPage, mutexes), 16 + 32 * MAX_SCOPES + 64);
        assert_eq!(offset_of!(RecoveryPage, arc_count), 16 + 32 * MAX_SCOPES + 64 + 16 * MAX_MUTEXES);
        assert_eq!(offset_of!(RecoveryPage, arcs), 16 + 32 * MAX_SCOPES + 72 + 16 * MAX_MUTEXES);
        assert_eq!(RECOVERY_PAGE_SIZE, offset_of!(RecoveryPage, arcs) + 16 * MAX_ARCS);
        assert_eq!(RecoveryPage::live_len(0), offset_of!(RecoveryPage, arcs));
        assert_eq!(RecoveryPage::live_len(3), offset_of!(RecoveryPage, arcs) + 48);
        assert_eq!(RecoveryPage::live_len(u64::MAX), RECOVERY_PAGE_SIZE);
        let mut p = RecoveryPage::EMPTY;
        p.depth = 0x0102_0304_0506_0708;
        assert_eq!(&p.as_bytes()[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
    }
}
