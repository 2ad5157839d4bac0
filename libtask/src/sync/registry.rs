//! The recovery page: checkpoint records, the held-mutex and Arc registries,
//! and the intent slot (layout: `abi::checkpoint::RecoveryPage`).
//!
//! ## Where it lives and when the kernel learns of it
//!
//! The page is a page-aligned `static` of this crate — private memory of the
//! task, in its data segment — so it is rolled back with everything else
//! when a checkpoint scope is, which is what keeps it true (the header of
//! `abi/src/checkpoint.rs` says why). It is registered with `SET_RECOVERY`
//! *lazily*, by the first use of anything that writes it ([`checkpoint`],
//! `Mutex::lock`, `Arc`): a task that never uses them has nothing to
//! release, and `_start` stays one `call` (no system call before `main`).
//! Registration comes before the first write, and before the first
//! `CHECKPOINT_OPEN`, which is all the kernel (it writes the fault record
//! of a rolled-back scope here) and the fault server need. If a rollback
//! undoes the "registered" flag, the next use registers again: harmless.
//!
//! [`checkpoint`]: crate::checkpoint::checkpoint
//!
//! The page also records where libtask's two Arc asm blocks are
//! (`RecoveryPage::arc_blocks`, written once, before `SET_RECOVERY`), so
//! the fault server decides an Arc intent from the page alone — no symbol
//! table, and a stripped task still rolls back.
//!
//! ## How it is written
//!
//! The fault server reads the page while the task is stopped at a fault,
//! which can fall between any two instructions. So every change is a
//! sequence of single aligned 8-byte stores, each of which leaves the page
//! meaning something exact (the argument per operation is in
//! `docs/recovery.md`):
//!
//! * a registry is a fixed array of `{addr, scope}` slots and a `count`; a
//!   slot below `count` with `addr == 0` is a *tombstone* (released). A
//!   push writes `scope`, then `addr` (the store that makes it live), then
//!   raises `count` if it used the slot at `count`; a removal is the one
//!   store `addr = 0`, then `count` drops over trailing tombstones. So an
//!   entry is never half-written and never listed twice;
//! * the fast push ([`push_top`]) takes the slot at `count` — no search:
//!   in the usual last-locked, first-unlocked order, a lock pushes at
//!   `count` and its unlock lowers `count` again. Only a full array makes
//!   a push look for a tombstone ([`free_slot`]);
//! * the intent (Arc count changes only; the asm blocks write it) is
//!   written `addr`, `scope`, then `op` (the store that makes it valid),
//!   and cleared by `op = NONE`.
//!
//! All accesses are volatile (the compiler may neither drop nor reorder
//! them against each other) with compiler fences around them (nor move
//! them across the atomic operations on the shared words they describe);
//! the CPU takes faults precisely, in program order, so that is enough.
//!
//! ## Private bookkeeping
//!
//! Next to the page, in the same `static`, three arrays the fault server
//! does not need: per mutex entry, whether its release is *deferred* (a
//! guard of an outer scope dropped inside an inner one; see
//! [`crate::sync`]); per Arc entry, the same, and the number of this
//! task's handles sharing that one registered reference. A free slot's
//! deferred flag is always clear (every path that frees a slot clears it
//! first, or never set it; a rollback restores flags and entries
//! together), so a push need not clear it.

use abi::checkpoint::{
    ArcEntry, Intent, MAX_ARCS, MAX_MUTEXES, MAX_SCOPES, MutexEntry, RecoveryPage, ScopeRecord, intent,
};
use abi::syscall::nr;
use core::cell::UnsafeCell;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{Ordering, compiler_fence};

#[repr(C, align(4096))]
struct Area {
    page: RecoveryPage,
    mutex_deferred: [u8; MAX_MUTEXES],
    arc_deferred: [u8; MAX_ARCS],
    arc_handles: [u32; MAX_ARCS],
    /// Per open scope `d` (index `d`; 0: outside any), the mutex registry's
    /// `count` when it opened; and that of the innermost scope, for the
    /// unlock's scope check ([`is_outer`]).
    mutex_bases: [u64; MAX_SCOPES + 1],
    mutex_base: u64,
    /// This task's id once the page is registered; 0 before.
    task_id: u64,
}
const _: () = assert!(core::mem::size_of::<Area>() == 4096);

