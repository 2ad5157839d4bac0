//! `pipeline`: a producer passes shared `Arc` buffers to consumers through
//! mailboxes in a shared region; the invariant is that every buffer is
//! freed exactly once — no leak, no double free — even when a consumer
//! faults holding one.
//!
//! Hand-over without a window: the producer publishes a buffer's address
//! and generation (a [`SharedArc`] token) in a mailbox *and keeps its own
//! reference*; a consumer
//! takes its own reference ([`Arc::from_token`]) and marks the mailbox taken;
//! only then does the producer drop its reference. At no instant is a
//! buffer referenced by nobody while someone still needs it, and every
//! reference is in some task's registry. So if a consumer faults after
//! acquiring (the injection point of the faulty consumer: also holding the
//! queue lock), the fault server gives its reference back and unlocks the
//! queue, poisoned; the rolled-back consumer finds the mailbox still
//! published and takes it again. The region then shows
//! no slot still counted (every reference given back), `double_frees == 0`,
//! every buffer consumed once.
//!
//! Roles, by manifest `arg`:
//!
//! | arg | role | checks |
//! |---|---|---|
//! | 1 | producer of [`BUFFERS`] buffers; at the end, the auditor | `pipeline:produced`, `pipeline:freed-once` (value = buffers consumed) |
//! | 2 | consumer of the even buffers | `pipeline:consumed` (value = its share), `pipeline:checksums` |
//! | 3 | consumer of the odd buffers | as 2 |
//! | 103 | consumer of the odd buffers that faults (`ud2`) once per boot, holding a buffer and the queue lock | as 2, plus `pipeline:retried` when its scope is re-run |
//!
//! Every role needs the capability `pipe:map` (region `pipe`, 8 KiB).
#![no_std]
#![no_main]

use core::ops::ControlFlow;
use core::sync::atomic::{AtomicU32, Ordering};
use libtask::checkpoint::{self, checkpoint};
use libtask::sync::{Arc, FromBytes, Mutex, MutexGuard, Region, SharedArc, SyncError};
use libtask::{Start, println, report, syscall};

libtask::entry!(main);

/// Buffers the producer makes.
pub const BUFFERS: u32 = 200;
/// Buffers of the long-running roles (the mixed `faults/campaign-10k.toml`).
pub const LONG_BUFFERS: u32 = 900;
const MAILBOXES: usize = 8;
/// The faulty consumer faults while taking this buffer (its own count).
const FAULT_AT: u32 = 11;

const EMPTY: u64 = 0;
const PUBLISHED: u64 = 1;
const TAKEN: u64 = 2;

#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Buf {
    seq: u64,
    data: [u64; 14],
    sum: u64,
}

#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Mailbox {
    token: SharedArc<Buf>,
    state: u64,
    seq: u64,
}

#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Queue {
    boxes: [Mailbox; MAILBOXES],
}

/// The region's statics.
#[derive(FromBytes)]
#[repr(C)]
struct Shared {
    queue: Mutex<Queue>,
    /// Buffers consumed, by the even and the odd consumer (each consumer's
    /// own count, stored: where a restarted consumer resumes from).
    consumed: [AtomicU32; 2],
    /// Buffers published (the highest published `seq` + 1): where a
    /// restarted producer resumes from.
    published: AtomicU32,
    /// The fault happened (once per boot).
    injected: AtomicU32,
}

/// Region `pipe`: the statics, and Arc slots of `Buf`.
type Pipe = Region<Shared, Buf>;
/// Arc slots of the region.
const SLOTS: u32 = 16;

fn main(start: Start) -> u64 {
    let region = match Pipe::open_arcs("pipe", SLOTS) {
        Ok(r) => r,
        Err(e) => {
            println!("pipeline {}: region: {e}", start.id);
            report("pipeline:region", false, 0);
            return 1;
        }
    };
    match start.arg {
        1 => producer(&region, BUFFERS),
        2 => consumer(&region, 0, BUFFERS, false),
        3 => consumer(&region, 1, BUFFERS, false),
        103 => consumer(&region, 1, BUFFERS, true),
        11 => producer(&region, LONG_BUFFERS),
        12 => consumer(&region, 0, LONG_BUFFERS, false),
        13 => consumer(&region, 1, LONG_BUFFERS, false),
        other => {
            println!("pipeline: unknown role {other}");
            return 2;
        }
    }
    0
}

