//! From a recovery page to the list of releases a rollback owes.
//!
//! [`plan`] validates the page completely before it decides anything, so a
//! corrupt page yields an [`Invalid`] error and no release at all (the fault
//! server then escalates to a fresh start of the task, whose shared holdings
//! it cannot know — the one case where a lock may stay held, and a loud one).
//!
//! ## Salvage: corruption that says nothing about shared memory
//!
//! A flipped register in libtask's own registry code (the fault model's
//! `regflip`) leaves two kinds of corruption that do not make the rest of
//! the page untrustworthy, and refusing the page for them would leak
//! everything the task really holds. The plan leaves them out instead and
//! notes each ([`Plan::salvaged`]; the fault server reports them):
//!
//! * **an entry (or the intent) whose address names no object of its
//!   kind** in the task's shared regions ([`Invalid::names_no_object`]: the
//!   mutex address was flipped before the push stored it). Other tasks can
//!   only reach objects where the layouts put them, so such an entry stands
//!   for nothing the task could hold from them: leaving it out loses no
//!   release, and what it would have done (a `CAS` or an add on a word that
//!   is not such an object) is exactly what the checks exist to prevent;
//! * **a mutex count past the array** (the count's register flipped
//!   between the push's load and store): every slot is read. The slots past
//!   the true count are stale listings of mutexes the task let go or holds
//!   through a live listing; a mutex release is decided by the owner word
//!   and made only for the outermost listing, so a stale one adds nothing
//!   wrong (a stale scope deeper than the page's counts as the innermost).
//!   Not for a page with tagged entries, nor for the Arc count: a stale
//!   read lock or reference would be given back twice.
//!
//! Everything else — an unknown layout, a scope deeper than the page, a
//! duplicate Arc, an intent that contradicts the registries — still
//! refuses the page: those say the page's bookkeeping itself is wrong.
//!
//! ## Which entries
//!
//! Every registry entry carries the scope depth that owns it (`libtask`
//! tags an entry with the number of scopes open when it was taken and
//! hands it to the parent scope when its scope commits). Rolling back to
//! scope `depth` (1 = outermost) undoes scopes `depth..`, so it releases
//! the entries with `scope >= depth`; entries of outer scopes are still
//! held after the rollback, and the rolled-back page still lists them.
//! `depth == 0` means "fresh start": everything is released.
//!
//! ## Mutex entries
//!
//! libtask registers a mutex *before* its `CAS` and unregisters it *after*
//! its unlock (the swap and the wake it owes), so a mutex entry means "held,
//! or about to be, or just released": [`Action::PoisonAndUnlockMutex`] is
//! decided at execution by the mutex word, which names its owner, and
//! always wakes one waiter. That is exact at every instruction without an
//! intent (the argument, window by window, is in `docs/recovery.md`).
//!
//! A mutex may be listed twice for a few instructions: the lock's fast path
//! lists it before its `CAS`, and only a failed `CAS` shows that the task
//! already holds it (a release deferred to an outer scope's commit, which
//! the lock takes back, dropping the new entry). Since an entry means "may
//! be held", the listings are one: the mutex stays held after the rollback
//! if any listing survives it, so it is released (once) only if its
//! *outermost* listing is rolled back. Arc entries, which count, are never
//! listed twice ([`Invalid::Duplicate`]).
//!
//! ## Tagged entries: `RwLock` and `Once`
//!
//! Mutex registry entries whose `addr` has low bits set
//! (`abi::checkpoint::lock_tag`) name an `RwLock` write or read lock or a
//! running `Once`; they are validated and planned in [`locks`] (reads are
//! counted: all but the surviving scopes' reads are given back).
//!
//! ## The intent slot
//!
//! A fault in the middle of an Arc count change leaves
//! `RecoveryPage::intent` set. What it implies (libtask guarantees each
//! case below is the only state a fault can leave; the pc is compared with
//! the asm-block bounds libtask records in `RecoveryPage::arc_blocks`):
//!
//! | intent | registry entry for the address | pc | release |
//! |---|---|---|---|
//! | `LOCK`/`UNLOCK` | present | any | the entry's (once) |
//! | `LOCK`/`UNLOCK` | absent | any | poison-and-unlock, decided at execution by the owner word |
//! | `ARC_CLONE` | present | outside `[inc_start, inc_commit)` | the entry's (once) |
//! | `ARC_CLONE` | absent | outside | one decrement (the `lock xadd` ran) |
//! | `ARC_CLONE` | absent | inside | none (the `lock xadd` did not run) |
//! | `ARC_DROP` | present | inside `[dec_start, dec_commit)` | the entry's (once) |
//! | `ARC_DROP` | absent | inside | one decrement (not yet done) |
//! | `ARC_DROP` | absent | outside | none (done) |
//!
//! (libtask no longer writes `LOCK`/`UNLOCK` intents — see above — but a
//! page with one is still decided exactly, by the word.) The two remaining
//! combinations (`ARC_CLONE` present/inside, `ARC_DROP` present/outside)
//! cannot arise from libtask — a task holds at most one registered shared
//! reference per block, and removes the entry inside the decrement's asm
//! block — so they are [`Invalid::IntentConflict`]. An Arc intent whose
//! block bounds are unusable (zero, unordered, or a "block" longer than 64
//! bytes) is [`Invalid::NoSymbols`].
//!
//! ## Cost
//!
//! The page is parsed with one copy (`RecoveryPage::from_bytes`), and only
//! the `count` first slots of each registry are looked at.
//!
//! ## Order
//!
//! The intent's release first (it is the most recent acquisition), then the
//! mutexes, then the Arc references, each registry from its last slot to its
//! first: reverse acquisition order within each registry. Mutexes go before
//! references so that waiters are woken as early as possible, and so that
//! the mutex of an `Arc<Mutex<T>>` is poisoned and unlocked while its slot
//! is still held (released after, a slot freed and reallocated would hold
//! a fresh mutex, whose word the poison-and-unlock `CAS` would not match:
//! harmless, but the poison would be lost with the object anyway).

