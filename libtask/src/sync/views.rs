//! One typed view per region per task: the first `Region::open` of a
//! region fixes the types its bytes are seen as in this task.
//!
//! `Region<S, T>::statics` hands out `&'static S`; if the same task could
//! open the same region again as `Region<U, T>`, safe code would hold an
//! `&S` and an `&U` over the same bytes — two views the compiler assumes
//! unrelated. So each task records, per region (indexed by its slot in the
//! shared window, `abi::layout::SHARED_BASE + i * SHARED_STRIDE`), the
//! fingerprints of the `(S, T)` it first opened it with, and refuses any
//! other pair. The record is private memory, rolled back with the task:
//! a rollback that undoes an `open` also undoes every reference it gave.

use super::SyncError;
use abi::layout::{SHARED_BASE, SHARED_STRIDE};
use core::sync::atomic::{AtomicU64, Ordering};

/// Regions an image may declare (`abi::image::MAX_OBJECTS`).
const MAX_REGIONS: usize = abi::image::MAX_OBJECTS;

/// Per region: 0 = not opened, else `statics fingerprint << 32 | slot
/// fingerprint` (both odd, so never 0). Atomics only to stay out of
/// `unsafe`: a task is one thread.
static VIEWS: [AtomicU64; MAX_REGIONS] = [const { AtomicU64::new(0) }; MAX_REGIONS];

/// The fingerprint of `X`: its name, size and alignment
/// (`recovery::layout::type_fingerprint`).
pub(crate) fn fingerprint<X>() -> u32 {
    recovery::layout::type_fingerprint(
        core::any::type_name::<X>(),
        core::mem::size_of::<X>() as u64,
        core::mem::align_of::<X>() as u64,
    )
}

fn index(base: u64) -> Result<usize, SyncError> {
    let index = base.checked_sub(SHARED_BASE).map(|o| o / SHARED_STRIDE).filter(|&i| i < MAX_REGIONS as u64);
    index.map(|i| i as usize).ok_or(SyncError::BadHeader)
}

/// Claims the region at `base` for the types `types` in this task: `Ok`
/// the first time (`true`: newly claimed) and for the same types again
/// (`false`), `TypeMismatch` for others.
pub(crate) fn claim(base: u64, types: [u32; 2]) -> Result<bool, SyncError> {
    let want = (types[0] as u64) << 32 | types[1] as u64;
    match VIEWS[index(base)?].compare_exchange(0, want, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => Ok(true),
        Err(had) if had == want => Ok(false),
        Err(_) => Err(SyncError::TypeMismatch),
    }
}

/// Gives back a new claim whose `open` failed before any reference to the
/// region escaped (its `init` did not run).
pub(crate) fn unclaim(base: u64) {
    if let Ok(i) = index(base) {
        VIEWS[i].store(0, Ordering::Relaxed);
    }
}
