//! `arcs`: typed shared state under faults and across tasks — an
//! `Arc<Mutex<Account>>` in a region (`Region<Shared, Mutex<Account>>`),
//! held at a fault, and passed to another task over typed IPC
//! (`libtask::ipc::typed`) as one `SharedArc` value.
//!
//! | arg | role | checks |
//! |---|---|---|
//! | 1 | owner: allocates the account, publishes its token in the statics, waits for the faulter, checks and frees it | `arcs:owner-after-fault` (value = holders), `arcs:freed-once` (value = frees) |
//! | 2 | faulter: takes the account, locks it and faults (`ud2`) in a scope; at the retry finds it poisoned and its holders exact | `arcs:poisoned-on-retry`, `arcs:count-on-retry` (value = holders: 2) |
//! | 3 | IPC server on endpoint `acct`: typed `Op` requests, `Arc::from_token` on the account each names | `arcs:server` (value = requests served), `arcs:server-malformed` (value = malformed requests) |
//! | 4 | IPC client: deposits through the server into an account it holds, a malformed request, a reply of the wrong type, a stale token; `Instant` around a sleep | `arcs:ipc` (value = balance), `arcs:malformed-refused`, `arcs:bad-reply-detected`, `arcs:stale-refused`, `arcs:instant` (value = ms) |
//! | 5 | reports its instance index (manifest `count > 1`) | `arcs:instance` (value = `Start::instance`) |
//! | 6 | sweeper (`faults/arc-sweep.toml`): [`SWEEP_ROUNDS`] scopes, each taking the account by token, cloning, dropping both handles around a deposit — through the `#[inline(never)]` wrappers the sweep injects into | `arcs:sweeper` (value = rounds) |
//! | 8 | views: opens region `views` as `Region<ViewA>`, again as `ViewA` (the same view), then as `ViewB` and as `Region<ViewA, u64>` (refused) | `arcs:same-view`, `arcs:other-view-refused` (value = refusals: 2) |
//! | 9 | opens region `views` as `Region<ViewB>` after role 8 initialized it as `ViewA` (same size): another task's types | `arcs:other-task-view-refused` |
//! | 7 + 100 n | sweep owner: allocates and publishes the account, waits for n sweepers, checks the count and the balance, frees it | `arcs:sweep-holders` (value = holders: 1), `arcs:sweep-balance`, `arcs:sweep-freed` (value = frees: 1) |
//!
//! Roles 1, 2, 6 and 7 need `held:map` (region `held`, 8 KiB), 3 and 4
//! `accts:map` (region `accts`, 8 KiB), 3 `acct:recv`, 4 `acct:send`.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use libtask::checkpoint::checkpoint;
use libtask::ipc::{self, Message, typed};
use libtask::sync::{Arc, FromBytes, Mutex, PoisonError, Region, SharedArc, SyncError};
use libtask::time::{Duration, Instant};
use libtask::{Start, println, report, syscall};
use serde::{Deserialize, Serialize};

libtask::entry!(main);

#[derive(FromBytes, Clone, Copy, Debug)]
#[repr(C)]
pub struct Account {
    balance: u64,
    ops: u64,
    /// Per sweeper instance: rounds applied (the sweep's exactly-once key:
    /// shared memory is not rolled back, so a retry must know whether its
    /// faulted attempt's deposit landed).
    applied: [u64; SWEEPERS],
}

/// Most sweeper instances.
const SWEEPERS: usize = 4;

/// An account, shared: what the region's Arc slots hold.
type Acct = Mutex<Account>;

/// The region's statics.
#[derive(FromBytes)]
#[repr(C)]
pub struct Shared {
    /// The owner's account, for the faulter.
    published: Mutex<SharedArc<Acct>>,
    /// `published` is set.
    ready: AtomicU32,
    /// The faulter is done (its reference dropped).
    faulter_done: AtomicU32,
    /// Sweepers done.
    sweepers_done: AtomicU32,
}

type Accounts = Region<Shared, Acct>;
const SLOTS: u32 = 8;
const OPENING: u64 = 100;
const DEPOSITS: u64 = 10;
const AMOUNT: u64 = 5;