use crate::layout::{OBJECT_ALIGN, REGION_HEADER_SIZE, RegionLayout};
use abi::checkpoint::{
    ArcBlocks, MAX_ARCS, MAX_MUTEXES, MAX_SCOPES, RECOVERY_MAGIC, RELEASE_AT_COMMIT, RecoveryPage, RegionInfo, intent,
    lock_tag,
};
use abi::trap::Registers;

/// Most releases one plan can hold: the intent and two full registries.
pub const MAX_RELEASES: usize = 1 + MAX_MUTEXES + MAX_ARCS;

/// The longest a libtask Arc asm block can be: a "block" longer than this
/// is a corrupt page, not a block.
pub const MAX_ARC_BLOCK: u64 = 64;

/// Whether `pc` is in `[start, commit)`; `None` if the pair is unusable.
fn inside(start: u64, commit: u64, pc: u64) -> Option<bool> {
    if start == 0 || commit <= start || commit - start > MAX_ARC_BLOCK {
        return None;
    }
    Some(start <= pc && pc < commit)
}

/// One release, as the fault server must carry it out ([`crate::execute`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Poison and unlock the mutex at `addr` *if the faulted task owns it*
    /// (decided at execution from the owner word), then wake one waiter.
    ///
    /// `TASK_CTL` operations, on the mutex layout of [`crate::layout::mutex`]
    /// (`+0` word, `+4` poison; one naturally aligned `u64`):
    /// 1. `CAS64(addr, old = task, new = POISONED << 32)`: poison and unlock
    ///    in one step; the value found tells what happened. If its low word
    ///    without `CONTENDED` is not `task`, the task does not hold the
    ///    mutex: stop. Otherwise retry with the found value as `old` (a
    ///    waiter set `CONTENDED`, or the poison word was different) — at
    ///    most [`crate::execute::MUTEX_CAS_TRIES`] times.
    /// 2. `FUTEX_WAKE(addr, 1)` — always, also when nothing was unlocked: a
    ///    task that faulted between its own unlock and its wake owes it.
    PoisonAndUnlockMutex { addr: u64 },
    /// Give back one reference to the Arc slot at `addr`, in the region
    /// starting at `region_base`.
    ///
    /// `TASK_CTL` operations, on the slot layout of [`crate::layout::arc`]
    /// (`+4` count) and the region header of [`crate::layout::region`]:
    /// 1. `FETCH_ADD32(addr + 4, -1)` → `old`;
    /// 2. `old == 1`: the slot is now free; `FETCH_ADD32(region_base + 36
    ///    (frees), +1)`;
    /// 3. `old == 0`: there was no reference to give back (a hostile or
    ///    already-released count): undo with `FETCH_ADD32(addr + 4, +1)` and
    ///    count it, `FETCH_ADD32(region_base + 40 (double_frees), +1)`.
    ArcDecrement { addr: u64, region_base: u64 },
    /// As [`Action::PoisonAndUnlockMutex`], on the writer word of the
    /// `RwLock` at `addr` (the same word pair, [`crate::layout::rwlock`]),
    /// but waking *every* waiter: readers and writers sleep on it alike.
    PoisonAndUnlockRwLock { addr: u64 },
    /// Give back the faulted task's read locks of the `RwLock` at `addr`,
    /// but `keep` of them (the reads of the scopes that survive).
    ///
    /// `TASK_CTL` operations ([`crate::execute`]): read the reader slots
    /// pairwise (`CAS64(p, 0, 0)` changes nothing), count the slots that
    /// hold the task's id; clear all but `keep` of them, each pair by a
    /// `CAS64` from the value found; then `FETCH_ADD32(drain, 2)` and
    /// `FUTEX_WAKE(drain, all)` — always, also when nothing was released
    /// (a task that faulted between its slot's release and its wake owes
    /// it).
    ReleaseRwLockReads { addr: u64, keep: u64 },
    /// Reset the `Once` at `addr` to incomplete and poisoned *if the
    /// faulted task is its running initializer* (the same `CAS64` as a
    /// mutex's poison-and-unlock, on [`crate::layout::once`]), then wake
    /// every waiter: one of them runs the initializer again.
    ResetOnce { addr: u64 },
}