struct AreaCell(UnsafeCell<Area>);

// SAFETY: a task is one thread, and nothing in it runs asynchronously (no
// signal handlers): every access comes from that thread, in program order.
// The kernel and the fault server read it only while the task is stopped.
unsafe impl Sync for AreaCell {}

static AREA: AreaCell = AreaCell(UnsafeCell::new(Area {
    page: RecoveryPage::EMPTY,
    mutex_deferred: [0; MAX_MUTEXES],
    arc_deferred: [0; MAX_ARCS],
    arc_handles: [0; MAX_ARCS],
    mutex_bases: [0; MAX_SCOPES + 1],
    mutex_base: 0,
    task_id: 0,
}));

/// Which registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Mutex,
    Arc,
}

#[inline(always)]
fn fence() {
    compiler_fence(Ordering::SeqCst);
}

/// The area, without the registration check (for paths that registered
/// already: a lock's unlock, a guard's drop).
#[inline(always)]
fn raw_area() -> *mut Area {
    AREA.0.get()
}

/// The area, registered with the kernel.
#[inline(always)]
fn area() -> *mut Area {
    let a = raw_area();
    // SAFETY: `a` points to the static; single-threaded (see AreaCell).
    if unsafe { read_volatile(&raw const (*a).task_id) } == 0 {
        register();
    }
    a
}

/// Records the Arc asm blocks in the page, registers it with the kernel,
/// then marks it registered (by writing the task id). Returns the id.
#[cold]
#[inline(never)]
fn register() -> u64 {
    let a = raw_area();
    let id = crate::syscall::task_id();
    // SAFETY: fields of the static; single-threaded (see AreaCell). The
    // bounds are in place before the kernel, and so the fault server,
    // knows the page; a rollback to before this point also undoes the
    // `task_id` store below, so the next use registers again.
    unsafe { write_volatile(&raw mut (*a).page.arc_blocks, super::refcount::blocks()) };
    fence();
    let page = a as u64; // the page is the area's first field
    // SAFETY: SET_RECOVERY only records the address; the kernel checks
    // it. It cannot fail for an aligned address in user space; if it
    // did, the fault server would see no page and escalate instead of
    // releasing, which is safe.
    let _ = unsafe { crate::syscall::raw::syscall1(nr::SET_RECOVERY, page) };
    // SAFETY: a field of the static.
    put(unsafe { &raw mut (*a).task_id }, id);
    id
}

/// Reads a `u64` of the area.
#[inline(always)]
fn get(p: *const u64) -> u64 {
    // SAFETY: callers pass pointers into AREA, aligned fields.
    unsafe { read_volatile(p) }
}

/// Writes a `u64` of the area, ordered against everything around it.
#[inline(always)]
fn put(p: *mut u64, v: u64) {
    fence();
    // SAFETY: callers pass pointers into AREA, aligned fields.
    unsafe { write_volatile(p, v) };
    fence();
}

/// This task's id (what its mutex words hold when it owns them); the
/// first call registers the page.
#[inline(always)]
pub(crate) fn task_id() -> u32 {
    // SAFETY: a field of the static.
    let id = get(unsafe { &raw const (*raw_area()).task_id });
    (if id == 0 { register() } else { id }) as u32
}

/// Scopes open: the page's `depth`, which only the kernel writes (at every
/// open, commit and rollback), so it is the kernel's count.
#[inline(always)]
pub(crate) fn depth() -> u64 {
    // SAFETY: a field of the static.
    get(unsafe { &raw const (*area()).page.depth })
}

/// Records, privately, that scope `depth + 1` has committed (the kernel
/// lowered the page's `depth` and handed the scope's entries up as part of
/// the commit): the unlock's scope check goes back to the parent's base.
/// Written only if it changed, like [`note_open`].
pub(crate) fn note_commit(depth: u64) {
    let a = area();
    let d = (depth as usize).min(MAX_SCOPES);
    // SAFETY: fields of the static; `d` is in bounds of `mutex_bases`.
    unsafe {
        let base = get(&raw const (*a).mutex_bases[d]);
        if get(&raw const (*a).mutex_base) != base {
            put(&raw mut (*a).mutex_base, base);
        }
    }
}

