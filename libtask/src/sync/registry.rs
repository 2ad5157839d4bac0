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
//! ## How it is written
//!
//! The fault server reads the page while the task is stopped at a fault,
//! which can fall between any two instructions. So every change is a
//! sequence of single aligned 8-byte stores, each of which leaves the page
//! meaning something exact (the argument per operation is in
//! `docs/recovery.md`):
//!
//! * a registry is an array of `{addr, scope}` slots and a `count`; a slot
//!   below `count` with `addr == 0` is a *tombstone* (released). A push
//!   writes `scope`, then `addr` (the store that makes it live), then
//!   raises `count` if it used the slot at `count`; a removal is the one
//!   store `addr = 0`, then `count` drops over trailing tombstones. So an
//!   entry is never half-written and never listed twice;
//! * the intent is written `addr`, `scope`, then `op` (the store that makes
//!   it valid), and cleared by `op = NONE`.
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
//! task's handles sharing that one registered reference.

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
    registered: u64,
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
    registered: 0,
    task_id: 0,
}));

/// Which registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Mutex,
    Arc,
}

fn fence() {
    compiler_fence(Ordering::SeqCst);
}

/// The area, registered with the kernel.
fn area() -> *mut Area {
    let a = AREA.0.get();
    // SAFETY: `a` points to the static; single-threaded (see AreaCell).
    if unsafe { read_volatile(&raw const (*a).registered) } == 0 {
        let id = crate::syscall::task_id();
        let page = a as u64; // the page is the area's first field
        // SAFETY: SET_RECOVERY only records the address; the kernel checks
        // it. It cannot fail for an aligned address in user space; if it
        // did, the fault server would see no page and escalate instead of
        // releasing, which is safe.
        let _ = unsafe { crate::syscall::raw::syscall1(nr::SET_RECOVERY, page) };
        // SAFETY: as above.
        unsafe {
            write_volatile(&raw mut (*a).task_id, id);
            write_volatile(&raw mut (*a).registered, 1);
        }
    }
    a
}

/// Reads a `u64` of the area.
fn get(p: *const u64) -> u64 {
    // SAFETY: callers pass pointers into AREA, aligned fields.
    unsafe { read_volatile(p) }
}

/// Writes a `u64` of the area, ordered against everything around it.
fn put(p: *mut u64, v: u64) {
    fence();
    // SAFETY: callers pass pointers into AREA, aligned fields.
    unsafe { write_volatile(p, v) };
    fence();
}

/// This task's id (what its mutex words hold when it owns them).
pub(crate) fn task_id() -> u32 {
    // SAFETY: a field of the static.
    get(unsafe { &raw const (*area()).task_id }) as u32
}

/// Scopes open, as libtask counts them.
pub(crate) fn depth() -> u64 {
    // SAFETY: a field of the static.
    get(unsafe { &raw const (*area()).page.depth })
}

pub(crate) fn set_depth(depth: u64) {
    // SAFETY: a field of the static.
    put(unsafe { &raw mut (*area()).page.depth }, depth)
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

/// Announces `op` on the object at `addr` (at the current depth).
pub(crate) fn set_intent(op: u64, addr: u64) {
    let i = intent_ptr();
    let depth = depth();
    // SAFETY: fields of the intent in the static.
    unsafe {
        put(&raw mut (*i).addr, addr);
        put(&raw mut (*i).scope, depth);
        put(&raw mut (*i).op, op);
    }
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

fn table(kind: Kind) -> Table {
    let a = area();
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
    fn count(&self) -> usize {
        (get(self.count) as usize).min(self.cap)
    }

    fn addr_ptr(&self, slot: usize) -> *mut u64 {
        assert!(slot < self.cap);
        // SAFETY: `slot` is in bounds of the entries array.
        unsafe { (&raw mut (*self.entries.add(slot))[0]).cast() }
    }

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

/// A slot a push may use: the one at `count`, else the lowest tombstone.
pub(crate) fn free_slot(kind: Kind) -> Option<usize> {
    let t = table(kind);
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
    // SAFETY: in bounds (asserted by deferred_ptr).
    unsafe { write_volatile(t.deferred_ptr(slot), 0) };
    put(t.addr_ptr(slot), addr);
    if slot >= t.count() {
        put(t.count, slot as u64 + 1);
    }
}

/// The store that makes `slot` a tombstone, for the Arc drop asm block.
pub(crate) fn addr_ptr(kind: Kind, slot: usize) -> *mut u64 {
    table(kind).addr_ptr(slot)
}

/// Unregisters `slot`.
pub(crate) fn remove(kind: Kind, slot: usize) {
    let t = table(kind);
    put(t.addr_ptr(slot), 0);
    trim(kind);
}

/// Lowers `count` over trailing tombstones and clears their private flags.
pub(crate) fn trim(kind: Kind) {
    let t = table(kind);
    let mut n = t.count();
    while n > 0 && get(t.addr_ptr(n - 1)) == 0 {
        // SAFETY: in bounds (asserted by deferred_ptr).
        unsafe { write_volatile(t.deferred_ptr(n - 1), 0) };
        n -= 1;
        put(t.count, n as u64);
    }
}

pub(crate) fn entry_addr(kind: Kind, slot: usize) -> u64 {
    get(table(kind).addr_ptr(slot))
}

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

/// Commit of scope `depth`: its live entries pass to the parent scope.
pub(crate) fn hand_to_parent(depth: u64) {
    for kind in [Kind::Mutex, Kind::Arc] {
        let t = table(kind);
        for i in 0..t.count() {
            if get(t.addr_ptr(i)) != 0 && get(t.scope_ptr(i)) == depth {
                put(t.scope_ptr(i), depth - 1);
            }
        }
    }
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