impl Action {
    pub fn addr(&self) -> u64 {
        match *self {
            Action::PoisonAndUnlockMutex { addr }
            | Action::ArcDecrement { addr, .. }
            | Action::PoisonAndUnlockRwLock { addr }
            | Action::ReleaseRwLockReads { addr, .. }
            | Action::ResetOnce { addr } => addr,
        }
    }

    /// Short name, for `release` events.
    pub const fn name(&self) -> &'static str {
        match self {
            Action::PoisonAndUnlockMutex { .. } => "mutex",
            Action::ArcDecrement { .. } => "arc",
            Action::PoisonAndUnlockRwLock { .. } => "rwlock_write",
            Action::ReleaseRwLockReads { .. } => "rwlock_read",
            Action::ResetOnce { .. } => "once",
        }
    }
}

/// Where a release came from (for the fault report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The intent slot: a fault in the middle of an acquire or release.
    Intent,
    /// Slot `i` of the mutex registry.
    Mutex(usize),
    /// Slot `i` of the Arc registry.
    Arc(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    pub action: Action,
    pub origin: Origin,
    /// The scope depth that held it.
    pub scope: u64,
}

/// A part of the page the plan left out, and why; the fault server
/// reports each one (module note, "Salvage").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Salvage {
    /// A registry entry (or the intent) whose address names no object of
    /// its kind in the task's shared regions ([`Invalid::names_no_object`]):
    /// nothing shared can be held there, so it owes no release.
    Entry { origin: Origin, addr: u64, scope: u64, why: Invalid },
    /// The mutex registry's `count` was past its capacity: every slot was
    /// read instead (stale slots included, which a mutex release, decided
    /// by the owner word, makes harmless).
    MutexCount { count: u64 },
}

/// Most salvage notes one plan can hold: every slot of both registries,
/// the intent and the count.
pub const MAX_SALVAGED: usize = MAX_RELEASES + 1;

/// The releases a rollback owes, in the order to perform them.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    releases: heapless::Vec<Release, MAX_RELEASES>,
    salvaged: heapless::Vec<Salvage, MAX_SALVAGED>,
    /// Scopes open according to the page.
    pub page_depth: u64,
}

impl Plan {
    pub fn releases(&self) -> &[Release] {
        &self.releases
    }

    /// What the plan left out of the page, and why (empty for an intact
    /// page).
    pub fn salvaged(&self) -> &[Salvage] {
        &self.salvaged
    }

    pub fn is_empty(&self) -> bool {
        self.releases.is_empty()
    }