/// Records, privately, the mutex registry's size at the open of scope
/// `depth` (the kernel wrote the page's `depth` itself). Written only if it
/// changed: the area shares its page with the recovery page, which the
/// open write-protected, and an unchanged value must not cost a
/// copy-on-write fault per scope.
pub(crate) fn note_open(depth: u64) {
    let a = area();
    let d = (depth as usize).min(MAX_SCOPES);
    // SAFETY: fields of the static; `d` is in bounds of `mutex_bases`.
    unsafe {
        let n = get(&raw const (*a).page.mutex_count);
        if get(&raw const (*a).mutex_bases[d]) != n {
            put(&raw mut (*a).mutex_bases[d], n);
        }
        if get(&raw const (*a).mutex_base) != n {
            put(&raw mut (*a).mutex_base, n);
        }
    }
}

/// The record of scope `depth` (1 = outermost).
pub(crate) fn scope_record(depth: u64) -> ScopeRecord {
    let i = (depth as usize).clamp(1, MAX_SCOPES) - 1;
    // SAFETY: an element of the static's array, read as a whole.
    unsafe { read_volatile(&raw const (*area()).page.scopes[i]) }
}

/// The intent slot, for the Arc asm blocks that write it themselves.
pub(crate) fn intent_ptr() -> *mut Intent {
    // SAFETY: a field of the static.
    unsafe { &raw mut (*area()).page.intent }
}

pub(crate) fn clear_intent() {
    // SAFETY: a field of the intent in the static.
    put(unsafe { &raw mut (*intent_ptr()).op }, intent::NONE)
}

/// One registry: its count, its `{addr, scope}` slots, its deferred flags.
struct Table {
    count: *mut u64,
    entries: *mut [u64; 2],
    deferred: *mut u8,
    cap: usize,
}

const _: () = assert!(core::mem::size_of::<MutexEntry>() == 16 && core::mem::size_of::<ArcEntry>() == 16);

#[inline(always)]
fn table(kind: Kind) -> Table {
    let a = raw_area();
    // SAFETY: fields of the static. MutexEntry and ArcEntry are repr(C)
    // `{addr: u64, scope: u64}`, the layout of `[u64; 2]`.
    unsafe {
        match kind {
            Kind::Mutex => Table {
                count: &raw mut (*a).page.mutex_count,
                entries: (&raw mut (*a).page.mutexes).cast(),
                deferred: (&raw mut (*a).mutex_deferred).cast(),
                cap: MAX_MUTEXES,
            },
            Kind::Arc => Table {
                count: &raw mut (*a).page.arc_count,
                entries: (&raw mut (*a).page.arcs).cast(),
                deferred: (&raw mut (*a).arc_deferred).cast(),
                cap: MAX_ARCS,
            },
        }
    }
}

impl Table {
    /// Slots in use (clamped: the page is ours, but a stray write may have
    /// hit it, and an index past the array must never be formed).
    #[inline(always)]
    fn count(&self) -> usize {
        (get(self.count) as usize).min(self.cap)
    }

    #[inline(always)]
    fn addr_ptr(&self, slot: usize) -> *mut u64 {
        assert!(slot < self.cap);
        // SAFETY: `slot` is in bounds of the entries array.
        unsafe { (&raw mut (*self.entries.add(slot))[0]).cast() }
    }

    #[inline(always)]
    fn scope_ptr(&self, slot: usize) -> *mut u64 {
        assert!(slot < self.cap);
        // SAFETY: `slot` is in bounds of the entries array.
        unsafe { (&raw mut (*self.entries.add(slot))[1]).cast() }
    }

    fn deferred_ptr(&self, slot: usize) -> *mut u8 {
        assert!(slot < self.cap);
        // SAFETY: `slot` is in bounds of the deferred array.
        unsafe { self.deferred.add(slot) }
    }
}

