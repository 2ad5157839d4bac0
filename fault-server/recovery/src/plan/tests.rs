//! Plans for honest pages, and errors — never releases — for hostile ones.

extern crate std;

use super::*;
use abi::checkpoint::{ArcBlocks, ArcEntry, Intent, MutexEntry, RECOVERY_PAGE_SIZE};
use std::vec::Vec;

const BASE: u64 = 0x2000_0000_0000;
const SIZE: u64 = 0x1_0000;
const REGIONS: [RegionInfo; 2] =
    [RegionInfo { base: BASE, size: SIZE }, RegionInfo { base: BASE + (1 << 30), size: 0x4000 }];
/// The two regions' layouts: statics up to +0x1000, then 64-byte slots.
const LAYOUTS: [RegionLayout; 2] = [
    RegionLayout { base: BASE, size: SIZE, statics: 0xfc0, slots_offset: 0x1000, slot_size: 0x40, slot_count: 0x3c0 },
    RegionLayout {
        base: BASE + (1 << 30),
        size: 0x4000,
        statics: 0xfc0,
        slots_offset: 0x1000,
        slot_size: 0x40,
        slot_count: 0xc0,
    },
];
/// Where libtask's Arc asm blocks are, as `page` records them.
const SYMS: ArcBlocks =
    ArcBlocks { inc_start: 0x40_1000, inc_commit: 0x40_1010, dec_start: 0x40_2000, dec_commit: 0x40_2014 };

/// Mutex and Arc addresses inside the first region.
const MA: u64 = BASE + 0x40;
const MB: u64 = BASE + 0x80;
const AC: u64 = BASE + 0x1000;
const AD: u64 = BASE + 0x1040;

/// The page as the little-endian words of the task's memory, written out
/// field by field (independently of `RecoveryPage::as_bytes`, so the
/// test also pins the layout `from_bytes` reads).
fn bytes(p: &RecoveryPage) -> Vec<u8> {
    let mut w: Vec<u64> = std::vec![p.magic, p.depth];
    for s in &p.scopes {
        w.extend([s.attempt, s.fault_kind, s.fault_seq, s.fault_pc]);
    }
    w.extend([p.intent.op, p.intent.addr, p.intent.scope]);
    let b = p.arc_blocks;
    w.extend([b.inc_start, b.inc_commit, b.dec_start, b.dec_commit]);
    w.push(p.mutex_count);
    for m in &p.mutexes {
        w.extend([m.addr, m.scope]);
    }
    w.push(p.arc_count);
    for a in &p.arcs {
        w.extend([a.addr, a.scope]);
    }
    let out: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(out.len(), RECOVERY_PAGE_SIZE);
    assert_eq!(out, p.as_bytes());
    out
}

fn page(depth: u64, mutexes: &[(u64, u64)], arcs: &[(u64, u64)]) -> RecoveryPage {
    let mut p = RecoveryPage::EMPTY;
    p.depth = depth;
    p.arc_blocks = SYMS;
    p.mutex_count = mutexes.len() as u64;
    for (i, &(addr, scope)) in mutexes.iter().enumerate() {
        p.mutexes[i] = MutexEntry { addr, scope };
    }
    p.arc_count = arcs.len() as u64;
    for (i, &(addr, scope)) in arcs.iter().enumerate() {
        p.arcs[i] = ArcEntry { addr, scope };
    }
    p
}

fn at(pc: u64) -> Registers {
    Registers { rip: pc, ..Registers::default() }
}

fn run(p: &RecoveryPage, pc: u64, depth: u64) -> Result<Vec<Release>, Invalid> {
    plan(&bytes(p), &REGIONS, &LAYOUTS, &at(pc), depth).map(|pl| pl.releases().to_vec())
}

fn actions(p: &RecoveryPage, pc: u64, depth: u64) -> Vec<Action> {
    run(p, pc, depth).unwrap().iter().map(|r| r.action).collect()
}

/// The releases and the salvage notes of an accepted page.
fn salvaged(p: &RecoveryPage, pc: u64, depth: u64) -> (Vec<Action>, Vec<Salvage>) {
    let pl = plan(&bytes(p), &REGIONS, &LAYOUTS, &at(pc), depth).expect("a salvageable page is accepted");
    (pl.releases().iter().map(|r| r.action).collect(), pl.salvaged().to_vec())
}

/// The one note of a page with one entry left out: its origin and reason.
fn left_out(p: &RecoveryPage, pc: u64, depth: u64) -> (Vec<Action>, Origin, Invalid) {
    let (actions, notes) = salvaged(p, pc, depth);
    match notes[..] {
        [Salvage::Entry { origin, why, .. }] => (actions, origin, why),
        _ => panic!("expected one entry left out, got {notes:?}"),
    }
}

fn unlock(addr: u64) -> Action {
    Action::PoisonAndUnlockMutex { addr }
}

fn dec(addr: u64) -> Action {
    Action::ArcDecrement { addr, region_base: BASE }
}

#[test]
fn empty_page_owes_nothing() {
    assert_eq!(run(&RecoveryPage::EMPTY, 0, 0), Ok(Vec::new()));
    assert_eq!(run(&page(1, &[], &[]), 0, 1), Ok(Vec::new()));
}