/// Locks the queue; its states are consistent at every point a holder can
/// fault in (see the module documentation), so poison is only cleared.
fn lock_queue(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => {
            m.clear_poison();
            report("pipeline:queue-poisoned", true, 0);
            p.into_inner()
        }
    }
}

fn make(seq: u64) -> Buf {
    let mut b = Buf { seq, data: [0; 14], sum: 0 };
    for (i, d) in b.data.iter_mut().enumerate() {
        *d = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(i as u32);
    }
    b.sum = b.data.iter().fold(seq, |a, &d| a.wrapping_add(d));
    b
}

fn valid(b: &Buf, seq: u64) -> bool {
    b.seq == seq && b.sum == b.data.iter().fold(seq, |a, &d| a.wrapping_add(d))
}

/// What the producer knows of mailbox `i`, privately (rolled back with a
/// run). A buffer is allocated in one run and published in the next, so
/// that when a run is rolled back, every buffer it published is one an
/// *earlier* run allocated — whose reference the rollback keeps (its
/// registry entry belongs to that earlier, committed run) — and the re-run
/// publishes the same token again: publishing is idempotent, and no
/// mailbox ever holds the token of a buffer the fault server freed.
#[derive(Clone, Copy)]
enum Slot<A> {
    Free,
    /// Allocated in an earlier run, not yet in the mailbox.
    Pending(A, u64),
    /// In the mailbox (as of the run that published it).
    Published(A, u64),
}

fn producer(region: &Pipe, buffers: u32) {
    let queue = &region.statics().queue;
    let mut slots: [Slot<Arc<Buf>>; MAILBOXES] = [const { Slot::Free }; MAILBOXES];
    let mut failures = 0u32;
    let mut next = resume(region, &mut slots);
    let deadline = syscall::ticks() + 30_000;
    // The producer's whole life, production and audit wait, is one chain of
    // scopes (`checkpoint::repeat`): a fault, kill or hang anywhere rolls
    // back one pass over the mailboxes.
    let ran = checkpoint::repeat(|_| {
        let mut progress = false;
        {
            let mut q = lock_queue(queue);
            for (slot, b) in slots.iter_mut().zip(q.boxes.iter_mut()) {
                match core::mem::replace(slot, Slot::Free) {
                    Slot::Published(a, seq) => {
                        if b.seq == seq && b.state == PUBLISHED {
                            *slot = Slot::Published(a, seq);
                        } else {
                            // TAKEN: the consumer has its own reference
                            // now; or EMPTY: a rolled-back run saw that.
                            b.state = EMPTY;
                            drop(a);
                            progress = true;
                        }
                    }
                    Slot::Pending(a, seq) => {
                        // A rolled-back run may have published it already,
                        // and a consumer taken it since (the mailbox says
                        // so, and shared memory is not rolled back):
                        // publishing again would hand it out twice. The
                        // mailbox moves forward only.
                        if b.seq != seq || b.state == EMPTY {
                            *b = Mailbox { token: Arc::share(&a), state: PUBLISHED, seq };
                        }
                        *slot = Slot::Published(a, seq);
                        // Pending buffers are published in `seq` order.
                        region.statics().published.store(seq as u32 + 1, Ordering::Release);
                        progress = true;
                    }
                    Slot::Free if b.state == EMPTY && next < buffers => match Arc::new_in(region, make(next as u64)) {
                        Ok(a) => {
                            // Checked before it can be published, read back
                            // from the shared slot: a fault in `make` (a
                            // skipped or flipped instruction) computes wrong
                            // contents that no rollback would see once a
                            // consumer has them. A panic here rolls the run
                            // back; the fault server gives the slot back.
                            if !valid(&a, next as u64) {
                                panic!("pipeline producer: buffer {next} made wrong");
                            }
                            *slot = Slot::Pending(a, next as u64);
                            next += 1;
                            progress = true;
                        }
                        Err(SyncError::Full) => {} // consumers are behind
                        Err(e) => {
                            failures += 1;
                            println!("pipeline producer: allocation failed: {e:?}");
                        }
                    },
                    Slot::Free => {}
                }
            }
        }
        let producing = next < buffers || slots.iter().any(|s| !matches!(s, Slot::Free));
        if !producing && (consumed(region) >= buffers || syscall::ticks() >= deadline) {
            return ControlFlow::Break(());
        }
        if !progress {
            let _ = syscall::sleep(if producing { 1 } else { 5 });
        }
        ControlFlow::Continue(())
    });
    if let Err(e) = ran {
        report("pipeline:checkpoint", false, e as u64);
    }
    report("pipeline:produced", failures == 0, next as u64);
    // The audit: once every buffer is consumed, every slot must be free.
    let s = region.stats();
    let live = region.live_slots();
    let n = consumed(region);
    println!(
        "pipeline: consumed {n}/{buffers}; allocs {} frees {} double frees {} live slots {live}",
        s.allocs, s.frees, s.double_frees
    );
    // The exact measures: every slot's count back to 0 (`live`), no
    // decrement that found 0 (`double_frees`), every buffer consumed. The
    // region's `allocs`/`frees` statistics are printed, not checked: they
    // are bumped right after the count's atomic step, and a fault between
    // the two — an allocation whose reference the fault server gives back
    // before `allocs` was counted, a release before `frees` was — leaves
    // them one apart while every count is exact (`libtask::sync::arc`).
    // (`allocs` also exceeds the buffers made when an allocation a
    // rolled-back run made was given back and made again.)
    report("pipeline:freed-once", n == buffers && s.double_frees == 0 && live == 0, n as u64);
}

