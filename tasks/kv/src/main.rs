//! `kv`: a request-scoped key-value server over IPC and its clients — the
//! workload of transactional IPC (`docs/ipc.md`, "Requests in a scope"):
//! every call is answered exactly once, whatever the server suffers
//! mid-request (a `ud`, a kill — in `recv` too — or a hang the watchdog
//! ends), and the invariants below fail on any lost or doubled update.
//!
//! The server ([`server`]) handles each request with
//! `libtask::ipc::Server::next`: a checkpoint scope around `recv`, the
//! handler and `reply`, the reply delivered at the commit. Its store is
//! the way its author would naturally keep it:
//!
//! * **private memory** (rolled back with the scope): account balances, a
//!   counter and a value handle per client, the next sequence number it
//!   expects from each client, how many requests it answered;
//! * **`Arc`s in the shared region `kv-store`**: each client's value is an
//!   `Arc<Value>` allocated by the `PUT` that wrote it (the old one
//!   dropped); a rollback gives back, through the fault server, the Arcs
//!   the failed run allocated, and keeps the ones it dropped (libtask's
//!   deferred drops);
//! * **a `Mutex<Ledger>` in the region**: how many requests of each client
//!   were applied. Shared memory is *not* rolled back, so the handler makes
//!   its update idempotent — it applies a client's `seq` only if the
//!   ledger's last `seq` for that client is older — and journals it first,
//!   so that a holder faulting mid-update leaves a poisoned mutex the next
//!   locker repairs by rolling the journal forward.
//!
//! Requests: label = operation, words = `[client, seq, a, b]`; replies:
//! label = the request's, words = `[seq, result, 0, 0]`.
//!
//! | label | operation | result |
//! |---|---|---|
//! | [`op::INCR`] | the client's counter += `a` | the new counter |
//! | [`op::TRANSFER`] | move `a` from account `b % 8` to account `(b / 8) % 8` if it has it | 1 moved, 0 not |
//! | [`op::PUT`] | the client's value := `a` (a new `Arc<Value>`) | 0 |
//! | [`op::GET`] | the client's value | the value |
//! | [`op::AUDIT`] | the checks below, then the server exits | 1 all held |
//!
//! Checks (`check` events):
//!
//! | name | by | ok when | value |
//! |---|---|---|---|
//! | `kv:client` | each client | every call answered once, each reply for its own `seq`, every counter and value as expected | calls answered |
//! | `kv:call-error` | a client | never (a call failed; the client stops calling) | the error code |
//! | `kv:generation` | a client whose call failed with `Restarted`/`Stopped` | always | the server's generation the error carried |
//! | `kv:sequence` | server, at the audit | each client's requests arrived exactly in order 1, 2, 3 ... (a lost or doubled request breaks it; a retry of the last one is answered from the cache) | violations |
//! | `kv:answered` | server | requests applied and answered (committed; the audit and retries not counted) = clients × calls each | answered |
//! | `kv:total` | server | the accounts' total is conserved | the total |
//! | `kv:ledger` | server | the shared ledger applied each client's requests exactly once each | applied, all clients |
//! | `kv:arcs` | server | live Arc slots in the region = the values held (none leaked, none lost) | live slots |
//! | `kv:audit` | the last client by number, once every client is done | the audit call was answered with 1 | the result |
//!
//! The server serves with `Server::serve_until`: one scope per request,
//! chained, so it is inside a scope between requests too. Each client
//! makes each call in a scope of its own (`checkpoint::repeat`): a client
//! rolled back after its call went out makes the same call again, and the
//! server answers a retry of the request it applied last with the reply
//! it gave (kept per client in the rolled-back store), applying nothing.
//!
//! Roles (`arg`): 1 server; 2 the checking server (an out-of-order
//! request is first taken for a fault of the server's own and retried, and
//! each request's run checks what it commits before it does, [`self_check`]:
//! the mixed campaign's); `10 + n` client of `n` clients (its client
//! number from its task id order: `arg` 10+n, `count` n); `20 + n` the
//! same client without the pause (`faults/kv-storm.toml`); `30 + n` a
//! checking client of [`LONG_ROUNDS`] calls without the pause (it retries
//! a wrong reply or a malformed call once: the mixed
//! `faults/campaign-10k.toml`). The last client's audit tells the server
//! how many calls each client made. Clients make
//! [`ROUNDS`] calls; after the first half they all sleep until tick
//! [`PAUSE_UNTIL`], so the server sits idle in `recv` inside its scope
//! there (where a test kills it).
#![no_std]
#![no_main]

