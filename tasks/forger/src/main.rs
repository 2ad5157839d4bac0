//! `forger`: a task that attacks its fault server from inside a checkpoint
//! scope, in the way its manifest `arg` selects (`images/forger.toml`,
//! `qemu-tests/tests/forger.rs`). The registry forgeries (1, 2) name no
//! object of their entry's kind, so the fault server must leave the entry
//! out (a `release` event with outcome `ignored` and the reason) and roll
//! the task back — never write to the shared object the forged entry
//! names; on the re-run (the open returns a nonzero attempt) the task
//! checks the shared words it set up and reports the check named below. A
//! fresh start of them is a failed check. The stack forgeries (3, 4) must be
//! *rolled back*: the rollback restores the registers the kernel recorded
//! at the open, not anything on the stack, so a smashed `rsp` costs the
//! walk (the report's scope frame is `?`) but not the recovery; the re-run
//! reports the check, ok.
//!
//! | arg | attack | check on the second run (ok = untouched) |
//! |---|---|---|
//! | 1 | an **Arc** registry entry naming a poisoned **mutex** (the old planner `FETCH_ADD32`ed its poison word: un-poisoned, counted a free) | `forger:arc-on-mutex` (on the re-run) |
//! | 2 | a **mutex** registry entry naming an Arc slot whose `(generation, count)` word pair equals the task id (the old `CAS64` "released" it into a phantom allocation) | `forger:mutex-on-slot` (on the re-run) |
//! | 3 | `rsp` set to a kernel address, then `ud2`, in the scope | `forger:kernel-rsp` (on the re-run) |
//! | 4 | `rsp` moved into the caller's frame (above the scope's), then `ud2` | `forger:caller-rsp` (on the re-run) |
//! | 5 | a *sealed* scope (raw open, `rdx = SEAL`) whose first run flips a bit of `rbx` before the commit | `forger:seal` (the commit faulted, the re-run committed) |
//! | 6 | the same in an *unsealed* scope: the control | `forger:unsealed` (the commit closed the scope, no fault) |
//! | 7 | a stray write makes a mutex's word name no task (`0xdeadbeef`), then `lock` in a scope: libtask must panic (a fault, rolled back) rather than wait for nobody for ever | `forger:not-a-mutex` (the re-run repairs the word and locks; value = the attempt) |
//!
//! Attacks 1 and 2 register a recovery page of their own making
//! (`SET_RECOVERY`, as any task may) after opening the region, open the
//! scope with the raw `CHECKPOINT_OPEN` (so libtask's registry stays out of
//! it), write the forged entry and fault. A fresh start of any attack is a
//! failed check of its name.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use libtask::abi::checkpoint::{ArcEntry, MutexEntry, RECOVERY_MAGIC, RecoveryPage};
use libtask::abi::syscall::nr;
use libtask::sync::{FromBytes, Mutex, Region};
use libtask::{Start, println, report, supervise};

libtask::entry!(main);

/// The region: 64 bytes of statics (a `Mutex<u64>` at 0), 4 Arc slots of 8
/// payload bytes (the first at +128).
#[derive(FromBytes)]
#[repr(C)]
struct Statics {
    mutex: Mutex<u64>,
    /// Attack 7's: a stray write makes its word name no task.
    stray: Mutex<u64>,
    _rest: [u64; 4],
}
const SLOTS: u32 = 4;
const SLOT0: u64 = 128;

#[repr(C, align(4096))]
struct Page(UnsafeCell<RecoveryPage>);
// SAFETY: one thread; the kernel and the fault server read it only while
// the task is stopped.
unsafe impl Sync for Page {}
static FORGED: Page = Page(UnsafeCell::new(RecoveryPage::EMPTY));