/// The live slot holding `addr`.
pub(crate) fn find(kind: Kind, addr: u64) -> Option<usize> {
    let t = table(kind);
    (0..t.count()).find(|&i| get(t.addr_ptr(i)) == addr)
}

/// A slot a push may use: the one at `count`, else (after lowering
/// `count` over trailing tombstones) the lowest tombstone.
pub(crate) fn free_slot(kind: Kind) -> Option<usize> {
    let t = table(kind);
    if t.count() == t.cap {
        trim(kind);
    }
    let n = t.count();
    if n < t.cap {
        return Some(n);
    }
    (0..n).find(|&i| get(t.addr_ptr(i)) == 0)
}

/// Registers `addr` in `slot` (from [`free_slot`]), owned by the current scope.
pub(crate) fn push(kind: Kind, slot: usize, addr: u64) {
    let t = table(kind);
    put(t.scope_ptr(slot), depth());
    put(t.addr_ptr(slot), addr);
    if slot >= t.count() {
        put(t.count, slot as u64 + 1);
    }
}

/// The fast push: registers `addr` in the slot at `count`, owned by the
/// current scope, and returns the slot; `None` if the array is full (use
/// [`free_slot`] and [`push`]). Three stores: `scope`, `addr` (beyond the
/// count: not yet looked at), `count` (listed). The page must be
/// registered (by [`task_id`]).
#[inline(always)]
pub(crate) fn push_top(kind: Kind, addr: u64) -> Option<usize> {
    let t = table(kind);
    let n = get(t.count);
    if n >= t.cap as u64 {
        return None;
    }
    let slot = n as usize;
    // SAFETY: a field of the registered static.
    let depth = get(unsafe { &raw const (*raw_area()).page.depth });
    // SAFETY: `slot < cap`, in bounds of the entries array.
    unsafe {
        put((&raw mut (*t.entries.add(slot))[1]).cast(), depth);
        put((&raw mut (*t.entries.add(slot))[0]).cast(), addr);
    }
    put(t.count, n + 1);
    Some(slot)
}

/// The store that makes `slot` a tombstone, for the Arc drop asm block.
pub(crate) fn addr_ptr(kind: Kind, slot: usize) -> *mut u64 {
    table(kind).addr_ptr(slot)
}

/// Unregisters `slot` (a live slot: below `count`) with one store: the
/// last slot by lowering `count` (what lies beyond `count` is never looked
/// at, and a push writes the slot before raising `count` again), any other
/// by a tombstone (`addr = 0`). Tombstones left below are trimmed lazily,
/// when the array is full ([`free_slot`]) or by an Arc release.
#[inline(always)]
pub(crate) fn remove(kind: Kind, slot: usize) {
    let t = table(kind);
    if get(t.count) == slot as u64 + 1 {
        put(t.count, slot as u64);
    } else {
        put(t.addr_ptr(slot), 0);
    }
}

/// Lowers `count` over trailing tombstones.
#[cold]
#[inline(never)]
pub(crate) fn trim(kind: Kind) {
    let t = table(kind);
    let mut n = t.count();
    while n > 0 && get(t.addr_ptr(n - 1)) == 0 {
        n -= 1;
        put(t.count, n as u64);
    }
}

#[inline(always)]
pub(crate) fn entry_addr(kind: Kind, slot: usize) -> u64 {
    get(table(kind).addr_ptr(slot))
}

#[inline(always)]
pub(crate) fn entry_scope(kind: Kind, slot: usize) -> u64 {
    get(table(kind).scope_ptr(slot))
}

pub(crate) fn is_deferred(kind: Kind, slot: usize) -> bool {
    // SAFETY: in bounds (asserted by deferred_ptr).
    unsafe { read_volatile(table(kind).deferred_ptr(slot)) != 0 }
}

pub(crate) fn set_deferred(kind: Kind, slot: usize, deferred: bool) {
    // SAFETY: in bounds (asserted by deferred_ptr).
    unsafe { write_volatile(table(kind).deferred_ptr(slot), deferred as u8) }
}