#[test]
fn only_the_rolled_back_scopes_are_released_in_reverse_order() {
    // A at depth 0, B at depth 1; C at depth 2, D at depth 1.
    let p = page(2, &[(MA, 0), (MB, 1)], &[(AC, 2), (AD, 1)]);
    assert_eq!(actions(&p, 0, 2), [dec(AC)]);
    assert_eq!(actions(&p, 0, 1), [unlock(MB), dec(AD), dec(AC)]);
    assert_eq!(actions(&p, 0, 0), [unlock(MB), unlock(MA), dec(AD), dec(AC)]);
    let r = run(&p, 0, 1).unwrap();
    assert_eq!((r[0].origin, r[0].scope), (Origin::Mutex(1), 1));
    assert_eq!((r[1].origin, r[1].scope), (Origin::Arc(1), 1));
}

#[test]
fn a_release_marked_for_the_commit_is_held_by_its_depth_until_then() {
    // B and D were dropped in scope 2 and marked for the kernel to give
    // back at scope 2's renew (`RELEASE_AT_COMMIT`): a rollback of scope 2
    // restores them held (the marking is undone with it), so it must not
    // release them; a rollback of scope 1 (their owner) does.
    let f = abi::checkpoint::RELEASE_AT_COMMIT;
    let p = page(2, &[(MB, 1 | f)], &[(AC, 2), (AD, 1 | f)]);
    assert_eq!(actions(&p, 0, 2), [dec(AC)]);
    assert_eq!(actions(&p, 0, 1), [unlock(MB), dec(AD), dec(AC)]);
    let r = run(&p, 0, 1).unwrap();
    assert_eq!((r[0].origin, r[0].scope), (Origin::Mutex(0), 1));
}

#[test]
fn tombstones_and_stale_slots_are_ignored() {
    let mut p = page(1, &[(0, 0), (MB, 1)], &[]);
    // Beyond the count: garbage that must not be looked at.
    p.mutexes[5] = MutexEntry { addr: 0xdead, scope: 99 };
    assert_eq!(actions(&p, 0, 1), [unlock(MB)]);
}

#[test]
fn the_target_may_be_one_past_the_page_while_a_scope_opens() {
    let p = page(1, &[(MA, 1)], &[]);
    assert_eq!(actions(&p, 0, 2), []);
    assert_eq!(run(&p, 0, 3), Err(Invalid::BadTarget { target: 3, page_depth: 1 }));
}

// ---- the intent slot, window by window ----

fn with_intent(mut p: RecoveryPage, op: u64, addr: u64, scope: u64) -> RecoveryPage {
    p.intent = Intent { op, addr, scope };
    p
}

#[test]
fn lock_intent_is_decided_by_the_owner_word_once() {
    // Before the push: the intent alone.
    let p = with_intent(page(1, &[], &[]), intent::LOCK, MA, 1);
    assert_eq!(actions(&p, 0, 1), [unlock(MA)]);
    assert_eq!(run(&p, 0, 1).unwrap()[0].origin, Origin::Intent);
    // After the push: the entry, not twice.
    let p = with_intent(page(1, &[(MA, 1)], &[]), intent::LOCK, MA, 1);
    assert_eq!(actions(&p, 0, 1), [unlock(MA)]);
    // Unlock after the entry is gone: the intent still owes it.
    let p = with_intent(page(1, &[], &[]), intent::UNLOCK, MA, 1);
    assert_eq!(actions(&p, 0, 1), [unlock(MA)]);
}

#[test]
fn arc_clone_intent_depends_on_the_pc() {
    let p = with_intent(page(1, &[], &[]), intent::ARC_CLONE, AC, 1);
    assert_eq!(actions(&p, SYMS.inc_start, 1), [], "at the block start: xadd not run");
    assert_eq!(actions(&p, SYMS.inc_commit - 1, 1), [], "inside: not run");
    assert_eq!(actions(&p, SYMS.inc_commit, 1), [dec(AC)], "at commit: ran");
    assert_eq!(actions(&p, 0x40_5000, 1), [dec(AC)], "later: ran, not registered");
    let p = with_intent(page(1, &[], &[(AC, 1)]), intent::ARC_CLONE, AC, 1);
    assert_eq!(actions(&p, 0x40_5000, 1), [dec(AC)], "registered: once");
}

#[test]
fn arc_drop_intent_depends_on_the_pc() {
    let p = with_intent(page(1, &[], &[(AC, 1)]), intent::ARC_DROP, AC, 1);
    assert_eq!(actions(&p, SYMS.dec_start + 4, 1), [dec(AC)], "entry still there: once");
    let p = with_intent(page(1, &[], &[]), intent::ARC_DROP, AC, 1);
    assert_eq!(actions(&p, SYMS.dec_start + 8, 1), [dec(AC)], "entry removed, xadd not run");
    assert_eq!(actions(&p, SYMS.dec_commit, 1), [], "xadd ran");
}

// ---- hostile pages: an error, never a release ----

fn refused(p: &RecoveryPage, pc: u64, depth: u64) -> Invalid {
    match run(p, pc, depth) {
        Err(e) => e,
        Ok(r) => panic!("hostile page accepted, releases {r:?}"),
    }
}

#[test]
fn short_page_and_bad_magic() {
    let b = bytes(&RecoveryPage::EMPTY);
    assert_eq!(plan(&b[..100], &REGIONS, &LAYOUTS, &at(0), 0).unwrap_err(), Invalid::Short { len: 100 });
    let mut p = page(0, &[(MA, 0)], &[]);
    p.magic ^= 1;
    assert!(matches!(refused(&p, 0, 0), Invalid::BadMagic { .. }));
}