/// The IPC protocol: requests...
#[derive(Serialize, Deserialize, Debug)]
enum Op {
    Deposit { account: SharedArc<Acct>, amount: u64 },
    Stop,
}

/// ... and replies.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
enum Reply {
    /// The balance after the deposit; the account's holders (tasks) while
    /// the server held it.
    Balance {
        balance: u64,
        holders: u32,
    },
    /// `Arc::from_token` refused the token (`SyncError`, by name).
    Refused {
        stale: bool,
    },
    Stopped {
        served: u64,
    },
}

fn main(start: Start) -> u64 {
    if matches!(start.arg, 8 | 9) {
        return match start.arg {
            8 => views(),
            _ => other_task_view(),
        };
    }
    if start.arg == 5 {
        println!("arcs: instance {} of its entry (task {})", start.instance, start.id);
        report("arcs:instance", true, start.instance as u64);
        return 0;
    }
    // Two regions, so that each pair's statistics are its own.
    let name = if matches!(start.arg % 100, 1 | 2 | 6 | 7) { "held" } else { "accts" };
    let region = match Accounts::open_arcs(name, SLOTS) {
        Ok(r) => r,
        Err(e) => {
            println!("arcs {}: region: {e}", start.id);
            report("arcs:region", false, 0);
            return 1;
        }
    };
    match start.arg {
        1 => owner(&region),
        2 => faulter(&region),
        3 => server(&region),
        4 => client(&region),
        6 => sweeper(&region, start.instance as usize),
        a if a % 100 == 7 => sweep_owner(&region, (a / 100) as u32),
        other => {
            println!("arcs: unknown role {other}");
            return 2;
        }
    }
    0
}

/// Waits (sleeping) until `f` is set, at most `ms`; whether it was.
fn wait_flag(f: &AtomicU32, ms: u64) -> bool {
    let deadline = Instant::now() + Duration::from_millis(ms);
    while f.load(Ordering::Acquire) == 0 {
        if Instant::now() >= deadline {
            return false;
        }
        let _ = syscall::sleep(1);
    }
    true
}

// ---- roles 1 and 2: an Arc<Mutex<T>> held at a fault ----

fn owner(region: &Accounts) {
    let Some(acct) = publish(region) else {
        println!("arcs owner: no account");
        return report("arcs:owner-after-fault", false, 0);
    };
    let s = region.statics();
    let waited = wait_flag(&s.faulter_done, 10_000);
    // The faulter's faulted attempt gave nothing back twice, kept nothing.
    let holders = Arc::strong_count(&acct);
    let (locked, poisoned) = (acct.is_locked(), acct.is_poisoned());
    let a = *acct.lock().unwrap_or_else(PoisonError::into_inner);
    println!("arcs owner: holders {holders}, locked {locked}, poisoned {poisoned}, {a:?}");
    let ok = waited && holders == 1 && !locked && !poisoned && a.balance == OPENING + 1 && a.ops == 1;
    report("arcs:owner-after-fault", ok, holders as u64);
    drop(acct); // the last reference: frees the slot
    let st = region.stats();
    let live = region.live_slots();
    let ok = st.allocs == 1 && st.frees == 1 && st.double_frees == 0 && live == 0;
    println!("arcs owner: allocs {} frees {} double frees {} live {live}", st.allocs, st.frees, st.double_frees);
    report("arcs:freed-once", ok, st.frees as u64);
}

