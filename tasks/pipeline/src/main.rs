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
//! published and takes it again. The region's statistics then show
//! `allocs == frees`, `double_frees == 0`, and no slot still counted.
//!
//! Roles, by manifest `arg`:
//!
//! | arg | role | checks |
//! |---|---|---|
//! | 1 | producer of [`BUFFERS`] buffers; at the end, the auditor | `pipeline:produced`, `pipeline:freed-once` (value = frees) |
//! | 2 | consumer of the even buffers | `pipeline:consumed` (value = its share), `pipeline:checksums` |
//! | 3 | consumer of the odd buffers | as 2 |
//! | 103 | consumer of the odd buffers that faults (`ud2`) once per boot, holding a buffer and the queue lock | as 2, plus `pipeline:retried` when its scope is re-run |
//!
//! Every role needs the capability `pipe:map` (region `pipe`, 8 KiB).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use libtask::checkpoint::checkpoint;
use libtask::sync::{Arc, FromBytes, Mutex, MutexGuard, Region, SharedArc, SyncError};
use libtask::{Start, println, report, syscall};

libtask::entry!(main);

/// Buffers the producer makes.
pub const BUFFERS: u32 = 200;
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
    consumed: AtomicU32,
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
        1 => producer(&region),
        2 => consumer(&region, 0, false),
        3 => consumer(&region, 1, false),
        103 => consumer(&region, 1, true),
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

fn producer(region: &Pipe) {
    let queue = &region.statics().queue;
    let consumed = &region.statics().consumed;
    let mut held: [Option<Arc<Buf>>; MAILBOXES] = [const { None }; MAILBOXES];
    let mut next = 0u32;
    let mut failures = 0u32;
    while next < BUFFERS || held.iter().any(Option::is_some) {
        let mut progress = false;
        {
            let mut q = lock_queue(queue);
            for (i, b) in q.boxes.iter_mut().enumerate() {
                if b.state == TAKEN {
                    held[i] = None; // the consumer has its own reference now
                    b.state = EMPTY;
                    progress = true;
                } else if b.state == EMPTY && held[i].is_none() && next < BUFFERS {
                    match Arc::new_in(region, make(next as u64)) {
                        Ok(a) => {
                            *b = Mailbox { token: Arc::share(&a), state: PUBLISHED, seq: next as u64 };
                            held[i] = Some(a);
                            next += 1;
                            progress = true;
                        }
                        Err(SyncError::Full) => {} // consumers are behind
                        Err(e) => {
                            failures += 1;
                            println!("pipeline producer: allocation failed: {e:?}");
                        }
                    }
                }
            }
        }
        if !progress {
            let _ = syscall::sleep(1);
        }
    }
    report("pipeline:produced", failures == 0, next as u64);
    // The audit: once every buffer is consumed, every slot must be free.
    let deadline = syscall::ticks() + 30_000;
    while consumed.load(Ordering::Acquire) < BUFFERS && syscall::ticks() < deadline {
        let _ = syscall::sleep(5);
    }
    let s = region.stats();
    let live = region.live_slots();
    let n = consumed.load(Ordering::Acquire);
    println!(
        "pipeline: consumed {n}/{BUFFERS}; allocs {} frees {} double frees {} live slots {live}",
        s.allocs, s.frees, s.double_frees
    );
    report(
        "pipeline:freed-once",
        n == BUFFERS && s.allocs == BUFFERS && s.frees == s.allocs && s.double_frees == 0 && live == 0,
        s.frees as u64,
    );
}

/// Consumes the buffers whose sequence number has `parity` (so that both
/// consumers get their share, whichever runs first).
fn consumer(region: &Pipe, parity: u64, faulty: bool) {
    let queue = &region.statics().queue;
    let consumed = &region.statics().consumed;
    let injected = &region.statics().injected;
    let (mut mine, mut bad) = (0u32, 0u32);
    while consumed.load(Ordering::Acquire) < BUFFERS {
        let got = checkpoint(|attempt| {
            if let Some(f) = attempt.last_fault {
                println!("pipeline consumer: re-run after fault {} at {:#x}", f.seq, f.pc);
                report("pipeline:retried", true, f.seq);
            }
            let mut q = lock_queue(queue);
            let i = q.boxes.iter().position(|b| b.state == PUBLISHED && b.seq % 2 == parity)?;
            let b = q.boxes[i];
            let arc = match Arc::from_token(region, b.token) {
                Ok(a) => a,
                Err(e) => {
                    println!("pipeline consumer: mailbox {i}: {e:?}");
                    report("pipeline:acquire", false, b.seq);
                    return None;
                }
            };
            if faulty && mine == FAULT_AT && injected.swap(1, Ordering::Relaxed) == 0 {
                println!("pipeline consumer: faulting with buffer {} and the queue lock held", b.seq);
                // SAFETY: ud2 raises #UD: the fault the demo is about.
                unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
            }
            q.boxes[i].state = TAKEN;
            Some((arc, b.seq))
        });
        let Ok(Some((arc, seq))) = got else {
            let _ = syscall::sleep(1);
            continue;
        };
        if seq % 10 == 0 {
            // The last handle of a reference the outer scope registered,
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
        // Counted after the drop: when the count is full, no consumer
        // holds a buffer any more (the producer's audit relies on it).
        consumed.fetch_add(1, Ordering::Release);
    }
    report("pipeline:consumed", true, mine as u64);
    report("pipeline:checksums", bad == 0, bad as u64);
}