    /// Empties the plan, in place.
    pub fn clear(&mut self) {
        self.releases.clear();
        self.salvaged.clear();
        self.page_depth = 0;
    }

    fn note(&mut self, s: Salvage) {
        // Capacity is one per slot, the intent and the count: cannot overflow.
        let _ = self.salvaged.push(s);
    }

    fn push(&mut self, r: Release) {
        // Capacity is the intent plus both registries: cannot overflow.
        let _ = self.releases.push(r);
    }
}

/// Why a page was refused, or an entry left out. Every variant means: do
/// not release anything from this page; escalate to a fresh start —
/// except those of [`Invalid::names_no_object`] on a registry entry or
/// the intent, which leave out only that entry ([`Salvage::Entry`]), and
/// [`Invalid::TooManyMutexes`] on a page without tagged entries
/// ([`Salvage::MutexCount`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes than a `RecoveryPage`.
    Short {
        len: usize,
    },
    BadMagic {
        found: u64,
    },
    /// The page claims more scopes than can exist.
    BadDepth {
        depth: u64,
    },
    /// The rollback target does not fit the page (page depth + 1 at most:
    /// the page may lag the kernel by one scope while a scope opens).
    BadTarget {
        target: u64,
        page_depth: u64,
    },
    TooManyMutexes {
        count: u64,
    },
    TooManyArcs {
        count: u64,
    },
    Misaligned {
        addr: u64,
    },
    /// Not inside any shared region of the task (or straddling its end).
    OutsideRegions {
        addr: u64,
    },
    /// Inside a region's header, where no object lives.
    InRegionHeader {
        addr: u64,
    },
    /// In a region whose header layout the server has not validated (not
    /// initialized, or inconsistent): no object there can be told apart.
    NoLayout {
        addr: u64,
    },
    /// A mutex entry (or `LOCK`/`UNLOCK` intent) outside the region's
    /// statics area and Arc payloads, where mutexes live (an Arc slot's
    /// own header, say).
    NotAMutex {
        addr: u64,
    },
    /// An Arc entry (or Arc intent) that is not the start of one of the
    /// region's Arc slots (a mutex, the inside of a slot, ...).
    NotAnArcSlot {
        addr: u64,
    },
    /// An entry or the intent owned by a scope deeper than the page's
    /// depth, or an intent owned by a scope that survives the rollback.
    BadScope {
        addr: u64,
        scope: u64,
        depth: u64,
    },
    /// The same address twice in the Arc registry (libtask keeps one
    /// entry per object), or in both registries.
    Duplicate {
        addr: u64,
    },
    /// Unknown intent operation.
    BadIntent {
        op: u64,
    },
    /// The intent contradicts the registries (see the module table).
    IntentConflict {
        addr: u64,
    },
    /// An Arc intent, but no usable asm-block bounds in the page
    /// (`RecoveryPage::arc_blocks`) to decide it.
    NoSymbols,
    /// A mutex registry address whose low bits name no lock kind
    /// (`abi::checkpoint::lock_tag`).
    BadLockTag {
        addr: u64,
    },
}

impl Invalid {
    /// Whether this says of an address that it names no object of the
    /// entry's kind in the task's shared regions — misaligned, outside
    /// them, in a header, where the layout puts no such object — rather
    /// than something about the page's structure. Such an entry cannot
    /// stand for anything the task holds in shared memory (other tasks
    /// reach only the objects the layouts place), so leaving it out loses
    /// no release, while refusing the page would lose them all.
    pub const fn names_no_object(&self) -> bool {
        matches!(
            self,
            Invalid::Misaligned { .. }
                | Invalid::OutsideRegions { .. }
                | Invalid::InRegionHeader { .. }
                | Invalid::NotAMutex { .. }
                | Invalid::NotAnArcSlot { .. }
        )
    }