fn faulter(region: &Accounts) {
    let s = region.statics();
    if !wait_flag(&s.ready, 5000) {
        report("arcs:count-on-retry", false, 0);
        return;
    }
    let token = *s.published.lock().unwrap_or_else(PoisonError::into_inner);
    let got = checkpoint(|attempt| {
        let acct = Arc::from_token(region, token).ok()?;
        let holders = Arc::strong_count(&acct);
        let (mut g, poisoned) = match acct.lock() {
            Ok(g) => (g, false),
            Err(p) => (p.into_inner(), true),
        };
        if poisoned {
            // A holder faulted mid-update (shared memory is not rolled
            // back): restore the invariant `balance == OPENING + ops`.
            g.balance = OPENING + g.ops;
        }
        g.balance += 1; // torn if the fault comes now...
        if attempt.number == 0 {
            println!("arcs faulter: faulting with the account locked (holders {holders})");
            // SAFETY: ud2 raises #UD: the fault this test is about.
            unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
        }
        g.ops += 1; // ... and whole again now
        drop(g);
        if poisoned {
            acct.clear_poison();
        }
        Some((holders, poisoned, attempt.number))
    });
    let Ok(Some((holders, poisoned, attempt))) = got else {
        report("arcs:count-on-retry", false, 0);
        return;
    };
    report("arcs:poisoned-on-retry", poisoned && attempt == 1, attempt);
    // The owner's and ours: the faulted attempt's reference was given back.
    report("arcs:count-on-retry", holders == 2, holders as u64);
    s.faulter_done.store(1, Ordering::Release);
}

// ---- roles 3 and 4: an Arc passed over typed IPC ----

fn server(region: &Accounts) {
    let Ok(cap) = ipc::cap("acct") else { return report("arcs:server", false, 0) };
    let (mut served, mut malformed) = (0u64, 0u64);
    let mut request = typed::recv::<Op>(cap, ipc::Timeout::Forever);
    loop {
        let req = match request {
            Ok(r) => r,
            Err(e) => {
                println!("arcs server: receive: {e}");
                return report("arcs:server", false, served);
            }
        };
        let reply = match req.body {
            Err(e) => {
                println!("arcs server: refusing a request: {e}");
                malformed += 1;
                None
            }
            Ok(Op::Stop) => {
                let _ = typed::reply(&Reply::Stopped { served });
                break;
            }
            Ok(Op::Deposit { account, amount }) => {
                served += 1;
                Some(deposit(region, account, amount))
            }
        };
        request = typed::reply_recv(cap, reply.as_ref(), ipc::Timeout::Forever).map_err(|e| {
            println!("arcs server: {e}");
            libtask::Error::BadArgument
        });
    }
    report("arcs:server", served == DEPOSITS + 3, served);
    report("arcs:server-malformed", malformed == 1, malformed);
}

/// One deposit into the account a client passed: this task's own reference
/// while it works on it, given back before the reply.
fn deposit(region: &Accounts, account: SharedArc<Acct>, amount: u64) -> Reply {
    let acct = match Arc::from_token(region, account) {
        Ok(a) => a,
        Err(e) => {
            println!("arcs server: token refused: {e}");
            return Reply::Refused { stale: e == SyncError::Stale };
        }
    };
    let mut g = acct.lock().unwrap_or_else(PoisonError::into_inner);
    g.balance += amount;
    g.ops += 1;
    Reply::Balance { balance: g.balance, holders: Arc::strong_count(&acct) }
}