#[test]
fn huge_counts_and_depths() {
    for count in [MAX_MUTEXES as u64 + 1, u64::MAX, 1 << 40] {
        // With tagged entries (counted reads): refused.
        let mut p = page(0, &[(MA | lock_tag::RWLOCK_READ, 0)], &[]);
        p.mutex_count = count;
        assert_eq!(refused(&p, 0, 0), Invalid::TooManyMutexes { count });
    }
    for count in [MAX_ARCS as u64 + 1, u64::MAX, 1 << 40] {
        let mut p = page(0, &[], &[]);
        p.arc_count = count;
        assert_eq!(refused(&p, 0, 0), Invalid::TooManyArcs { count });
    }
    let mut p = page(0, &[], &[]);
    p.depth = MAX_SCOPES as u64 + 1;
    assert!(matches!(refused(&p, 0, 0), Invalid::BadDepth { .. }));
    p.depth = u64::MAX;
    assert!(matches!(refused(&p, 0, 0), Invalid::BadDepth { .. }));
    assert!(matches!(refused(&page(8, &[], &[]), 0, 9), Invalid::BadTarget { .. }));
}

/// A mutex count past the array (a flipped register in the push): every
/// slot is read, stale ones included, and the count is noted.
#[test]
fn a_corrupt_mutex_count_reads_every_slot() {
    // Live: MA (scope 1); stale beyond the true count of 1: MB of scope 2
    // (a scope since committed or rolled back: deeper than the page), and
    // MA again of scope 1.
    let mut p = page(1, &[(MA, 1)], &[(AC, 1)]);
    p.mutexes[3] = MutexEntry { addr: MB, scope: 2 };
    p.mutexes[7] = MutexEntry { addr: MA, scope: 1 };
    for count in [MAX_MUTEXES as u64 + 1, 1 | 1 << 50, u64::MAX] {
        p.mutex_count = count;
        let (actions, notes) = salvaged(&p, 0, 1);
        // MB's release is decided by its owner word at execution (a stale
        // listing of a mutex the task let go releases nothing); MA once.
        assert_eq!(actions, [unlock(MB), unlock(MA), dec(AC)]);
        assert_eq!(notes, [Salvage::MutexCount { count }]);
    }
    // A stale listing never releases what an outer listing keeps held.
    let mut p = page(2, &[(MA, 1), (MB, 2)], &[]);
    p.mutexes[9] = MutexEntry { addr: MA, scope: 2 };
    p.mutex_count = 1 << 40;
    assert_eq!(salvaged(&p, 0, 2).0, [unlock(MB)]);
    // The Arc count is not salvaged: a stale reference would be given back twice.
    let mut p = page(1, &[(MA, 1)], &[]);
    p.arc_count = MAX_ARCS as u64 + 1;
    assert_eq!(refused(&p, 0, 1), Invalid::TooManyArcs { count: MAX_ARCS as u64 + 1 });
}

#[test]
fn addresses_outside_regions_misaligned_or_in_headers_are_left_out() {
    let bad = [
        (0x40_1000, "the task's image"),
        (BASE - 8, "just below a region"),
        (BASE + SIZE, "one past the end"),
        (BASE + SIZE - 4, "straddling the end (misaligned too)"),
        (BASE + (1 << 30) + 0x4000, "one past the second region"),
        (u64::MAX - 7, "the top of the address space"),
        (0xffff_8000_0000_0000, "the kernel"),
        (MA + 4, "misaligned"),
        (MA + 5, "misaligned (for a mutex entry: no lock kind's tag)"),
        (BASE, "the region header"),
        (BASE + 0x38, "the region header's last word"),
    ];
    for (addr, what) in bad {
        // Next to an honest entry, which is still released.
        let p = page(1, &[(MB, 1), (addr, 1)], &[]);
        if (4..8).contains(&(addr & lock_tag::MASK)) {
            // Low bits that name no lock kind: the bookkeeping is wrong.
            assert!(matches!(refused(&p, 0, 1), Invalid::BadLockTag { .. }), "{what}");
            continue;
        }
        let (actions, origin, why) = left_out(&p, 0, 1);
        assert_eq!(actions, [unlock(MB)], "{what}");
        assert_eq!(origin, Origin::Mutex(1), "{what}");
        assert!(why.names_no_object(), "{what}: {why:?}");
        let p = page(1, &[], &[(AC, 1), (addr, 1)]);
        let (actions, origin, why) = left_out(&p, 0, 1);
        assert_eq!((actions, origin), (std::vec![dec(AC)], Origin::Arc(1)), "{what}");
        assert!(why.names_no_object(), "{what}: {why:?}");
        // Also an entry that the rollback would keep.
        let p = page(1, &[(addr, 0)], &[]);
        assert_eq!(left_out(&p, 0, 1).0, [], "{what}");
    }
}

#[test]
fn regions_that_wrap_do_not_contain_anything() {
    let wrapping = [RegionInfo { base: u64::MAX - 0xfff, size: 0x2000 }];
    let p = page(0, &[(u64::MAX - 0xfff + 0x40, 0)], &[]);
    for (regions, layouts) in [(&wrapping[..], &LAYOUTS[..]), (&[][..], &[][..])] {
        // Nothing is inside: the entry names no shared object.
        let pl = plan(&bytes(&p), regions, layouts, &at(0), 0).unwrap();
        assert!(pl.is_empty());
        assert!(matches!(pl.salvaged(), [Salvage::Entry { why: Invalid::OutsideRegions { .. }, .. }]));
    }
}

