//! Shared objects that survive the faults of their holders: [`Mutex`] and
//! [`Arc`] in shared memory [`Region`]s, with the registries that let the
//! fault server release them for a task that faulted.
//!
//! | module | what | why it is its own module |
//! |---|---|---|
//! | [`region`] | a shared region: header, race-free initialization, statics area, Arc slots | the one allocator the fault server can check addresses against |
//! | [`mutex`] | `Mutex<T>`: futex lock, std-style poisoning | the release the fault server does with a `CAS64` |
//! | [`rwlock`] | `RwLock<T>`: reader slots named by id, writer-preferring | reads given back exactly, by count of slots |
//! | [`condvar`] | `Condvar`: a notify sequence word | holds nothing: what a fault while waiting means |
//! | [`once`] | `Once`, `OnceLock<T>` | a faulted initializer leaves it re-runnable |
//! | [`arc`] | `Arc<T>`: a counted slot, freed at zero | the count change the fault server decides from the pc |
//! | [`refcount`] | the two asm blocks that change an Arc count | their symbols are the exactness argument |
//! | [`registry`] | the recovery page and its private bookkeeping | written only in orders that are exact at every instruction |
//! | [`futex`] | `FUTEX_WAIT` / `FUTEX_WAKE` | the kernel-assisted sleep of the slow paths |
//!
//! The design, the intent protocol and the argument that every fault
//! window is exact are in `docs/recovery.md`; the word layouts are shared
//! with the fault server through `recovery::layout`.
//!
//! ## What may live in shared memory: [`Plain`]
//!
//! Other tasks can write anything into a shared region, at any time — the
//! rule is to treat it as hostile. So the data of a `Mutex<T>` or an
//! `Arc<T>` must be valid for *every* bit pattern and own nothing: no
//! references or pointers into a task's private memory, no enums with
//! invalid discriminants, no `bool`, and no drop glue (the fault server,
//! not the task, may be the one that drops an Arc's last reference, and it
//! runs no code of the task). [`Plain`] is the (unsafe) promise of that;
//! it requires `Copy`, which rules out `Drop` in the type system.
//!
//! ## Scopes: owned by the innermost, handed up on commit, deferred down
//!
//! Each registry entry belongs to the innermost checkpoint scope open when
//! the object was acquired. Dropping a guard or the last handle of an Arc
//! *inside a deeper scope than the one owning its entry* cannot release the
//! object at once: if that deeper scope were rolled back, the rolled-back
//! memory would hold the guard again, and the retry would release it a
//! second time. So the release is **deferred**: the entry stays (the object
//! stays held) until the scope that owns it is the innermost again — when
//! the deeper scopes have committed — and is done then, by the commit. If
//! the deeper scope is rolled back instead, the deferral is rolled back
//! with it, and the guard is live again: exactly once either way. A task
//! that locks a mutex whose release it deferred gets it back without
//! touching shared memory.

pub mod arc;
pub mod condvar;
pub mod futex;
pub mod mutex;
pub mod once;
pub mod refcount;
pub mod region;
pub mod registry;
pub mod rwlock;

pub use arc::Arc;
pub use condvar::{Condvar, WaitTimeoutResult};
pub use mutex::{LockResult, Mutex, MutexGuard, PoisonError, TryLockError, TryLockResult};
pub use once::{Once, OnceLock, OnceState};
pub use region::{Layout, Region, Stats};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use registry::Kind;

/// Types that may live in shared memory: every bit pattern is a valid
/// value, and a value owns nothing (see the module documentation).
///
/// # Safety
/// Implement it only for types with no invalid bit patterns (no `bool`,
/// `char`, enums, references, `NonZero*`...), no padding that matters, and
/// no pointers into private memory. `Copy` is required so that the type has
/// no drop glue.
pub unsafe trait Plain: Copy + 'static {}

macro_rules! plain {
    ($($t:ty),*) => { $(
        // SAFETY: integers: every bit pattern is a value, nothing owned.
        unsafe impl Plain for $t {}
    )* };
}
plain!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, ());
// SAFETY: an array of plain values is plain.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}

/// Types that may be placed at an offset of a region's statics area and
/// shared as `&'static`: all their mutation goes through atomics or a lock,
/// and every bit pattern is valid.
///
/// # Safety
/// As [`Plain`], and the type must be `Sync` through interior mutability.
pub unsafe trait Shared: Sync + 'static {}

// SAFETY: atomics are valid for every bit pattern and Sync.
unsafe impl Shared for core::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl Shared for core::sync::atomic::AtomicU64 {}

/// Why a shared-object operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncError {
    /// `CAP_LOOKUP` or `REGION` failed (no such region capability).
    Region(abi::syscall::Error),
    /// The layout asked for does not fit in the region.
    TooSmall,
    /// The region's header is not one this library wrote.
    BadHeader,
    /// The region was initialized with another layout.
    LayoutMismatch,
    /// The region's initializer did not finish in time.
    InitTimeout,
    /// An offset outside the statics area.
    OutOfRange,
    /// An offset or address not aligned for the object.
    Misaligned,
    /// The type does not fit an Arc slot.
    TooLarge,
    /// No free Arc slot.
    Full,
    /// This task's registry is full.
    RegistryFull,
    /// Not the address of an Arc slot of this region.
    NotASlot,
    /// The slot was freed, or reallocated (another generation).
    Stale,
}

/// Called by a commit that made scope `depth` the innermost: performs the
/// releases its inner scopes deferred, most recent first.
pub(crate) fn release_deferred(depth: u64) {
    while let Some(slot) = registry::deferred_at(Kind::Mutex, depth) {
        registry::set_deferred(Kind::Mutex, slot, false);
        // The mutex registry also lists RwLock guards (tagged entries).
        if registry::entry_addr(Kind::Mutex, slot) & abi::checkpoint::lock_tag::MASK == 0 {
            mutex::release_slot(slot);
        } else {
            rwlock::release_slot(slot);
        }
    }
    while let Some(slot) = registry::deferred_at(Kind::Arc, depth) {
        registry::set_deferred(Kind::Arc, slot, false);
        arc::release_slot(slot);
    }
}