extern crate alloc;

use core::cell::RefCell;
use core::ops::ControlFlow;
use core::sync::atomic::{AtomicU32, Ordering};
use libtask::ipc::{self, CallError, Message, Request, Server};
use libtask::sync::{Arc, FromBytes, Mutex, MutexGuard, Region};
use libtask::{Start, println, report, syscall};

libtask::entry!(main);

/// Calls per client.
pub const ROUNDS: u64 = 100;
/// Calls per client of the mixed campaign (`faults/campaign-10k.toml`).
pub const LONG_ROUNDS: u64 = 1500;
/// Clients sleep after `ROUNDS / 2` calls until this tick (ms).
pub const PAUSE_UNTIL: u64 = 700;
/// Most clients.
const MAX_CLIENTS: usize = 8;
const ACCOUNTS: usize = 8;
const OPENING: u64 = 1000;
/// Work per request (~4 guest instructions each): a fault or kill in a
/// busy server lands inside a request.
const REQUEST_WORK: u64 = 20_000;

/// Request labels.
pub mod op {
    pub const INCR: u64 = 1;
    pub const TRANSFER: u64 = 2;
    pub const PUT: u64 = 3;
    pub const GET: u64 = 4;
    pub const AUDIT: u64 = 5;
}

/// The ledger's undo-free journal: the update in progress, rolled forward
/// by whoever finds the mutex poisoned (it is idempotent: assignments).
#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Journal {
    active: u64,
    client: u64,
    seq: u64,
    applied: u64,
}

#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Ledger {
    applied: [u64; MAX_CLIENTS],
    last_seq: [u64; MAX_CLIENTS],
    journal: Journal,
}

/// A client's value, in an Arc slot.
#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Value {
    v: u64,
}

/// The region's statics.
#[derive(FromBytes)]
#[repr(C)]
struct Shared {
    ledger: Mutex<Ledger>,
    /// Clients finished.
    done: AtomicU32,
}

/// Region `kv-store`: the statics and [`SLOTS`] Arc slots of [`Value`].
type Kv = Region<Shared, Value>;
const SLOTS: u32 = 16;

fn main(start: Start) -> u64 {
    let region = match Kv::open_arcs("kv-store", SLOTS) {
        Ok(r) => r,
        Err(e) => {
            println!("kv {}: region: {e:?}", start.id);
            report("kv:region", false, 0);
            return 1;
        }
    };
    match start.arg {
        1 => server(&region, false),
        2 => server(&region, true),
        a @ 11..=18 => client(&region, start.id, a - 10, ROUNDS, true, false),
        a @ 21..=28 => client(&region, start.id, a - 20, ROUNDS, false, false),
        a @ 31..=38 => client(&region, start.id, a - 30, LONG_ROUNDS, false, true),
        other => {
            println!("kv: unknown role {other}");
            2
        }
    }
}

/// Busy work the optimiser cannot remove.
#[inline(never)]
fn work(n: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..n {
        x = core::hint::black_box(x.wrapping_add(i));
    }
    x
}

// ---- the server ----

/// The server's private state: rolled back with a request's scope.
struct Store {
    accounts: [u64; ACCOUNTS],
    counters: [u64; MAX_CLIENTS],
    values: [Option<Arc<Value>>; MAX_CLIENTS],
    next_seq: [u64; MAX_CLIENTS],
    /// The reply to each client's last request, for its retry.
    last_reply: [Message; MAX_CLIENTS],
    /// Retries answered from `last_reply` (a client rolled back after its
    /// call went out asks again, with the same `seq`).
    retries: u64,
    violations: u64,
    answered: u64,
    clients: u64,
    /// Calls per client, as the audit said.
    rounds: u64,
    /// Retry an out-of-order request once before counting it (role 2).
    checking: bool,
    audited: bool,
}