fn main(start: Start) -> u64 {
    let region = match Region::<Statics, u64>::open_arcs("forger", SLOTS) {
        Ok(r) => r,
        Err(e) => {
            println!("forger {}: region: {e}", start.id);
            report("forger:region", false, 0);
            return 2;
        }
    };
    let mutex = region.base() + 64;
    let slot = region.base() + SLOT0;
    // The words of the shared objects, as the task itself may write them.
    // SAFETY: both are 8-aligned words inside the mapped region.
    let mutex_pair = unsafe { &*(mutex as *const AtomicU64) };
    let slot_pair = unsafe { &*(slot as *const AtomicU64) };
    let frees = || {
        // SAFETY: header words of the mapped region.
        let w = |o: u64| unsafe { &*((region.base() + o) as *const AtomicU32) }.load(Ordering::Relaxed);
        (w(36), w(40))
    };
    let _: &Mutex<u64> = &region.statics().mutex;
    let second_run = supervise::restart_count() > 0;
    let id = start.id;
    match start.arg {
        1 | 2 if second_run => {
            let name = if start.arg == 1 { "forger:arc-on-mutex" } else { "forger:mutex-on-slot" };
            report(name, false, 0);
            1
        }
        1 => {
            let poisoned = 1u64 << 32; // unlocked, poisoned
            mutex_pair.store(poisoned, Ordering::Relaxed);
            let untouched = || {
                let v = mutex_pair.load(Ordering::Relaxed);
                (v == poisoned && frees() == (0, 0), v)
            };
            forge_and_fault("forger:arc-on-mutex", untouched, |p| {
                p.arc_count = 1;
                p.arcs[0] = ArcEntry { addr: mutex, scope: 1 };
            })
        }
        2 => {
            slot_pair.store(id, Ordering::Relaxed); // generation = id, count 0 (free)
            let untouched = || {
                let v = slot_pair.load(Ordering::Relaxed);
                (v == id && frees() == (0, 0), v)
            };
            forge_and_fault("forger:mutex-on-slot", untouched, |p| {
                p.mutex_count = 1;
                p.mutexes[0] = MutexEntry { addr: slot, scope: 1 };
            })
        }
        3 | 4 => {
            let name = if start.arg == 3 { "forger:kernel-rsp" } else { "forger:caller-rsp" };
            if second_run {
                report(name, false, 0);
                return 1;
            }
            // A buffer in this frame, above the scope's: a stack pointer
            // there is a readable, plausible stack — just not the scope's.
            let above = [0u64; 64];
            let bad_rsp = if start.arg == 3 { 0xffff_8000_0000_0000 } else { above.as_ptr() as u64 + 256 };
            let r = libtask::checkpoint::checkpoint(|attempt| {
                if attempt.is_retry() {
                    report(name, true, attempt.number);
                    return true;
                }
                // SAFETY: the task faults at the `ud2` with the bad stack
                // pointer; nothing runs on it (the fault server rolls the
                // scope back, which restores the open's `rsp`).
                unsafe { core::arch::asm!("mov rsp, {0}", "ud2", in(reg) bad_rsp, options(noreturn)) }
            });
            core::hint::black_box(&above);
            if r == Ok(true) {
                return 0;
            }
            report(name, false, 1);
            1
        }
        5 | 6 => seal(start.arg == 5),
        7 => {
            let stray = &region.statics().stray;
            // SAFETY: the mutex's word pair, an 8-aligned word of the
            // mapped region (what a stray write through a bad pointer does).
            let word = unsafe { &*(stray as *const Mutex<u64> as *const AtomicU64) };
            word.store(0xdead_beef, Ordering::Relaxed);
            let r = libtask::checkpoint::checkpoint(|attempt| {
                if attempt.is_retry() {
                    word.store(0, Ordering::Relaxed); // repaired
                    let ok = stray.lock().is_ok();
                    report("forger:not-a-mutex", ok, attempt.number);
                    return ok;
                }
                // Must fault (a panic), not wait: the word names no task.
                let _g = stray.lock();
                false
            });
            if r == Ok(true) {
                return 0;
            }
            report("forger:not-a-mutex", false, 0);
            1
        }
        arg => {
            report("forger:arg", false, arg);
            2
        }
    }
}