#[test]
fn scopes_deeper_than_the_page() {
    let p = page(1, &[(MA, 2)], &[]);
    assert!(matches!(refused(&p, 0, 1), Invalid::BadScope { .. }));
    let p = page(1, &[], &[(AC, u64::MAX)]);
    assert!(matches!(refused(&p, 0, 0), Invalid::BadScope { .. }));
}

#[test]
fn duplicates() {
    // A mutex listed twice (the lock's fast path, for a few instructions):
    // one mutex, of the outermost scope listing it.
    let p = page(1, &[(MA, 0), (MB, 1), (MA, 1)], &[]);
    assert_eq!(actions(&p, 0, 1), [unlock(MB)], "held by scope 0: survives the rollback of scope 1");
    assert_eq!(actions(&p, 0, 0), [unlock(MB), unlock(MA)], "released once");
    let p = page(1, &[(MA, 1), (MA, 1)], &[]);
    assert_eq!(actions(&p, 0, 1), [unlock(MA)]);
    assert_eq!(refused(&page(1, &[], &[(AC, 1), (AC, 1)]), 0, 1), Invalid::Duplicate { addr: AC });
    // One address in both registries: the layout says what it is, and the
    // other listing is left out as naming no object of its kind.
    let p = page(1, &[(MA, 1)], &[(MA, 1)]);
    assert_eq!(left_out(&p, 0, 1), (std::vec![unlock(MA)], Origin::Arc(0), Invalid::NotAnArcSlot { addr: MA }));
    let p = page(1, &[(AC, 1)], &[(AC, 1)]);
    assert_eq!(left_out(&p, 0, 1), (std::vec![dec(AC)], Origin::Mutex(0), Invalid::NotAMutex { addr: AC }));
}

#[test]
fn hostile_intents() {
    let base = page(1, &[(MB, 1)], &[(AD, 1)]);
    // Unknown operation.
    for op in [5, 99, u64::MAX] {
        assert_eq!(refused(&with_intent(base, op, MA, 1), 0, 1), Invalid::BadIntent { op });
    }
    // On a foreign address, for every operation: the operation in flight
    // touched nothing shared; the registries are still released.
    for op in [intent::LOCK, intent::UNLOCK, intent::ARC_CLONE, intent::ARC_DROP] {
        for addr in [0, 0x40_1000, BASE + 8, MA + 2, BASE + SIZE] {
            let (actions, origin, _) = left_out(&with_intent(base, op, addr, 1), 0x40_5000, 1);
            assert_eq!((actions, origin), (std::vec![unlock(MB), dec(AD)], Origin::Intent), "{op} {addr:#x}");
        }
        // Scope beyond the page, or of a scope the rollback keeps (on an
        // object of the operation's kind).
        let obj = if matches!(op, intent::LOCK | intent::UNLOCK) { MA } else { AC };
        assert!(matches!(refused(&with_intent(base, op, obj, 2), 0x40_5000, 1), Invalid::BadScope { .. }));
        assert!(matches!(refused(&with_intent(page(2, &[], &[]), op, obj, 1), 0x40_5000, 2), Invalid::BadScope { .. }));
    }
    // A mutex operation on an Arc's address, and the reverse: the layout
    // leaves them out before the registries are compared.
    assert_eq!(left_out(&with_intent(base, intent::LOCK, AD, 1), 0, 1).2, Invalid::NotAMutex { addr: AD });
    assert_eq!(
        left_out(&with_intent(base, intent::ARC_DROP, MB, 1), SYMS.dec_start, 1).2,
        Invalid::NotAnArcSlot { addr: MB }
    );
    // Entry and intent of different scopes.
    let p = page(2, &[(MA, 1)], &[]);
    assert_eq!(refused(&with_intent(p, intent::UNLOCK, MA, 2), 0, 1), Invalid::IntentConflict { addr: MA });
    // Arc combinations libtask never leaves.
    let p = page(1, &[], &[(AC, 1)]);
    assert_eq!(
        refused(&with_intent(p, intent::ARC_CLONE, AC, 1), SYMS.inc_start + 4, 1),
        Invalid::IntentConflict { addr: AC }
    );
    assert_eq!(
        refused(&with_intent(p, intent::ARC_DROP, AC, 1), SYMS.dec_commit, 1),
        Invalid::IntentConflict { addr: AC }
    );
}