fn server(region: &Kv, checking: bool) -> u64 {
    let Ok(ep) = ipc::cap("kv") else {
        report("kv:caps", false, 0);
        return 1;
    };
    let ledger = &region.statics().ledger;
    let store = RefCell::new(Store {
        accounts: [OPENING; ACCOUNTS],
        counters: [0; MAX_CLIENTS],
        values: [const { None }; MAX_CLIENTS],
        next_seq: [1; MAX_CLIENTS],
        last_reply: [Message::default(); MAX_CLIENTS],
        retries: 0,
        violations: 0,
        answered: 0,
        clients: 0,
        rounds: 0,
        checking,
        audited: false,
    });
    let mut handler = |req: &Request| handle(&mut store.borrow_mut(), ledger, region, req);
    // Every request in a scope of its own, chained: the server is inside a
    // scope from its first `recv` to the audit's reply.
    if let Err(e) = Server::new(ep).serve_until(&mut handler, || store.borrow().audited) {
        println!("kv: serving failed: {e:?}");
        report("kv:serve", false, e as u64);
        return 1;
    }
    // Reported after the audit's scope committed: a report is console and
    // event output, which no rollback takes back.
    let s = store.borrow();
    let want = s.clients * s.rounds;
    report("kv:sequence", s.violations == 0, s.violations);
    report("kv:answered", s.answered == want, s.answered);
    let total: u64 = s.accounts.iter().sum();
    report("kv:total", total == ACCOUNTS as u64 * OPENING, total);
    let l = lock_ledger(ledger);
    let applied: u64 = l.applied.iter().sum();
    let each = l.applied[..s.clients as usize].iter().all(|&a| a == s.rounds);
    report("kv:ledger", each && applied == want, applied);
    drop(l);
    let held = s.values.iter().filter(|v| v.is_some()).count() as u32;
    report("kv:arcs", region.live_slots() == held, region.live_slots() as u64);
    0
}

/// One request, inside its scope.
fn handle(s: &mut Store, ledger: &Mutex<Ledger>, region: &Kv, req: &Request) -> Message {
    let [client, seq, a, b] = req.msg.words;
    let c = client as usize;
    let label = req.msg.label;
    let answer = |result: u64| Message { label, words: [seq, result, 0, 0] };
    if label == op::AUDIT {
        s.audited = true;
        s.rounds = a;
        return answer(1);
    }
    if c >= MAX_CLIENTS || !(op::INCR..=op::GET).contains(&label) {
        return answer(u64::MAX);
    }
    // A client rolled back after its call went out asks again: the same
    // request, answered as before, applied once.
    if seq + 1 == s.next_seq[c] && label == s.last_reply[c].label {
        s.retries += 1;
        return s.last_reply[c];
    }
    // Exactly once, in order: a doubled or lost request shows here.
    if seq != s.next_seq[c] {
        // The checking server (the mixed campaign's) first takes it for a
        // fault of its own — a flipped register holding `seq` or the
        // client — and panics inside the request's scope: the rollback
        // restores its registers and the kernel hands it the same request
        // again. Only a retry that still disagrees is the client's doing.
        if s.checking && req.attempt.number == 0 {
            panic!("kv: request {seq} of client {c}, expected {}", s.next_seq[c]);
        }
        s.violations += 1;
    }
    s.next_seq[c] = seq + 1;
    s.clients = s.clients.max(client + 1);
    // What the operation starts from, for the self-check's recomputation.
    let before =
        Before { counter: s.counters[c], from: s.accounts[(b % 8) as usize], to: s.accounts[((b / 8) % 8) as usize] };
    work(REQUEST_WORK);
    let result = match label {
        op::INCR => {
            s.counters[c] += a;
            s.counters[c]
        }
        op::TRANSFER => {
            let (from, to) = ((b % 8) as usize, ((b / 8) % 8) as usize);
            if from != to && s.accounts[from] >= a {
                s.accounts[from] -= a;
                s.accounts[to] += a;
                1
            } else {
                0
            }
        }
        op::PUT => match Arc::new_in(region, Value { v: a }) {
            Ok(v) => {
                s.values[c] = Some(v); // the old one dropped
                0
            }
            Err(_) => u64::MAX,
        },
        _ => s.values[c].as_ref().map_or(0, |v| v.v),
    };
    apply_once(ledger, client, seq);
    s.answered += 1;
    s.last_reply[c] = answer(result);
    if s.checking {
        self_check(s, req, core::hint::black_box(before));
    }
    s.last_reply[c]
}

/// A request's starting values, taken before its work (`self_check`).
#[derive(Clone, Copy)]
struct Before {
    counter: u64,
    from: u64,
    to: u64,
}

