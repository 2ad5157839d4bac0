//! Shared objects that survive the faults of their holders: [`Mutex`] and
//! [`Arc`] in shared memory [`Region`]s, with the registries that let the
//! fault server release them for a task that faulted.
//!
//! | module | what | why it is its own module |
//! |---|---|---|
//! | [`region`] | a shared region: header, race-free initialization, statics area, Arc slots | the one allocator the fault server can check addresses against |
//! | [`mutex`] | `Mutex<T>`: futex lock, std-style poisoning | the release the fault server does with a `CAS64` |
//! | [`arc`] | `Arc<T>`: a counted slot, freed at zero | the count change the fault server decides from the pc |
//! | [`refcount`] | the two asm blocks that change an Arc count | their symbols are the exactness argument |
//! | [`registry`] | the recovery page and its private bookkeeping | written only in orders that are exact at every instruction |
//! | [`futex`] | `FUTEX_WAIT` / `FUTEX_WAKE` | the kernel-assisted sleep of the slow paths |
//!
//! The design, the intent protocol and the argument that every fault
//! window is exact are in `docs/recovery.md`; the word layouts are shared
//! with the fault server through `recovery::layout`.
//!
//! ## What may live in shared memory: `FromBytes`
//!
//! Other tasks can write anything into a shared region, at any time — the
//! rule is to treat it as hostile. So a region's statics struct, the data
//! of a `Mutex<T>` and the payload of an `Arc<T>` must be valid for
//! *every* bit pattern: [`zerocopy::FromBytes`], derived
//! (`#[derive(FromBytes)]` on a `#[repr(C)]` struct checks every field at
//! compile time; integers, arrays, atomics, `Mutex<T>` of such a `T` are
//! `FromBytes`; `bool`, `char`, enums, references are not). No hand-written
//! `unsafe impl` is needed. An Arc payload must also have no drop glue
//! (the fault server, not the task, may give back its last reference, and
//! it runs no code of the task): `Region` checks `needs_drop` at compile
//! time. Pointers into a task's private memory mean nothing to the others
//! (a `u64` can still hold one: that is the user's business).
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
pub mod futex;
pub mod mutex;
pub mod refcount;
pub mod region;
pub mod registry;
mod views;

pub use arc::{Arc, SharedArc};
pub use mutex::{LockResult, Mutex, MutexGuard, PoisonError, TryLockError, TryLockResult};
pub use region::{NoArcs, Region, Stats};
/// The derive a region's statics struct and shared data use (the task
/// crate depends on `zerocopy` with its `derive` feature).
pub use zerocopy::{FromBytes, FromZeros};

use registry::Kind;

/// Why a shared-object operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncError {
    /// `CAP_LOOKUP` or `REGION` failed (no such region capability).
    Region(abi::syscall::Error),
    /// The statics and slots asked for do not fit in the region.
    TooSmall,
    /// The region's header is not one this library wrote (or the region
    /// is not in the shared window).
    BadHeader,
    /// The region was initialized with another geometry (statics size,
    /// slot size or count).
    LayoutMismatch,
    /// The region was opened (by this task, or initialized by another) as
    /// other types: one typed view per region.
    TypeMismatch,
    /// The region's initializer did not finish in time.
    InitTimeout,
    /// No free Arc slot.
    Full,
    /// This task's registry is full.
    RegistryFull,
    /// Not the address of an Arc slot of this region.
    NotASlot,
    /// The slot was freed, or reallocated (another generation).
    Stale,
}

impl core::fmt::Display for SyncError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SyncError::Region(e) => write!(f, "no such region: {e}"),
            SyncError::TooSmall => f.write_str("the statics and Arc slots do not fit in the region"),
            SyncError::BadHeader => f.write_str("the region's header was not written by libtask"),
            SyncError::LayoutMismatch => f.write_str("the region was initialized with another layout"),
            SyncError::TypeMismatch => f.write_str("the region was opened as other types"),
            SyncError::InitTimeout => f.write_str("the region's initializer did not finish in time"),
            SyncError::Full => f.write_str("no free Arc slot in the region"),
            SyncError::RegistryFull => f.write_str("this task's registry of held objects is full"),
            SyncError::NotASlot => f.write_str("not an Arc slot of this region"),
            SyncError::Stale => f.write_str("the Arc was freed or reallocated"),
        }
    }
}

impl core::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            SyncError::Region(e) => Some(e),
            _ => None,
        }
    }
}

/// Called by a commit that made scope `depth` the innermost: performs the
/// releases its inner scopes deferred, most recent first.
pub(crate) fn release_deferred(depth: u64) {
    while let Some(slot) = registry::deferred_at(Kind::Mutex, depth) {
        registry::set_deferred(Kind::Mutex, slot, false);
        mutex::release_slot(slot);
    }
    while let Some(slot) = registry::deferred_at(Kind::Arc, depth) {
        registry::set_deferred(Kind::Arc, slot, false);
        arc::release_slot(slot);
    }
}