#[test]
fn arc_intent_without_usable_block_bounds() {
    for op in [intent::ARC_CLONE, intent::ARC_DROP] {
        let good = with_intent(page(1, &[], &[]), op, AC, 1);
        let bounds = [
            ArcBlocks::NONE,
            ArcBlocks { inc_start: 0x40_1010, inc_commit: 0x40_1000, dec_start: 0x40_2014, dec_commit: 0x40_2000 },
            ArcBlocks { inc_start: 0x40_1000, inc_commit: 0x40_1000, dec_start: 0x40_2000, dec_commit: 0x40_2000 },
            ArcBlocks { inc_start: 0x40_1000, inc_commit: 0x50_0000, dec_start: 0x40_2000, dec_commit: 0x50_0000 },
            ArcBlocks { inc_start: 0, inc_commit: 0x10, dec_start: 0, dec_commit: 0x10 },
            ArcBlocks { inc_start: u64::MAX - 8, inc_commit: 8, dec_start: 1, dec_commit: u64::MAX },
        ];
        for b in bounds {
            let mut p = good;
            p.arc_blocks = b;
            for pc in [0, 0x40_1000, 0x40_2004, 0x40_5000, u64::MAX - 4] {
                assert_eq!(refused(&p, pc, 1), Invalid::NoSymbols, "{b:?} at {pc:#x}");
            }
        }
        // The longest block accepted: 64 bytes.
        let mut p = good;
        p.arc_blocks = ArcBlocks {
            inc_start: 0x40_1000,
            inc_commit: 0x40_1000 + MAX_ARC_BLOCK,
            dec_start: 0x40_2000,
            dec_commit: 0x40_2000 + MAX_ARC_BLOCK,
        };
        assert!(run(&p, 0x40_5000, 1).is_ok());
    }
    // Pages without Arc intents need no bounds (a task that never used an
    // Arc, or a page from before the bounds were recorded).
    let mut p = with_intent(page(1, &[(MB, 1)], &[(AD, 1)]), intent::LOCK, MA, 1);
    p.arc_blocks = ArcBlocks::NONE;
    assert_eq!(actions(&p, 0, 1), [unlock(MA), unlock(MB), dec(AD)]);
}

/// A stripped task: the decision depends on the page's bounds and the pc
/// only, wherever the blocks are.
#[test]
fn arc_block_bounds_come_from_the_page() {
    let moved = ArcBlocks { inc_start: 0x7_0000, inc_commit: 0x7_0012, dec_start: 0x7_0040, dec_commit: 0x7_0056 };
    let mut p = with_intent(page(1, &[], &[]), intent::ARC_CLONE, AC, 1);
    p.arc_blocks = moved;
    assert_eq!(actions(&p, moved.inc_start + 4, 1), [], "inside the recorded block");
    assert_eq!(actions(&p, SYMS.inc_start + 4, 1), [dec(AC)], "inside the default block: outside this one");
    p.intent.op = intent::ARC_DROP;
    assert_eq!(actions(&p, moved.dec_start, 1), [dec(AC)]);
    assert_eq!(actions(&p, moved.dec_commit, 1), []);
}

/// The registry protocol of `libtask::sync::mutex`, replayed store by
/// store: lock = push `{scope, addr}` (and `count`) → `CAS`; unlock = swap
/// → wake → tombstone (and `count` back). At every store boundary the page
/// lists the mutex exactly while the task may own it, once, so the plan
/// releases it once (decided by the owner word) or not at all.
#[test]
fn mutex_protocol_is_exact_at_every_store() {
    // (page state after k stores, whether the task may own the word)
    let mut states: Vec<(RecoveryPage, bool)> = Vec::new();
    let mut p = page(1, &[(MB, 0)], &[]);
    states.push((p, false)); // before the lock
    p.mutexes[1].scope = 1;
    states.push((p, false)); // scope written: not live yet (addr 0)
    p.mutexes[1].addr = MA;
    states.push((p, false)); // live, count not raised yet: beyond the count, not looked at
    p.mutex_count = 2;
    states.push((p, true)); // listed; CAS not yet run, or run: the word decides
    // ... held; unlock: swap, wake, then the tombstone.
    p.mutexes[1].addr = 0;
    states.push((p, false)); // tombstone, count not lowered
    p.mutex_count = 1;
    states.push((p, false));
    for (k, (p, listed)) in states.iter().enumerate() {
        for target in [0, 1] {
            let released: Vec<_> = actions(p, 0, target).into_iter().filter(|a| a.addr() == MA).collect();
            let want = if *listed { std::vec![unlock(MA)] } else { Vec::new() };
            assert_eq!(released, want, "state {k}, rollback to {target}");
        }
    }
    // The one window where the page does not list a mutex the task owns —
    // entry written beyond the count, CAS not yet run — is before the CAS:
    // libtask raises the count before it. (State 2 above: the word is not
    // the task's yet.)
}