    /// Short reason, for `escalate` events.
    pub const fn reason(&self) -> &'static str {
        match self {
            Invalid::Short { .. } => "recovery page short",
            Invalid::BadMagic { .. } => "recovery page magic",
            Invalid::BadDepth { .. } => "recovery page depth",
            Invalid::BadTarget { .. } => "rollback depth does not fit the recovery page",
            Invalid::TooManyMutexes { .. } => "mutex registry count",
            Invalid::TooManyArcs { .. } => "arc registry count",
            Invalid::Misaligned { .. } => "registry address misaligned",
            Invalid::OutsideRegions { .. } => "registry address outside shared regions",
            Invalid::InRegionHeader { .. } => "registry address in a region header",
            Invalid::NoLayout { .. } => "registry address in a region without a valid header layout",
            Invalid::NotAMutex { .. } => "mutex entry outside the region's statics area and Arc payloads",
            Invalid::NotAnArcSlot { .. } => "arc entry not at an arc slot start",
            Invalid::BadScope { .. } => "registry scope",
            Invalid::Duplicate { .. } => "registry duplicate",
            Invalid::BadIntent { .. } => "intent operation",
            Invalid::IntentConflict { .. } => "intent contradicts the registries",
            Invalid::NoSymbols => "arc intent without usable asm-block bounds",
            Invalid::BadLockTag { .. } => "mutex registry entry of an unknown lock kind",
        }
    }
}

/// What kind of object a registry entry claims to name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mutex,
    Arc,
}

/// The base of the region holding an 8-byte object of `kind` at `addr`,
/// after the checks every registry address must pass: inside one of the
/// task's regions (as the kernel reports them), past its header, and where
/// the region's validated layout puts objects of that kind — a mutex in
/// the statics area or an Arc slot's payload, an Arc at a slot start.
fn object_at(addr: u64, kind: Kind, regions: &[RegionInfo], layouts: &[RegionLayout]) -> Result<u64, Invalid> {
    let base = region_of(addr, regions)?;
    let l = layouts.iter().find(|l| l.base == base).ok_or(Invalid::NoLayout { addr })?;
    match kind {
        Kind::Mutex if !l.is_mutex(addr) => Err(Invalid::NotAMutex { addr }),
        Kind::Arc if !l.is_slot(addr) => Err(Invalid::NotAnArcSlot { addr }),
        _ => Ok(base),
    }
}

/// The base of the region holding an 8-byte object at `addr`, after the
/// checks every registry address must pass.
fn region_of(addr: u64, regions: &[RegionInfo]) -> Result<u64, Invalid> {
    if !addr.is_multiple_of(OBJECT_ALIGN) {
        return Err(Invalid::Misaligned { addr });
    }
    for r in regions {
        let Some(end) = r.base.checked_add(r.size) else { continue };
        if addr < r.base || addr >= end {
            continue;
        }
        if addr - r.base < REGION_HEADER_SIZE {
            return Err(Invalid::InRegionHeader { addr });
        }
        if end - addr < OBJECT_ALIGN {
            return Err(Invalid::OutsideRegions { addr });
        }
        return Ok(r.base);
    }
    Err(Invalid::OutsideRegions { addr })
}

/// A validated live entry.
#[derive(Clone, Copy)]
struct Live {
    slot: usize,
    addr: u64,
    scope: u64,
    base: u64,
}

/// Validates the live entries `(addr, scope)` of one registry of `kind`
/// into `out`. An address listed twice is [`Invalid::Duplicate`], unless
/// a mutex: then it is one entry, of the outermost scope listing it. An
/// entry that names no object of its kind is left out, noted in `plan`.
/// `stale_scopes`: the slots read may include stale ones (a corrupt mutex
/// count), whose scope may be deeper than the page's: such a listing is
/// taken as the innermost scope's.
#[allow(clippy::too_many_arguments)]
fn live_entries<const N: usize>(
    entries: impl Iterator<Item = (u64, u64)>,
    depth: u64,
    regions: &[RegionInfo],
    layouts: &[RegionLayout],
    kind: Kind,
    stale_scopes: bool,
    out: &mut heapless::Vec<Live, N>,
    plan: &mut Plan,
) -> Result<(), Invalid> {
    let merge = kind == Kind::Mutex;
    for (slot, (addr, mut scope)) in entries.enumerate() {
        if addr == 0 {
            continue; // a released slot (libtask's tombstone)
        }
        let base = match object_at(addr, kind, regions, layouts) {
            Ok(base) => base,
            Err(why) if why.names_no_object() => {
                let origin = if kind == Kind::Mutex { Origin::Mutex(slot) } else { Origin::Arc(slot) };
                plan.note(Salvage::Entry { origin, addr, scope, why });
                continue;
            }
            Err(why) => return Err(why),
        };
        if scope > depth && stale_scopes {
            scope = depth;
        }
        if scope > depth {
            return Err(Invalid::BadScope { addr, scope, depth });
        }
        if let Some(l) = out.iter_mut().find(|l| l.addr == addr) {
            if !merge {
                return Err(Invalid::Duplicate { addr });
            }
            l.scope = l.scope.min(scope);
            continue;
        }
        let _ = out.push(Live { slot, addr, scope, base });
    }
    Ok(())
}