fn client(region: &Accounts) {
    let Ok(cap) = ipc::cap("acct") else { return report("arcs:ipc", false, 0) };
    let acct = match Arc::new_in(region, Mutex::new(Account { balance: 0, ops: 0, applied: [0; SWEEPERS] })) {
        Ok(a) => a,
        Err(e) => {
            println!("arcs client: {e}");
            return report("arcs:ipc", false, 0);
        }
    };
    // Deposits: the account goes to the server as one value, which takes
    // its own reference (2 holders) and gives it back before replying.
    let mut ok = true;
    for i in 1..=DEPOSITS {
        let op = Op::Deposit { account: Arc::share(&acct), amount: AMOUNT };
        match typed::call::<Op, Reply>(cap, 0, &op) {
            Ok(Reply::Balance { balance, holders }) => ok &= balance == i * AMOUNT && holders == 2,
            other => {
                println!("arcs client: deposit {i}: {other:?}");
                ok = false;
            }
        }
    }
    let a = *acct.lock().unwrap_or_else(PoisonError::into_inner);
    let holders = Arc::strong_count(&acct);
    println!("arcs client: {a:?} after {DEPOSITS} deposits; holders now {holders}");
    report("arcs:ipc", ok && a.balance == DEPOSITS * AMOUNT && a.ops == DEPOSITS && holders == 1, a.balance);

    // A request that is no `Op`: the server refuses it, typed.
    let garbage = [0xffu8; 3];
    let r = ipc::call_with(cap, &Message { label: 0, words: [0; 4] }, &garbage, &mut []);
    let refused = matches!(r, Ok(ref m) if m.msg.label == typed::REPLY_MALFORMED);
    report("arcs:malformed-refused", refused, r.map(|m| m.msg.label).unwrap_or(u64::MAX));

    // A reply that is not what we expect to decode: an error, not garbage.
    let op = Op::Deposit { account: Arc::share(&acct), amount: 0 };
    let r = typed::call::<Op, [u64; 8]>(cap, 0, &op);
    if let Err(e) = &r {
        println!("arcs client: as expected, {e}");
    }
    report("arcs:bad-reply-detected", matches!(r, Err(typed::TypedError::Malformed(_))), 0);

    // A token of an Arc freed since: the server's from_token says Stale.
    let gone =
        Arc::new_in(region, Mutex::new(Account { balance: 0, ops: 0, applied: [0; SWEEPERS] })).map(|g| Arc::share(&g));
    let r = gone.map(|token| typed::call::<Op, Reply>(cap, 0, &Op::Deposit { account: token, amount: 1 }));
    report("arcs:stale-refused", matches!(r, Ok(Ok(Reply::Refused { stale: true }))), 0);

    // A second deposit round through the same typed path after all that.
    let r = typed::call::<Op, Reply>(cap, 0, &Op::Deposit { account: Arc::share(&acct), amount: AMOUNT });
    let again = matches!(r, Ok(Reply::Balance { balance, holders: 2 }) if balance == (DEPOSITS + 1) * AMOUNT);
    report("arcs:ipc-again", again, 0);
    let _ = typed::call::<Op, Reply>(cap, 0, &Op::Stop);

    // Instant and Duration on the guest clock.
    let t0 = Instant::now();
    let slept = libtask::time::sleep(Duration::from_millis(20));
    let e = t0.elapsed();
    report(
        "arcs:instant",
        slept.is_ok() && e >= Duration::from_millis(20) && e < Duration::from_secs(2),
        e.as_millis() as u64,
    );
}

// ---- roles 6 and 7: the Arc crash-window sweep ----

/// Rounds of a sweeper.
pub const SWEEP_ROUNDS: u64 = 5;

// The swept operations, one function each, never inlined: the sweep
// breaks at their entry and single-steps K instructions into them.

#[unsafe(no_mangle)]
#[inline(never)]
pub fn arcs_from_token(region: &Accounts, token: SharedArc<Acct>) -> Result<Arc<Acct>, SyncError> {
    Arc::from_token(region, token)
}

#[unsafe(no_mangle)]
#[inline(never)]
pub fn arcs_clone(a: &Arc<Acct>) -> Arc<Acct> {
    a.clone()
}

#[unsafe(no_mangle)]
#[inline(never)]
pub fn arcs_drop(a: Arc<Acct>) {
    drop(a)
}

/// Publishes a fresh account for the sweepers (the owners' common part).
fn publish(region: &Accounts) -> Option<Arc<Acct>> {
    let acct = Arc::new_in(region, Mutex::new(Account { balance: OPENING, ops: 0, applied: [0; SWEEPERS] })).ok()?;
    let s = region.statics();
    *s.published.lock().unwrap_or_else(PoisonError::into_inner) = Arc::share(&acct);
    s.ready.store(1, Ordering::Release);
    Some(acct)
}