/// Random pages (a fixed-seed xorshift): whatever `plan` accepts releases
/// only registered or intended addresses, each inside a region past its
/// header, each mutex at most once.
#[test]
fn random_pages_never_yield_a_wild_release() {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let candidates =
        [0, MA, MB, AC, AD, MA + 4, BASE, BASE + SIZE, 0x40_1000, u64::MAX, MA | 1, MA | 2, MB | 3, MB | 2, MA | 5];
    let mut accepted = 0;
    for round in 0..20_000 {
        let mut p = page(next() % 4, &[], &[]);
        let pick = |r: u64| candidates[(r % candidates.len() as u64) as usize];
        p.mutex_count = next() % 4;
        p.arc_count = next() % 4;
        for i in 0..4 {
            p.mutexes[i] = MutexEntry { addr: pick(next()), scope: next() % 4 };
            p.arcs[i] = ArcEntry { addr: pick(next()), scope: next() % 4 };
        }
        p.intent = Intent { op: next() % 6, addr: pick(next()), scope: next() % 4 };
        if round % 97 == 0 {
            p.magic = next();
        }
        if round % 7 == 0 {
            let r = next();
            p.arc_blocks =
                ArcBlocks { inc_start: r % 0x50_0000, inc_commit: r % 0x40_1040, dec_start: 0, dec_commit: r };
        }
        let pc = [SYMS.inc_start, SYMS.inc_commit, SYMS.dec_start + 4, SYMS.dec_commit, 0][(next() % 5) as usize];
        let depth = next() % 5;
        let Ok(pl) = plan(&bytes(&p), &REGIONS, &LAYOUTS, &at(pc), depth) else { continue };
        accepted += 1;
        let mut seen_mutex = Vec::new();
        for r in pl.releases() {
            let addr = r.action.addr();
            assert!(addr % 8 == 0 && (BASE + 0x40..BASE + SIZE).contains(&addr), "wild release {r:?} from {p:?}");
            match r.action {
                Action::PoisonAndUnlockMutex { .. } => {
                    assert!(LAYOUTS[0].is_mutex(addr), "mutex release off the statics: {r:?}")
                }
                Action::ArcDecrement { .. } => assert!(LAYOUTS[0].is_slot(addr), "arc release off a slot: {r:?}"),
                Action::PoisonAndUnlockRwLock { .. } | Action::ReleaseRwLockReads { .. } | Action::ResetOnce { .. } => {
                    assert!(LAYOUTS[0].is_static_object(addr, 80), "lock release off the statics: {r:?}")
                }
            }
            let listed = match r.origin {
                Origin::Intent => p.intent.addr == addr,
                Origin::Mutex(i) => p.mutexes[i].addr & !7 == addr && (i as u64) < p.mutex_count,
                Origin::Arc(i) => p.arcs[i].addr == addr && (i as u64) < p.arc_count,
            };
            assert!(listed, "release {r:?} not from the page {p:?}");
            assert!(r.scope >= depth, "release of a surviving scope: {r:?}");
            if matches!(
                r.action,
                Action::PoisonAndUnlockMutex { .. }
                    | Action::PoisonAndUnlockRwLock { .. }
                    | Action::ReleaseRwLockReads { .. }
                    | Action::ResetOnce { .. }
            ) {
                let key = (addr, core::mem::discriminant(&r.action));
                assert!(!seen_mutex.contains(&key), "lock released twice: {pl:?}");
                seen_mutex.push(key);
            }
        }
    }
    assert!(accepted > 100, "the generator should produce valid pages too ({accepted})");
}

// ---- entries checked against the region's layout (type and slot bounds) ----

#[test]
fn a_forged_arc_entry_naming_a_mutex_is_never_decremented() {
    // The attack: an Arc entry on a mutex made the server FETCH_ADD32 its
    // poison word (+4, the "count" of a slot). It is left out, noted.
    let p = page(1, &[], &[(MA, 1)]);
    assert_eq!(left_out(&p, 0, 1), (std::vec![], Origin::Arc(0), Invalid::NotAnArcSlot { addr: MA }));
    let p = page(1, &[], &[(MA, 0)]);
    assert_eq!(left_out(&p, 0, 1).2, Invalid::NotAnArcSlot { addr: MA });
}

#[test]
fn a_forged_arc_entry_inside_a_slot_or_past_the_last_one_is_left_out() {
    for addr in [AC + 8, AC + 0x38, BASE + 0x1000 + 0x40 * 0x3c0 - 8, BASE + 0xff8] {
        let p = page(1, &[], &[(addr, 1)]);
        let (actions, _, why) = left_out(&p, 0, 1);
        assert!(actions.is_empty());
        assert!(matches!(why, Invalid::NotAnArcSlot { .. } | Invalid::OutsideRegions { .. }), "{addr:#x}");
    }
    // A region whose slot area ends before the region does.
    let short = [RegionLayout { slot_count: 2, ..LAYOUTS[0] }, LAYOUTS[1]];
    let p = page(1, &[], &[(BASE + 0x1000 + 0x80, 1)]);
    let pl = plan(&bytes(&p), &REGIONS, &short, &at(0), 1).unwrap();
    assert!(pl.is_empty());
    assert!(matches!(pl.salvaged(), [Salvage::Entry { why: Invalid::NotAnArcSlot { addr: 0x2000_0000_1080 }, .. }]));
    assert_eq!(actions(&p, 0, 1), [dec(BASE + 0x1080)], "a slot under the full layout");
}

#[test]
fn a_forged_mutex_entry_naming_an_arc_slot_is_never_unlocked() {
    // The CAS of a poison-and-unlock would have freed the slot's
    // (generation, count) pair if it equalled the task id.
    let p = page(1, &[(AC, 1)], &[]);
    assert_eq!(left_out(&p, 0, 1), (std::vec![], Origin::Mutex(0), Invalid::NotAMutex { addr: AC }));
    // A mutex in a slot's payload (an `Arc<Mutex<T>>`) is one; the slot's
    // own word pair is not.
    let p = page(1, &[(AD + 0x10, 1)], &[]);
    assert_eq!(actions(&p, 0, 1), [unlock(AD + 0x10)]);
    let p = page(1, &[(AD, 1)], &[]);
    assert_eq!(left_out(&p, 0, 1).2, Invalid::NotAMutex { addr: AD });
    // The statics area's last 8 bytes hold a mutex word pair; past it, not.
    let p = page(1, &[(BASE + 0x40 + 0xfc0 - 8, 1)], &[]);
    assert_eq!(actions(&p, 0, 1), [unlock(BASE + 0xff8)]);
}