/// Where the producer starts: 0 at boot, or — restarted from its image,
/// its private state and its references gone (the fault server gave them
/// back) — what the queue says. A published buffer a consumer has not
/// taken yet is referenced again from its token, or made again (same
/// `seq`, same contents) if the restart freed it; a taken one's mailbox is
/// emptied; production resumes after the last published buffer. (A
/// buffer allocated but not yet published was freed by the restart and
/// is simply made again.)
fn resume(region: &Pipe, slots: &mut [Slot<Arc<Buf>>; MAILBOXES]) -> u32 {
    let statics = region.statics();
    let next = statics.published.load(Ordering::Acquire);
    if next == 0 {
        return 0;
    }
    let mut q = lock_queue(&statics.queue);
    // A buffer in a mailbox was published, whether or not `published`
    // says so yet (a restart between the two stores).
    let next = q.boxes.iter().filter(|b| b.state != EMPTY).map(|b| b.seq as u32 + 1).fold(next, u32::max);
    for (slot, b) in slots.iter_mut().zip(q.boxes.iter_mut()) {
        match b.state {
            PUBLISHED => match Arc::from_token(region, b.token) {
                Ok(a) => *slot = Slot::Published(a, b.seq),
                Err(_) => match Arc::new_in(region, make(b.seq)) {
                    Ok(a) => {
                        let seq = b.seq;
                        *b = Mailbox { token: Arc::share(&a), state: PUBLISHED, seq };
                        *slot = Slot::Published(a, seq);
                    }
                    Err(e) => println!("pipeline producer: cannot make buffer {} again: {e:?}", b.seq),
                },
            },
            TAKEN => b.state = EMPTY,
            _ => {}
        }
    }
    report("pipeline:resumed", true, next as u64);
    next
}

/// Buffers consumed, all consumers: each publishes its own count (a store,
/// so a re-run after a rollback stores the same value again).
fn consumed(region: &Pipe) -> u32 {
    region.statics().consumed.iter().map(|c| c.load(Ordering::Acquire)).sum()
}