/// The checking server's check of what the request's run is about to
/// commit, recomputed from the request as it lies in memory — not from
/// the registers that computed it, which a fault may have flipped
/// (`docs/recovery.md`, "Limits": a value computed from a flipped register
/// and committed is silent unless the task checks it before the commit).
/// A failure panics inside the request's scope: rolled back, and the
/// kernel hands the same request to the re-run.
#[inline(never)]
fn self_check(s: &Store, req: &Request, before: Before) {
    // Read again through an opaque pointer: the compiler may not reuse the
    // registers that held these words during the handling.
    let req = core::hint::black_box(req);
    let [client, seq, a, b] = req.msg.words;
    let c = client as usize;
    let (from, to) = ((b % 8) as usize, ((b / 8) % 8) as usize);
    let moved = s.last_reply[c.min(MAX_CLIENTS - 1)].words[1] == 1;
    let ok = c < MAX_CLIENTS
        && s.next_seq[c] == seq.wrapping_add(1)
        && s.last_reply[c].label == req.msg.label
        && s.last_reply[c].words[0] == seq
        && s.accounts.iter().sum::<u64>() == ACCOUNTS as u64 * OPENING
        && match req.msg.label {
            // The operand as the request has it, not as a register held it.
            op::INCR => s.counters[c] == s.last_reply[c].words[1] && s.counters[c] == before.counter.wrapping_add(a),
            op::TRANSFER if moved => {
                s.accounts[from] == before.from.wrapping_sub(a) && s.accounts[to] == before.to.wrapping_add(a)
            }
            op::TRANSFER => s.accounts[from] == before.from && s.accounts[to] == before.to,
            // (A full region answers `u64::MAX` and keeps the old value.)
            op::PUT => s.last_reply[c].words[1] == u64::MAX || s.values[c].as_ref().is_some_and(|v| v.v == a),
            op::GET => s.last_reply[c].words[1] == s.values[c].as_ref().map_or(0, |v| v.v),
            _ => true,
        };
    if !ok {
        panic!("kv: self-check of request {seq} of client {client} failed");
    }
}

/// Records request `seq` of `client` in the shared ledger. Requests are
/// numbered 1, 2, ... per client, so after request `seq` the client has
/// `seq` applied: the ledger stores that absolute value, never an
/// increment. Shared memory is not rolled back, so the update must be
/// idempotent — a re-run of the request after a rollback stores the same
/// values again — and a value a fault corrupted (a flipped register
/// stored through) is overwritten by the client's next request, instead
/// of stopping every later one at a "newer than this" check.
fn apply_once(ledger: &Mutex<Ledger>, client: u64, seq: u64) {
    let mut g = lock_ledger(ledger);
    let c = client as usize;
    set(&mut g.journal.client, client);
    set(&mut g.journal.seq, seq);
    set(&mut g.journal.applied, seq);
    set(&mut g.journal.active, 1);
    work(REQUEST_WORK / 4); // holding the lock: faults land here too
    set(&mut g.applied[c], seq);
    set(&mut g.last_seq[c], seq);
    set(&mut g.journal.active, 0);
}

/// Locks the ledger, rolling a journalled update forward if a holder faulted.
fn lock_ledger(m: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            let mut g = poisoned.into_inner();
            let j = g.journal;
            // Shared data is hostile: the index is checked, not trusted.
            if j.active != 0 && (j.client as usize) < MAX_CLIENTS {
                set(&mut g.applied[j.client as usize], j.applied);
                set(&mut g.last_seq[j.client as usize], j.seq);
            }
            set(&mut g.journal.active, 0);
            m.clear_poison();
            report("kv:repaired", true, j.active);
            g
        }
    }
}

fn set(place: &mut u64, value: u64) {
    // SAFETY: a valid &mut. Volatile: the order of these stores is what a
    // repairer reads after a fault, so the compiler must keep it.
    unsafe { core::ptr::write_volatile(place, value) }
}

// ---- the clients ----