#[test]
fn forged_intents_are_checked_against_the_layout_too() {
    let p = with_intent(page(1, &[], &[]), intent::LOCK, AC, 1);
    assert_eq!(left_out(&p, 0, 1), (std::vec![], Origin::Intent, Invalid::NotAMutex { addr: AC }));
    let p = with_intent(page(1, &[], &[]), intent::ARC_DROP, MA, 1);
    assert_eq!(left_out(&p, SYMS.dec_start, 1).2, Invalid::NotAnArcSlot { addr: MA });
    let p = with_intent(page(1, &[], &[]), intent::ARC_CLONE, AC + 4 * 8, 1);
    assert_eq!(left_out(&p, 0, 1).2, Invalid::NotAnArcSlot { addr: AC + 32 });
}

#[test]
fn a_region_without_a_validated_layout_holds_nothing() {
    let second = BASE + (1 << 30);
    let p = page(1, &[(second + 0x40, 1)], &[(second + 0x1000, 1)]);
    assert_eq!(
        actions(&p, 0, 1),
        [unlock(second + 0x40), Action::ArcDecrement { addr: second + 0x1000, region_base: second }]
    );
    let only_first = &LAYOUTS[..1];
    assert_eq!(
        plan(&bytes(&p), &REGIONS, only_first, &at(0), 1).unwrap_err(),
        Invalid::NoLayout { addr: second + 0x40 }
    );
    // A layout of a region the task does not hold vouches for nothing.
    let elsewhere = [RegionLayout { base: 0x3000_0000_0000, ..LAYOUTS[0] }];
    let p = page(1, &[(MA, 1)], &[]);
    let other = [RegionInfo { base: 0x3000_0000_0000, size: SIZE }];
    assert!(plan(&bytes(&p), &other, &LAYOUTS, &at(0), 1).unwrap().is_empty(), "MA is not in the task's regions");
    assert_eq!(plan(&bytes(&p), &REGIONS, &elsewhere, &at(0), 1).unwrap_err(), Invalid::NoLayout { addr: MA });
}