/// Decides the releases for rolling the task back to scope `depth`
/// (1 = outermost; 0 = fresh start, release everything), from the bytes of
/// its recovery page (which also locates libtask's Arc asm blocks), its
/// shared regions (as the kernel reports them), the layouts of those
/// regions the server validated ([`RegionLayout`]: an entry in a region
/// without one is [`Invalid::NoLayout`]) and its registers at the fault.
pub fn plan(
    page: &[u8],
    regions: &[RegionInfo],
    layouts: &[RegionLayout],
    regs: &Registers,
    depth: u64,
) -> Result<Plan, Invalid> {
    let mut out = Plan::default();
    plan_into(page, regions, layouts, regs, depth, &mut out)?;
    Ok(out)
}

/// [`plan`] into `out` (cleared first; empty on error): a plan holds room
/// for every release (~5 KiB), so the fault server keeps one and fills it
/// in place rather than moving a new one per fault.
pub fn plan_into(
    page: &[u8],
    regions: &[RegionInfo],
    layouts: &[RegionLayout],
    regs: &Registers,
    depth: u64,
    out: &mut Plan,
) -> Result<(), Invalid> {
    out.clear();
    // In place when aligned (the fault server's buffers are); the copy is
    // made only when not (declared, not initialised, on the aligned path).
    let copy;
    let p = match RecoveryPage::view(page) {
        Some(p) => p,
        None => {
            copy = RecoveryPage::from_bytes(page).ok_or(Invalid::Short { len: page.len() })?;
            &copy
        }
    };
    if p.magic != RECOVERY_MAGIC {
        return Err(Invalid::BadMagic { found: p.magic });
    }
    if p.depth > MAX_SCOPES as u64 {
        return Err(Invalid::BadDepth { depth: p.depth });
    }
    if depth > MAX_SCOPES as u64 || depth > p.depth + 1 {
        return Err(Invalid::BadTarget { target: depth, page_depth: p.depth });
    }
    // A mutex count past the array (a flipped register in the push that
    // raises it): every slot is read. Stale slots past the true count
    // name mutexes the task let go, or holds through a live listing; a
    // release is decided by the owner word and only for the outermost
    // listing, so they add nothing wrong. Not so for counted objects: a
    // stale read lock or Arc reference would be given back twice.
    if p.arc_count > MAX_ARCS as u64 {
        return Err(Invalid::TooManyArcs { count: p.arc_count });
    }
    let mut mutex_count = p.mutex_count;
    let stale = mutex_count > MAX_MUTEXES as u64;
    if stale {
        if p.mutexes.iter().any(|e| e.addr & lock_tag::MASK != 0) {
            return Err(Invalid::TooManyMutexes { count: mutex_count });
        }
        out.note(Salvage::MutexCount { count: mutex_count });
        mutex_count = MAX_MUTEXES as u64;
    }
    let result = plan_valid(p, mutex_count as usize, stale, regions, layouts, regs, depth, out);
    if result.is_err() {
        out.clear();
    }
    result
}