/// Consumes the buffers whose sequence number has `parity` (so that both
/// consumers get their share, whichever runs first).
///
/// One chain of scopes (`checkpoint::repeat`). A run acquires a buffer's
/// reference from its mailbox; the *next* run marks the mailbox taken,
/// checks the buffer, drops it and publishes the count. So a rollback of
/// the acquiring run gives the reference back (the fault server releases
/// it: it belongs to the failed run) with the mailbox still published for
/// the re-run, and a rollback of the consuming run keeps it (it belongs
/// to the committed run before) for the re-run to consume again.
fn consumer(region: &Pipe, parity: u64, buffers: u32, faulty: bool) {
    let queue = &region.statics().queue;
    let count = &region.statics().consumed[parity as usize];
    let injected = &region.statics().injected;
    // 0 at boot; a consumer restarted from its image resumes from its
    // stored count (the buffer it held was given back by the restart, and
    // is still published for it to take again).
    let (mut mine, mut bad) = (count.load(Ordering::Acquire), 0u32);
    let mut held: Option<(Arc<Buf>, usize, u64)> = None;
    let ran = checkpoint::repeat(|attempt| {
        if let Some(f) = attempt.last_fault {
            println!("pipeline consumer: re-run after fault {} at {:#x}", f.seq, f.pc);
            report("pipeline:retried", true, f.seq);
        }
        if let Some((arc, i, seq)) = held.take() {
            {
                let mut q = lock_queue(queue);
                if q.boxes[i].seq == seq && q.boxes[i].state == PUBLISHED {
                    q.boxes[i].state = TAKEN;
                }
            }
            if seq % 10 == 0 {
                // The last handle of a reference an earlier run registered,
                // dropped inside an inner scope: given back at the commit.
                let ok = checkpoint(move |_| {
                    let copy = arc.clone();
                    drop(arc);
                    valid(&copy, seq)
                });
                bad += (ok != Ok(true)) as u32;
            } else {
                bad += !valid(&arc, seq) as u32;
                drop(arc);
            }
            mine += 1;
            // After the drop: when the counts add up, no consumer holds a
            // buffer any more (the producer's audit relies on it).
            count.store(mine, Ordering::Release);
            return ControlFlow::Continue(());
        }
        if consumed(region) >= buffers {
            return ControlFlow::Break(());
        }
        let got = {
            let q = lock_queue(queue);
            match q.boxes.iter().position(|b| b.state == PUBLISHED && b.seq % 2 == parity) {
                None => None,
                Some(i) => {
                    let b = q.boxes[i];
                    match Arc::from_token(region, b.token) {
                        Ok(a) => {
                            // A second look at the parity, from another
                            // source than the search's (which slot of
                            // `consumed` this consumer counts in): a
                            // flipped register that made the search take
                            // the other consumer's buffer is caught here,
                            // inside the run, and rolled back.
                            let mine_parity = core::ptr::eq(count, &region.statics().consumed[1]) as u64;
                            if b.seq % 2 != mine_parity {
                                panic!("pipeline consumer: took buffer {} of the other parity", b.seq);
                            }
                            if faulty && mine == FAULT_AT && injected.swap(1, Ordering::Relaxed) == 0 {
                                println!("pipeline consumer: faulting with buffer {} and the queue lock held", b.seq);
                                // SAFETY: ud2 raises #UD: the fault the demo is about.
                                unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
                            }
                            Some((a, i, b.seq))
                        }
                        // Freed under its token: the producer was
                        // restarted and makes it again (`resume`).
                        Err(SyncError::Stale) => None,
                        Err(e) => {
                            println!("pipeline consumer: mailbox {i}: {e:?}");
                            report("pipeline:acquire", false, b.seq);
                            None
                        }
                    }
                }
            }
        };
        match got {
            Some(h) => held = Some(h),
            None => {
                let _ = syscall::sleep(1);
            }
        }
        ControlFlow::Continue(())
    });
    if let Err(e) = ran {
        report("pipeline:checkpoint", false, e as u64);
    }
    report("pipeline:consumed", true, mine as u64);
    report("pipeline:checksums", bad == 0, bad as u64);
}