/// Seeded property test with the cargo-fuzz target's body ([`fuzz_plan`]):
/// random region geometries and pages built from entries near the objects
/// (and noise), never a panic, never a release of the wrong kind.
#[test]
fn fuzz_plan_on_seeded_random_inputs() {
    let mut s: u64 = 0x0ddc_0ffe_e123_4567;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut accepted_with_releases = 0;
    for round in 0..20_000 {
        let mut d: Vec<u8> = Vec::new();
        d.push((next() % 4) as u8);
        let pc = [SYMS.inc_start, SYMS.dec_start + 4, SYMS.dec_commit, next()][(next() % 4) as usize];
        d.extend(pc.to_le_bytes());
        let bases = [BASE, BASE + (1 << 30)];
        for base in bases {
            d.extend(base.to_le_bytes());
            d.extend(SIZE.to_le_bytes());
            let statics = [0xfc0u32, 0x40, 0x100, next() as u32][(next() % 4) as usize];
            let slots_offset = [0x1000u32, 0x80, 0x140, next() as u32][(next() % 4) as usize];
            let slot_size = [0x40u32, 0x10, 8, next() as u32][(next() % 4) as usize];
            let slot_count = [0x3c0u32, 4, 0, next() as u32][(next() % 4) as usize];
            for v in [statics, slots_offset, slot_size, slot_count] {
                d.extend(v.to_le_bytes());
            }
        }
        let near =
            |r: u64| bases[(r % 2) as usize] + [0x40, 0x80, 0x1000, 0x1040, 0x88, 0x148, 0x10, 0][(r / 2 % 8) as usize];
        let mut p = page(next() % 4, &[], &[]);
        p.mutex_count = next() % 4;
        p.arc_count = next() % 4;
        for i in 0..4 {
            p.mutexes[i] = MutexEntry { addr: near(next()), scope: next() % 4 };
            p.arcs[i] = ArcEntry { addr: near(next()), scope: next() % 4 };
        }
        p.intent = Intent { op: next() % 6, addr: near(next()), scope: next() % 4 };
        let mut b = bytes(&p);
        if round % 3 == 0 {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        d.extend(&b);
        fuzz_plan(&d);
        if round % 2 == 0 {
            d.truncate((next() as usize) % d.len());
            fuzz_plan(&d);
        }
        if let Ok(pl) = plan(&b, &REGIONS, &LAYOUTS, &at(pc), 1)
            && !pl.is_empty()
        {
            accepted_with_releases += 1;
        }
    }
    assert!(accepted_with_releases > 100, "the generator also makes valid pages ({accepted_with_releases})");
}

// ---- tagged entries: RwLock write / read locks, Once (plan/locks.rs) ----

const W: u64 = abi::checkpoint::lock_tag::RWLOCK_WRITE;
const R: u64 = abi::checkpoint::lock_tag::RWLOCK_READ;
const O: u64 = abi::checkpoint::lock_tag::ONCE;

#[test]
fn write_and_once_entries_are_released_by_scope_once() {
    let p = page(2, &[(MA | W, 1), (MB | O, 2), (MA | W, 2)], &[]);
    // Rollback to 2: the write lock is listed by scope 1 too (a deferred
    // release taken back), so it survives; the Once of scope 2 is reset.
    assert_eq!(actions(&p, 0, 2), [Action::ResetOnce { addr: MB }]);
    assert_eq!(actions(&p, 0, 1), [Action::ResetOnce { addr: MB }, Action::PoisonAndUnlockRwLock { addr: MA }]);
    let r = run(&p, 0, 1).unwrap();
    assert_eq!((r[1].origin, r[1].scope), (Origin::Mutex(0), 1), "one listing, the outermost");
}

#[test]
fn read_entries_give_back_all_but_the_surviving_reads() {
    // Two reads of scope 1, one of scope 2, one of scope 3.
    let p = page(3, &[(MA | R, 1), (MA | R, 1), (MA | R, 2), (MB, 2), (MA | R, 3)], &[]);
    assert_eq!(actions(&p, 0, 3), [Action::ReleaseRwLockReads { addr: MA, keep: 3 }]);
    assert_eq!(actions(&p, 0, 2), [unlock(MB), Action::ReleaseRwLockReads { addr: MA, keep: 2 }]);
    assert_eq!(actions(&p, 0, 0), [unlock(MB), Action::ReleaseRwLockReads { addr: MA, keep: 0 }]);
    let r = run(&p, 0, 2).unwrap();
    assert_eq!(r[1].scope, 3, "the deepest rolled-back read");
    // Only surviving reads: nothing to give back.
    let p = page(2, &[(MA | R, 1)], &[]);
    assert_eq!(actions(&p, 0, 2), []);
}

#[test]
fn hostile_tagged_entries_are_refused() {
    for tag in 4..8 {
        assert_eq!(refused(&page(1, &[(MA | tag, 1)], &[]), 0, 1), Invalid::BadLockTag { addr: MA | tag });
    }
    // An RwLock needs its 80-byte header inside the statics area (which
    // ends at +0x1000); a Once needs 8 bytes.
    // Where no such object fits, a tagged entry is left out (noted).
    let near_end = BASE + 0x1000 - 0x40;
    assert!(matches!(
        left_out(&page(1, &[(near_end | W, 1)], &[]), 0, 1),
        (_, Origin::Mutex(0), Invalid::NotAMutex { .. })
    ));
    assert_eq!(actions(&page(1, &[(near_end | O, 1)], &[]), 0, 1), [Action::ResetOnce { addr: near_end }]);
    assert!(matches!(left_out(&page(1, &[(AC | R, 1)], &[]), 0, 1).2, Invalid::NotAMutex { .. }), "an Arc slot");
    assert!(matches!(left_out(&page(1, &[(BASE | W, 1)], &[]), 0, 1).2, Invalid::InRegionHeader { .. }));
    assert!(matches!(refused(&page(1, &[(MA | R, 2)], &[]), 0, 1), Invalid::BadScope { .. }));
    // One address, two kinds of object.
    assert_eq!(refused(&page(1, &[(MA, 1), (MA | W, 1)], &[]), 0, 1), Invalid::Duplicate { addr: MA });
    assert_eq!(refused(&page(1, &[(MA | O, 1), (MA | R, 1)], &[]), 0, 1), Invalid::Duplicate { addr: MA });
    // ... but a write and a read entry of one RwLock are its two sides.
    assert_eq!(
        actions(&page(1, &[(MA | W, 1), (MA | R, 1)], &[]), 0, 1),
        [Action::ReleaseRwLockReads { addr: MA, keep: 0 }, Action::PoisonAndUnlockRwLock { addr: MA }]
    );
    // A refused tagged entry refuses the whole page: nothing planned.
    let mut out = Plan::default();
    let p = page(1, &[(MB, 1), (MA | 6, 1)], &[]);
    assert!(plan_into(&bytes(&p), &REGIONS, &LAYOUTS, &at(0), 1, &mut out).is_err());
    assert!(out.is_empty());
}

/// `libtask::sync::rwlock`'s read protocol, replayed store by store, for a
/// task (id 7) that holds one read of scope 1 and takes (then gives back)
/// a second one in scope 2, next to another task's read (id 9): lock =
/// push the entry → `CAS` a reader slot; unlock = clear the slot → bump
/// the drain word → remove the entry. A fault at every boundary, rolled
/// back to scope 2, planned and executed, leaves exactly the scope-1 read
/// of task 7 and task 9's read: never a double release, never a leak.
#[test]
fn rwlock_read_protocol_is_exact_at_every_store() {
    use crate::layout::rwlock;
    let slot = |i: u64| MA + rwlock::READER_SLOTS + 4 * i;
    // (entries, slots held by task 7 besides its scope-1 read at slot 0)
    let base = [(MA | R, 1), (MB, 1)];
    let with = |extra: Option<(u64, u64)>| {
        let mut e = base.to_vec();
        e.extend(extra);
        page(2, &e, &[])
    };
    let states = [
        (with(None), false),              // before the read lock
        (with(Some((MA | R, 2))), false), // listed, CAS not yet run
        (with(Some((MA | R, 2))), true),  // slot taken: held
        (with(Some((MA | R, 2))), false), // unlock: slot cleared (drain not yet bumped)
        (with(None), false),              // entry removed
    ];
    for (k, (p, taken)) in states.iter().enumerate() {
        let mut shm = crate::fake::Mem::new(0x100);
        shm.set32(slot(0), 7);
        shm.set32(slot(1), 9);
        if *taken {
            shm.set32(slot(5), 7);
        }
        for r in run(p, 0, 2).unwrap() {
            crate::execute(&r.action, 7, &mut shm).unwrap();
        }
        let mine = (0..16).filter(|&i| shm.u32(slot(i)) == 7).count();
        assert_eq!(mine, 1, "state {k}: the scope-1 read must survive, alone");
        assert_eq!(shm.u32(slot(1)), 9, "state {k}: another task's read");
    }
}