/// Registers [`FORGED`] as the recovery page, opens a scope (raw), lets
/// `forge` fill the page's registries, and faults. The rollback lands back
/// after the open with `rax` = the attempt (the page as it was at the
/// open: the forgery undone): `untouched` says whether the shared words
/// are as the task left them, reported as check `name`; exit 0 if so.
fn forge_and_fault(name: &str, untouched: impl FnOnce() -> (bool, u64), forge: impl FnOnce(&mut RecoveryPage)) -> u64 {
    let page = FORGED.0.get();
    // SAFETY: the static is page-aligned memory of this task; SET_RECOVERY
    // records its address, CHECKPOINT_OPEN writes its depth and scope
    // record (the kernel checks the page); single-threaded.
    unsafe {
        (*page).magic = RECOVERY_MAGIC;
        let _ = libtask::syscall::raw::syscall1(nr::SET_RECOVERY, page as u64);
        let attempt = libtask::syscall::raw::syscall0(nr::CHECKPOINT_OPEN);
        if attempt != 0 {
            let (ok, value) = untouched();
            report(name, ok, value);
            libtask::syscall::exit(if ok { 0 } else { 1 });
        }
        (*page).depth = 1;
        forge(&mut *page);
        core::arch::asm!("ud2", options(noreturn))
    }
}

/// Attacks 5 and 6: a raw scope, sealed or not, whose first run corrupts
/// `rbx` between the open and the commit — the corruption of a register the
/// scope's caller relies on, which no fault reveals. Sealed, the kernel must
/// refuse the commit and fault the task inside the scope (`scope_check`),
/// so the fault server rolls it back and the re-run (no corruption)
/// commits: the check is ok with the attempt 1 and `rbx` intact. Unsealed,
/// the commit closes the scope on the first run: ok with attempt 0 — the
/// control, showing the seal is what catches it.
fn seal(sealed: bool) -> u64 {
    let name = if sealed { "forger:seal" } else { "forger:unsealed" };
    let (attempt, commit, rbx_kept): (u64, u64, u64);
    // SAFETY: one asm block opens the scope, may flip rbx, commits, and
    // restores rbx from its stack copy, so the compiler's rbx is intact
    // after it whatever happened. The rollback (sealed) returns to the
    // open with every register and the stack as they were there. rcx,
    // r11 (syscall), rax, rdx (the seal flag in, rbx out), rsi are declared
    // clobbered or outputs.
    unsafe {
        core::arch::asm!(
            "push rbx",
            "sub rsp, 8",
            "mov rbx, 0x5eed",
            "syscall",
            "mov rsi, rax",
            "test rax, rax",
            "jnz 2f",
            "xor rbx, 1",
            "2:",
            "mov eax, {commit}",
            "syscall",
            "mov rdx, rbx",
            "add rsp, 8",
            "pop rbx",
            commit = const nr::CHECKPOINT_COMMIT,
            inout("rax") nr::CHECKPOINT_OPEN => commit,
            inout("rdx") if sealed { libtask::abi::checkpoint::SEAL } else { 0 } => rbx_kept,
            out("rsi") attempt,
            out("rcx") _,
            out("r11") _,
        );
    }
    let depth_ok = libtask::checkpoint::kernel_depth() == 0;
    let ok = if sealed {
        attempt == 1 && commit == 0 && rbx_kept == 0x5eed && depth_ok
    } else {
        attempt == 0 && commit == 0 && rbx_kept == 0x5eed ^ 1 && depth_ok
    };
    println!("forger {name}: attempt {attempt}, commit {commit:#x}, rbx {rbx_kept:#x}, depth ok {depth_ok}");
    report(name, ok, attempt);
    if ok { 0 } else { 1 }
}