/// [`plan_into`] once the page's header and counts are checked.
#[allow(clippy::too_many_arguments)]
fn plan_valid(
    p: &RecoveryPage,
    mutex_count: usize,
    stale: bool,
    regions: &[RegionInfo],
    layouts: &[RegionLayout],
    regs: &Registers,
    depth: u64,
    out: &mut Plan,
) -> Result<(), Invalid> {
    let mut mutexes: heapless::Vec<Live, MAX_MUTEXES> = heapless::Vec::new();
    let mut arcs: heapless::Vec<Live, MAX_ARCS> = heapless::Vec::new();
    // Tagged entries (RwLock, Once: `locks`) are left to their own pass,
    // which pages without any (most) skip.
    let mut any_tagged = false;
    live_entries(
        p.mutexes[..mutex_count].iter().map(|e| {
            // A release marked for the next commit is still held by its
            // depth until the kernel makes it (`RELEASE_AT_COMMIT`).
            let scope = e.scope & !RELEASE_AT_COMMIT;
            if e.addr & lock_tag::MASK == 0 {
                (e.addr, scope)
            } else {
                any_tagged = true;
                (0, scope)
            }
        }),
        p.depth,
        regions,
        layouts,
        Kind::Mutex,
        stale,
        &mut mutexes,
        out,
    )?;
    live_entries(
        p.arcs[..p.arc_count as usize].iter().map(|e| (e.addr, e.scope & !RELEASE_AT_COMMIT)),
        p.depth,
        regions,
        layouts,
        Kind::Arc,
        false,
        &mut arcs,
        out,
    )?;
    if let Some(m) = mutexes.iter().find(|m| arcs.iter().any(|a| a.addr == m.addr)) {
        return Err(Invalid::Duplicate { addr: m.addr });
    }

    let mut tagged = locks::Objects::new();
    if any_tagged {
        let live = &p.mutexes[..mutex_count];
        locks::validate(live, p.depth, depth, regions, layouts, &mutexes, &mut tagged, out)?;
    }
    let intent = intent_release(p, regions, layouts, regs.rip, depth, &mutexes, &arcs, out)?;
    out.page_depth = p.depth;
    if let Some(release) = intent {
        out.push(release);
    }
    for m in mutexes.iter().rev().filter(|m| m.scope >= depth) {
        out.push(Release {
            action: Action::PoisonAndUnlockMutex { addr: m.addr },
            origin: Origin::Mutex(m.slot),
            scope: m.scope,
        });
    }
    if any_tagged {
        locks::emit(&tagged, depth, out);
    }
    for a in arcs.iter().rev().filter(|a| a.scope >= depth) {
        out.push(Release {
            action: Action::ArcDecrement { addr: a.addr, region_base: a.base },
            origin: Origin::Arc(a.slot),
            scope: a.scope,
        });
    }
    Ok(())
}

/// What the intent slot adds (the module's table), after its checks. An
/// intent on an address that names no object of its kind is left out
/// (noted in `plan`): the operation in flight touched nothing shared.
#[allow(clippy::too_many_arguments)]
fn intent_release(
    p: &RecoveryPage,
    regions: &[RegionInfo],
    layouts: &[RegionLayout],
    pc: u64,
    depth: u64,
    mutexes: &[Live],
    arcs: &[Live],
    plan: &mut Plan,
) -> Result<Option<Release>, Invalid> {
    let it = p.intent;
    if it.op == intent::NONE {
        return Ok(None);
    }
    if !matches!(it.op, intent::LOCK | intent::UNLOCK | intent::ARC_CLONE | intent::ARC_DROP) {
        return Err(Invalid::BadIntent { op: it.op });
    }
    let addr = it.addr;
    let is_mutex = matches!(it.op, intent::LOCK | intent::UNLOCK);
    let base = match object_at(addr, if is_mutex { Kind::Mutex } else { Kind::Arc }, regions, layouts) {
        Ok(base) => base,
        Err(why) if why.names_no_object() => {
            plan.note(Salvage::Entry { origin: Origin::Intent, addr, scope: it.scope, why });
            return Ok(None);
        }
        Err(why) => return Err(why),
    };
    // An intent is written and cleared within one operation, at the depth
    // of the moment: it belongs to a scope being rolled back (or to a task
    // starting afresh). One of a surviving scope cannot exist.
    if it.scope > p.depth || it.scope < depth {
        return Err(Invalid::BadScope { addr, scope: it.scope, depth: p.depth });
    }
    let (same, other) = if is_mutex { (mutexes, arcs) } else { (arcs, mutexes) };
    if other.iter().any(|l| l.addr == addr) {
        return Err(Invalid::IntentConflict { addr });
    }
    let entry = same.iter().find(|l| l.addr == addr);
    if let Some(e) = entry
        && e.scope != it.scope
    {
        return Err(Invalid::IntentConflict { addr });
    }
    let action = match it.op {
        intent::LOCK | intent::UNLOCK => (entry.is_none()).then_some(Action::PoisonAndUnlockMutex { addr }),
        _ => {
            let b: ArcBlocks = p.arc_blocks;
            let (start, commit) =
                if it.op == intent::ARC_CLONE { (b.inc_start, b.inc_commit) } else { (b.dec_start, b.dec_commit) };
            let inside = inside(start, commit, pc).ok_or(Invalid::NoSymbols)?;
            // The in-flight reference is counted iff the xadd ran (clone:
            // outside the block; drop: not yet, inside the block).
            let counted = if it.op == intent::ARC_CLONE { !inside } else { inside };
            match (entry.is_some(), counted) {
                // Present: the entry holds the reference; consistent only
                // when the in-flight reference is the one it records.
                (true, true) => None,
                (true, false) => return Err(Invalid::IntentConflict { addr }),
                (false, true) => Some(Action::ArcDecrement { addr, region_base: base }),
                (false, false) => None,
            }
        }
    };
    Ok(action.map(|action| Release { action, origin: Origin::Intent, scope: it.scope }))
}