/// The last (most recent) deferred live entry owned by scope `depth`.
pub(crate) fn deferred_at(kind: Kind, depth: u64) -> Option<usize> {
    let t = table(kind);
    (0..t.count()).rev().find(|&i| get(t.addr_ptr(i)) != 0 && get(t.scope_ptr(i)) == depth && is_deferred(kind, i))
}

/// Hands the releases waiting for scope `depth` (see [`deferred_any`]) to
/// the kernel, to make at the next commit or renew: each such entry's
/// `scope` gets `abi::checkpoint::RELEASE_AT_COMMIT` and loses its private
/// deferred flag. All or nothing: `false`, with nothing marked, if one of
/// them is a tagged lock entry (an `RwLock`'s, a `Once`'s), whose release
/// only libtask makes. The marks are private memory: a rollback to before
/// them undoes them; [`unmark`] undoes them when the commit did not happen.
pub(crate) fn mark_for_commit(depth: u64) -> bool {
    use abi::checkpoint::{RELEASE_AT_COMMIT, lock_tag};
    let waiting = |kind: Kind, i: usize| {
        let t = table(kind);
        get(t.addr_ptr(i)) != 0 && get(t.scope_ptr(i)) == depth && is_deferred(kind, i)
    };
    let m = table(Kind::Mutex);
    if (0..m.count()).any(|i| waiting(Kind::Mutex, i) && get(m.addr_ptr(i)) & lock_tag::MASK != 0) {
        return false;
    }
    for kind in [Kind::Mutex, Kind::Arc] {
        let t = table(kind);
        for i in 0..t.count() {
            if waiting(kind, i) {
                put(t.scope_ptr(i), depth | RELEASE_AT_COMMIT);
                set_deferred(kind, i, false);
            }
        }
    }
    true
}

/// Undoes [`mark_for_commit`]`(depth)` for the marks still in the page —
/// the commit they were for did not happen (a skipped `syscall`): the
/// releases wait again, privately.
pub(crate) fn unmark(depth: u64) {
    use abi::checkpoint::RELEASE_AT_COMMIT;
    for kind in [Kind::Mutex, Kind::Arc] {
        let t = table(kind);
        for i in 0..t.count() {
            if get(t.addr_ptr(i)) != 0 && get(t.scope_ptr(i)) == depth | RELEASE_AT_COMMIT {
                put(t.scope_ptr(i), depth);
                set_deferred(kind, i, true);
            }
        }
    }
}

/// Whether any release waits for scope `depth` to become the innermost
/// (`crate::sync::release_deferred`).
pub(crate) fn deferred_any(depth: u64) -> bool {
    deferred_at(Kind::Mutex, depth).is_some() || deferred_at(Kind::Arc, depth).is_some()
}

/// Whether the mutex entry in `slot` may belong to a scope outside the
/// innermost one, so that its release must be deferred (see
/// [`crate::sync`]): whether it lies below the registry's `count` at the
/// innermost scope's open. Exact one way — a slot at or above that base
/// was pushed in the innermost scope (or in one that committed into it),
/// so it is released now — and conservative the other: a slot below it is
/// deferred, which is right for an outer entry and merely late (to the
/// commit, which hands the entry to the parent scope and then releases
/// it) for the rare entry of this scope that reused a tombstone below.
#[inline(always)]
pub(crate) fn is_outer_mutex(slot: usize) -> bool {
    // SAFETY: a field of the static.
    (slot as u64) < get(unsafe { &raw const (*raw_area()).mutex_base })
}

/// Handles of this task sharing the registered Arc reference in `slot`.
pub(crate) fn arc_handles(slot: usize) -> u32 {
    assert!(slot < MAX_ARCS);
    // SAFETY: an element of the static's array, in bounds.
    unsafe { read_volatile(&raw const (*area()).arc_handles[slot]) }
}

pub(crate) fn set_arc_handles(slot: usize, n: u32) {
    assert!(slot < MAX_ARCS);
    // SAFETY: an element of the static's array, in bounds.
    unsafe { write_volatile(&raw mut (*area()).arc_handles[slot], n) }
}
