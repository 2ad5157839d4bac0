//! The tagged entries of the mutex registry — `RwLock` write and read
//! locks and running `Once`s (`abi::checkpoint::lock_tag`) — validated and
//! turned into releases.
//!
//! Why its own module: these entries mean something different from a
//! mutex entry, and one of them counts. Like a mutex entry, each means
//! "may be held" (libtask lists it before the atomic operation that takes
//! the object and unlists it after the one that lets go), and the object
//! itself names its holders, so the execution decides:
//!
//! * **write** and **once** entries: the `RwLock`'s writer word / the
//!   `Once`'s state word names its owner. Listed twice (a write lock whose
//!   deferred release is taken back), they are one listing of the
//!   outermost scope, as mutexes: released only if that scope is rolled
//!   back ([`Action::PoisonAndUnlockRwLock`], [`Action::ResetOnce`]);
//! * **read** entries: one per read lock held (or about to be, or just
//!   given back); each read held occupies one reader slot of the `RwLock`
//!   that holds the task's id. The entries of the scopes that survive the
//!   rollback are all held (their operations completed before an inner
//!   scope opened; a release inside an inner scope is deferred), so the
//!   reads to give back are *the task's slots minus the surviving
//!   entries* — counted at execution, from the slots
//!   ([`Action::ReleaseRwLockReads`] carries the surviving count as
//!   `keep`). A rolled-back entry whose read was never taken, or already
//!   given back, then releases nothing, and no surviving read is touched.
//!
//! Every address passes the checks of a mutex address (inside a region,
//! past its header, in its statics area, the whole object's header
//! included), or is left out as naming no object (`plan`'s "Salvage"); an
//! unknown tag, an object in a region without a layout, a scope deeper
//! than the page, or one address under two kinds is [`Invalid`].

use super::{Action, Invalid, Live, Origin, Plan, Release, Salvage, region_of};
use crate::layout::{RegionLayout, once, rwlock};
use abi::checkpoint::RegionInfo;
use abi::checkpoint::{MAX_MUTEXES, MutexEntry, lock_tag};

/// A tagged entry's object, after its checks.
#[derive(Clone, Copy)]
pub(super) struct Tagged {
    live: Live,
    tag: u64,
    /// Read entries of this object, in scopes that survive / are rolled
    /// back, and the deepest scope among the latter.
    keep: u64,
    rolled: u64,
    rolled_scope: u64,
}

/// Bytes of a tagged object the statics area must hold.
fn size_of(tag: u64) -> u64 {
    if tag == lock_tag::ONCE { once::DATA } else { rwlock::DATA }
}

/// The tagged objects of a registry, validated (before anything is
/// planned, so that a refused page plans nothing). Filled in place: it is
/// ~2 KiB, and the recovery path moves nothing it need not.
pub(super) type Objects = heapless::Vec<Tagged, MAX_MUTEXES>;

/// Validates the tagged entries of `entries` (the live part of the mutex
/// registry) for a rollback to `depth` into `objects`. `untagged` are the
/// plain mutex entries (an address may not be both). An entry that names
/// no object is left out and noted in `plan`.
#[allow(clippy::too_many_arguments)]
pub(super) fn validate(
    entries: &[MutexEntry],
    page_depth: u64,
    depth: u64,
    regions: &[RegionInfo],
    layouts: &[RegionLayout],
    untagged: &[Live],
    objects: &mut Objects,
    plan: &mut Plan,
) -> Result<(), Invalid> {
    objects.clear();
    for (slot, e) in entries.iter().enumerate() {
        let (addr, tag) = lock_tag::split(e.addr);
        if e.addr == 0 || tag == lock_tag::MUTEX {
            continue;
        }
        if !matches!(tag, lock_tag::RWLOCK_WRITE | lock_tag::RWLOCK_READ | lock_tag::ONCE) {
            return Err(Invalid::BadLockTag { addr: e.addr });
        }
        let placed = region_of(addr, regions).and_then(|base| {
            let l = layouts.iter().find(|l| l.base == base).ok_or(Invalid::NoLayout { addr })?;
            if l.is_static_object(addr, size_of(tag)) { Ok(base) } else { Err(Invalid::NotAMutex { addr }) }
        });
        let base = match placed {
            Ok(base) => base,
            // Names no such object: left out, noted (the module note of
            // `plan`, "Salvage").
            Err(why) if why.names_no_object() => {
                plan.note(Salvage::Entry { origin: Origin::Mutex(slot), addr: e.addr, scope: e.scope, why });
                continue;
            }
            Err(why) => return Err(why),
        };
        if e.scope > page_depth {
            return Err(Invalid::BadScope { addr, scope: e.scope, depth: page_depth });
        }
        if untagged.iter().any(|m| m.addr == addr) {
            return Err(Invalid::Duplicate { addr });
        }
        // One address is one object: a `Once` is not an `RwLock`.
        let is_once = tag == lock_tag::ONCE;
        if objects.iter().any(|o| o.live.addr == addr && (o.tag == lock_tag::ONCE) != is_once) {
            return Err(Invalid::Duplicate { addr });
        }
        let reads = |o: &mut Tagged| {
            if e.scope >= depth {
                o.rolled += 1;
                o.rolled_scope = o.rolled_scope.max(e.scope);
            } else {
                o.keep += 1;
            }
        };
        if let Some(o) = objects.iter_mut().find(|o| o.live.addr == addr && o.tag == tag) {
            if tag == lock_tag::RWLOCK_READ {
                reads(o);
                o.live.slot = slot;
            } else {
                o.live.scope = o.live.scope.min(e.scope);
            }
            continue;
        }
        let mut o =
            Tagged { live: Live { slot, addr, scope: e.scope, base }, tag, keep: 0, rolled: 0, rolled_scope: 0 };
        if tag == lock_tag::RWLOCK_READ {
            reads(&mut o);
        }
        // At most one object per registry slot: cannot overflow.
        let _ = objects.push(o);
    }
    Ok(())
}

/// Adds the releases the validated tagged objects owe a rollback to
/// `depth` to `out`, in reverse registry order.
pub(super) fn emit(objects: &Objects, depth: u64, out: &mut Plan) {
    for o in objects.iter().rev() {
        let Live { slot, addr, scope, .. } = o.live;
        let action = match o.tag {
            lock_tag::RWLOCK_READ if o.rolled > 0 => Action::ReleaseRwLockReads { addr, keep: o.keep },
            lock_tag::RWLOCK_WRITE if scope >= depth => Action::PoisonAndUnlockRwLock { addr },
            lock_tag::ONCE if scope >= depth => Action::ResetOnce { addr },
            _ => continue,
        };
        let scope = if o.tag == lock_tag::RWLOCK_READ { o.rolled_scope } else { scope };
        out.push(Release { action, origin: Origin::Mutex(slot), scope });
    }
}