/// `checking`: retry once what a fault of its own may have made go wrong —
/// a wrong reply, a malformed call (below; the mixed campaign's clients);
/// otherwise report it.
fn client(region: &Kv, id: u64, clients: u64, rounds: u64, pause: bool, checking: bool) -> u64 {
    let Ok(kv) = ipc::cap("kv") else {
        report("kv:caps", false, 0);
        return 1;
    };
    // Client numbers 0.. in task order: clients are consecutive tasks.
    let me = (id - 1) % clients.max(1);
    let done = &region.statics().done;
    let (mut counter, mut value, mut answered, mut wrong) = (0u64, 0u64, 0u64, 0u64);
    let mut seq = 0;
    // One call per run of a `repeat`: a fault, kill or hang of the client
    // anywhere — blocked in the call included — rolls back to the previous
    // call's commit, and the re-run makes the same call (same `seq`) again;
    // the server answers a retry of a request it already applied with the
    // same reply ([`handle`]). The client's tallies are private memory,
    // rolled back with the run.
    let failed = libtask::checkpoint::repeat(|attempt| {
        // Retried once: a second wrong reply to the same call is not this
        // client's doing (the server's cached reply is wrong), and is
        // reported, not retried forever.
        let retry = checking && attempt.number == 0;
        seq += 1;
        if pause && seq == rounds / 2 + 1 {
            while syscall::ticks() < PAUSE_UNTIL {
                let _ = syscall::sleep(PAUSE_UNTIL - syscall::ticks());
            }
        }
        let (label, a, b) = match seq % 4 {
            0 => (op::INCR, seq, 0),
            1 => (op::TRANSFER, seq % 50 + 1, seq * 7 + me),
            2 => (op::PUT, seq * 1000 + me, 0),
            _ => (op::GET, 0, 0),
        };
        let msg = Message { label, words: [me, seq, a, b] };
        match ipc::call_server(kv, &msg) {
            Ok(r) => {
                answered += 1;
                let result = r.msg.words[1];
                let expected = match label {
                    op::INCR => {
                        counter += a;
                        Some(counter)
                    }
                    op::PUT => {
                        value = a;
                        Some(0)
                    }
                    op::GET => Some(value),
                    _ => None,
                };
                if r.msg.label != label || r.msg.words[0] != seq || expected.is_some_and(|e| e != result) {
                    wrong += 1;
                    println!("kv client {me}: seq {seq}: reply {:?}, expected {expected:?}", r.msg);
                    // A reply that cannot be right: a bit flipped on the
                    // way (in this client's registers or buffers, say).
                    // Inside the call's scope a panic is a fault like any
                    // other — rolled back, and the call made again, which
                    // the server answers from its cache — so the client
                    // checks, and lets recovery retry.
                    if retry {
                        panic!("kv client {me}: seq {seq}: a wrong reply");
                    }
                    // Wrong again on the retry: not this call's doing — a
                    // value corrupted earlier and committed, here or in
                    // the server. Counted (the check fails), and the
                    // client takes the server's word from here on, so
                    // that one corruption is one wrong reply, not a
                    // fault on every later call.
                    match label {
                        op::INCR => counter = result,
                        op::GET => value = result,
                        _ => {}
                    }
                }
            }
            // The server is gone (restarted or stopped): reported, the end.
            Err(e @ (CallError::Restarted { .. } | CallError::Stopped { .. })) => return ControlFlow::Break(Some(e)),
            // Anything else is this client's own fault (a flipped register
            // or a skipped instruction made the call malformed): retried,
            // as above.
            Err(CallError::Other(e)) if retry => panic!("kv client {me}: seq {seq}: call failed: {}", e.name()),
            Err(e) => return ControlFlow::Break(Some(e)),
        }
        if seq == rounds { ControlFlow::Break(None) } else { ControlFlow::Continue(()) }
    });
    match failed {
        Ok(Some(e)) => report("kv:call-error", false, code(e)),
        Ok(None) => {}
        Err(e) => report("kv:checkpoint", false, e as u64),
    }
    report("kv:client", answered == rounds && wrong == 0, answered);
    done.fetch_add(1, Ordering::AcqRel);
    // The last client by number audits, once every client is done: always
    // the same one, so that which client reports `kv:audit` does not
    // depend on who happened to finish last (a golden-run comparison
    // would see that as a difference). It waits in scopes, like its calls.
    if me + 1 == clients {
        let deadline = syscall::ticks() + 30_000;
        let _ = libtask::checkpoint::repeat(|_| {
            if done.load(Ordering::Acquire) >= clients as u32 || syscall::ticks() >= deadline {
                return ControlFlow::Break(());
            }
            let _ = syscall::sleep(1);
            ControlFlow::Continue(())
        });
        let r = ipc::call_server(kv, &Message { label: op::AUDIT, words: [me, 0, rounds, 0] });
        let result = r.map_or(0, |r| r.msg.words[1]);
        report("kv:audit", result == 1, result);
    }
    0
}

/// The raw error code of a failed call; a restart or stop of the server
/// is also reported with the generation it carried (`kv:generation`).
fn code(e: CallError) -> u64 {
    let (error, generation) = match e {
        CallError::Restarted { generation } => (libtask::Error::Restarted, Some(generation)),
        CallError::Stopped { generation } => (libtask::Error::Stopped, Some(generation)),
        CallError::Other(e) => (e, None),
    };
    if let Some(generation) = generation {
        println!("kv client: {}: the server's generation is now {generation}", error.name());
        report("kv:generation", true, generation);
    }
    error as u64
}