fn sweeper(region: &Accounts, me: usize) {
    let s = region.statics();
    if me >= SWEEPERS || !wait_flag(&s.ready, 5000) {
        return report("arcs:sweeper", false, 0);
    }
    let token = *s.published.lock().unwrap_or_else(PoisonError::into_inner);
    let mut done = 0;
    for round in 1..=SWEEP_ROUNDS {
        let r = checkpoint(|_| {
            let a = arcs_from_token(region, token).ok()?;
            let b = arcs_clone(&a);
            arcs_drop(a);
            {
                let mut g = match b.lock() {
                    Ok(g) => g,
                    Err(p) => {
                        // A holder faulted mid-deposit. The deposits that
                        // count are the applied ones; the rest is torn.
                        let mut g = p.into_inner();
                        g.ops = g.applied.iter().sum();
                        g.balance = OPENING + g.ops;
                        b.clear_poison();
                        g
                    }
                };
                // Exactly once: a retry whose attempt's deposit landed
                // before the fault does not deposit again.
                if g.applied[me] != round {
                    g.balance += 1;
                    g.ops += 1;
                    g.applied[me] = round;
                }
            }
            arcs_drop(b);
            Some(())
        });
        done += matches!(r, Ok(Some(()))) as u64;
    }
    report("arcs:sweeper", done == SWEEP_ROUNDS, done);
    s.sweepers_done.fetch_add(1, Ordering::Release);
}

fn sweep_owner(region: &Accounts, sweepers: u32) {
    let Some(acct) = publish(region) else { return report("arcs:sweep-holders", false, 0) };
    let s = region.statics();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.sweepers_done.load(Ordering::Acquire) < sweepers && Instant::now() < deadline {
        let _ = syscall::sleep(5);
    }
    let holders = Arc::strong_count(&acct);
    report("arcs:sweep-holders", holders == 1 && !acct.is_locked(), holders as u64);
    let a = *acct.lock().unwrap_or_else(PoisonError::into_inner);
    let want = OPENING + sweepers as u64 * SWEEP_ROUNDS;
    report("arcs:sweep-balance", a.balance == want && a.ops == want - OPENING, a.balance);
    drop(acct);
    let st = region.stats();
    let ok = st.allocs == 1 && st.frees == 1 && st.double_frees == 0 && region.live_slots() == 0;
    println!("arcs sweep owner: allocs {} frees {} double frees {}", st.allocs, st.frees, st.double_frees);
    report("arcs:sweep-freed", ok, st.frees as u64);
}

// ---- roles 8 and 9: one typed view per region ----

/// Two statics types of the same size and alignment: only their
/// declarations tell them apart.
#[derive(FromBytes)]
#[repr(C)]
pub struct ViewA {
    counter: AtomicU32,
    lock: Mutex<u32>,
}

#[derive(FromBytes)]
#[repr(C)]
pub struct ViewB {
    lock: Mutex<u32>,
    counter: AtomicU32,
}

const _: () = assert!(core::mem::size_of::<ViewA>() == core::mem::size_of::<ViewB>());

fn views() -> u64 {
    let Ok(a) = Region::<ViewA>::open("views") else {
        report("arcs:same-view", false, 0);
        return 1;
    };
    a.statics().counter.store(7, Ordering::Release);
    // The same types again: the same bytes, the same view.
    let again = Region::<ViewA>::open("views");
    let same = matches!(&again, Ok(r) if core::ptr::eq(r.statics(), a.statics()));
    report("arcs:same-view", same, 0);
    // Other types over the same bytes: refused, whatever their size.
    let b = Region::<ViewB>::open("views").map(|_| ());
    let with_arcs = Region::<ViewA, u64>::open_arcs("views", 0).map(|_| ());
    println!("arcs views: as ViewB: {b:?}; as (ViewA, u64): {with_arcs:?}");
    let refused = [b, with_arcs].iter().filter(|r| **r == Err(SyncError::TypeMismatch)).count();
    report("arcs:other-view-refused", refused == 2, refused as u64);
    0
}

fn other_task_view() -> u64 {
    // Wait for role 8's region (its initializer's header) to be there.
    let _ = syscall::sleep(100);
    let r = Region::<ViewB>::open("views").map(|_| ());
    println!("arcs other task: as ViewB: {r:?}");
    report("arcs:other-task-view-refused", r == Err(SyncError::TypeMismatch), 0);
    0
}