/// The body of the planner's fuzz target (`fault-server/recovery/fuzz`,
/// `cargo fuzz run plan`) and of its seeded property test: `data` is
/// `depth u8 | pc u64 | (base u64, size u64, statics u32, slots_offset u32,
/// slot_size u32, slot_count u32) × 2 | page bytes`. Whatever the bytes,
/// [`plan_into`] must not panic, and every release it plans must name an
/// object of the right kind inside one of the regions, by its layout.
#[doc(hidden)]
pub fn fuzz_plan(data: &[u8]) {
    let mut at = 0usize;
    let mut take = |n: usize| -> u64 {
        let mut v = [0u8; 8];
        for (i, b) in v.iter_mut().take(n).enumerate() {
            *b = data.get(at + i).copied().unwrap_or(0);
        }
        at += n;
        u64::from_le_bytes(v)
    };
    let depth = take(1) % 10;
    let pc = take(8);
    let mut regions = [RegionInfo::default(); 2];
    let mut layouts = [RegionLayout { base: 0, size: 0, statics: 0, slots_offset: 0, slot_size: 8, slot_count: 0 }; 2];
    for i in 0..2 {
        let (base, size) = (take(8), take(8));
        regions[i] = RegionInfo { base, size };
        let (statics, slots_offset, slot_size, slot_count) = (take(4), take(4), take(4), take(4));
        // Layouts as the server makes them: through the header check.
        let mut header = [0u8; RegionLayout::HEADER_BYTES];
        header[..8].copy_from_slice(&crate::layout::REGION_MAGIC.to_le_bytes());
        header[8..12].copy_from_slice(&crate::layout::region::STATE_READY.to_le_bytes());
        for (o, v) in [(16, statics), (20, slot_size), (24, slot_count), (28, slots_offset)] {
            header[o..o + 4].copy_from_slice(&(v as u32).to_le_bytes());
        }
        if let Ok(l) = RegionLayout::from_header(base, size, &header) {
            layouts[i] = l;
        }
    }
    let page = &data[at.min(data.len())..];
    let regs = Registers { rip: pc, ..Registers::default() };
    let mut out = Plan::default();
    if plan_into(page, &regions, &layouts, &regs, depth, &mut out).is_err() {
        assert!(out.is_empty(), "a refused page plans nothing");
        return;
    }
    for r in out.releases() {
        let addr = r.action.addr();
        let l = layouts
            .iter()
            .zip(&regions)
            .find(|(l, g)| l.base == g.base && g.base <= addr && addr - g.base < g.size)
            .map(|(l, _)| l);
        let l = l.expect("a release outside every region with a layout");
        match r.action {
            Action::PoisonAndUnlockMutex { .. } => assert!(l.is_mutex(addr), "{r:?}"),
            Action::ArcDecrement { region_base, .. } => assert!(l.is_slot(addr) && region_base == l.base, "{r:?}"),
            Action::PoisonAndUnlockRwLock { .. } | Action::ReleaseRwLockReads { .. } => {
                assert!(l.is_static_object(addr, crate::layout::rwlock::DATA), "{r:?}")
            }
            Action::ResetOnce { .. } => assert!(l.is_static_object(addr, crate::layout::once::DATA), "{r:?}"),
        }
        assert!(r.scope >= depth);
    }
}

mod locks;
#[cfg(test)]
mod tests;
