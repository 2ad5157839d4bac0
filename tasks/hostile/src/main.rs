//! `hostile`: tasks that attack the kernel the way issue 12 found it could
//! be attacked, and a bystander that must stay on time meanwhile. One
//! binary, one role per manifest `arg` (`images/hostile.toml`,
//! `images/hostile-supervisor.toml`); each role reports what the kernel
//! did as `check` events, which `qemu-tests/tests/hostile.rs` asserts on.
//!
//! | arg | role | checks |
//! |---|---|---|
//! | 1 | bystander: a short spin, `progress`, a 3 ms sleep, [`BYSTANDER_REPORTS`] times | `progress` (value: the report's number) |
//! | 2 | in a scope, `MAP` 16 pages / `UNMAP` them [`LOOP_ROUNDS`] times; then `MAP`/`UNMAP` 64 pages at one address until refused (the `None` records the unmaps cannot drop pile up) | `map_unmap_loop` (ok: no error; value: rounds), `records_bounded` (ok: refused with `NoMemory`; value: rounds) |
//! | 3 | memory hog: `MAP` 4 MiB chunks until refused, holds them 300 ms | `hog` (ok: refused with `NoMemory` within the 32 MiB default quota; value: bytes) |
//! | 4 | after the hogs: in a scope, dirty a page and `ud2`: the fault server must still serve it | `served` (ok on the re-run; value: attempt) |
//! | 5 | ~25,000 page records in an outer scope, ~25,000 in an inner one, commit both | `big_commit` (ok: no error; value: rounds) |
//! | 6 | W^X through rollback: map a page `EXEC`, unmap it in a scope and fault; after the rollback, write it | `wx_rollback` (ok: the write faulted; value: attempt) |
//! | 7 | sets RFLAGS.AC with `popf`, then a copy-on-write fault, a system call and a timer tick with AC set (the kernel's `probe=smap` checks each entry); then RFLAGS.NT, a system call and a tick (the kernel must not `iretq` with NT set); `SIGNAL` with bit 63 | `smap_done`, `nt_done`, `signal_bit63` (ok: `BadArgument`) |
//! | 8 | FPU holder: a secret in `xmm0` and x87 `st0`, then 20 yields | `fpu_kept` (ok: both still hold it) |
//! | 9 | FPU snooper: 20 yields, reading `xmm0` and `st0` after each | `fpu_isolated` (ok: never the holder's secret) |
//! | 14 | `MAP` with flag bits the ABI does not define (`WRITE` plus bit 2, bit 63, every bit), each at one fixed address; then `MAP` `WRITE` there | `map_unknown_bits` ×3 (ok: `BadArgument`; value: the raw `rax`), `map_known_bits` (ok: mapped at that address, so the refused calls mapped nothing; value: the address) |
//! | 13 | a supervisor that panics at each of its first 7 starts (count in region `flag`), then serves | `crash_loop_over` |
//! | 10 | a supervisor on `faults` that panics on its first fault message (flag in region `flag`), then, restarted by the kernel, resumes the redelivered fault | `sup_scoped` (GET_REGS on a task of another fault endpoint: `Denied`), `sup_not_held` (GET_REGS on a running task: `BadTask`), `sup_resumed` |
//! | 11 | its client: `ud2` once (resumed past it) | `client_resumed` |
//! | 12 | a task of another fault endpoint: sleeps, exits | — |
#![no_std]
#![no_main]

use libtask::abi::layout::{PAGE_SIZE, USER_MAP_BASE};
use libtask::abi::syscall::{Error, MapFlags, nr};
use libtask::ipc::{self, Timeout};
use libtask::syscall::{self, raw};
use libtask::{Start, checkpoint, println, report, supervise};

libtask::entry!(main);

/// Progress reports of the bystander.
const BYSTANDER_REPORTS: u64 = 300;
/// Rounds of the 16-page map/unmap loop.
const LOOP_ROUNDS: u64 = 20_000;
/// Fixed map addresses of the roles that reuse one place.
const FIXED: u64 = USER_MAP_BASE + 0x0800_0000_0000;
/// Page records per scope for `big_commit` (each round leaves ~32).
const BIG_RECORDS: u64 = 25_000;
/// The FPU holder's secret.
const SECRET: u64 = 0x5ec2_e7f0_0d15_ea5e;

fn main(start: Start) -> u64 {
    match start.arg {
        1 => bystander(),
        2 => map_unmap(),
        3 => hog(),
        4 => served(),
        5 => big_commit(),
        6 => wx_rollback(),
        7 => smap(),
        8 => fpu_holder(),
        9 => fpu_snooper(),
        10 => supervisor(start.id),
        11 => client(),
        13 => crash_looping_supervisor(),
        14 => map_unknown_bits(),
        12 => {
            let _ = syscall::sleep(100);
        }
        _ => report("hostile-role", false, start.arg),
    }
    0
}

/// Burns `n` × 2 instructions in registers.
fn spin(n: u64) {
    // SAFETY: a register-only countdown; flags clobbered.
    unsafe { core::arch::asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) n.max(1) => _, options(nomem, nostack)) };
}

fn bystander() {
    for n in 1..=BYSTANDER_REPORTS {
        spin(100_000);
        report("progress", true, n);
        let _ = syscall::sleep(3);
    }
}

/// One `MAP` of `pages` at `hint` (0: anywhere) and its `UNMAP`.
fn map_unmap_once(hint: u64, pages: u64) -> Result<(), Error> {
    let p = syscall::map(hint, pages * PAGE_SIZE, MapFlags::WRITE)?;
    // SAFETY: `p` is the mapping just made, of `pages` pages, unused.
    unsafe { syscall::unmap(p, pages * PAGE_SIZE) }
}

fn map_unmap() {
    let looped = checkpoint(|_| {
        for round in 0..LOOP_ROUNDS {
            if let Err(e) = map_unmap_once(0, 16) {
                return (round, Some(e));
            }
        }
        (LOOP_ROUNDS, None)
    });
    let (rounds, error) = looped.unwrap_or((0, Some(Error::BadArgument)));
    println!("hostile map/unmap: {rounds} rounds of 16 pages in a scope, error {error:?}");
    report("map_unmap_loop", error.is_none(), rounds);
    // 64 pages at one address: the unmaps drop the `None` records of the
    // last 32 pages mapped only, so ~32 records stay per round.
    let piled = checkpoint(|_| {
        let mut round = 0;
        loop {
            match map_unmap_once(FIXED, 64) {
                Ok(()) => round += 1,
                Err(e) => return (round, e),
            }
            if round > 10_000 {
                return (round, Error::BadArgument); // never refused: wrong
            }
        }
    });
    let (rounds, error) = piled.unwrap_or((0, Error::BadArgument));
    println!("hostile map/unmap: records piled up for {rounds} rounds, then {error:?}");
    report("records_bounded", error == Error::NoMemory, rounds);
}

fn hog() {
    const CHUNK: u64 = 4 << 20;
    let mut bytes = 0;
    let error = loop {
        match syscall::map(0, CHUNK, MapFlags::WRITE) {
            Ok(_) => bytes += CHUNK,
            Err(e) => break e,
        }
        if bytes > 1 << 30 {
            break Error::BadArgument; // a GiB and never refused: wrong
        }
    };
    println!("hostile hog: {} MiB mapped, then {error:?}", bytes >> 20);
    report("hog", error == Error::NoMemory && bytes <= 32 << 20, bytes);
    let _ = syscall::sleep(300);
}

static mut DIRTY: [u8; 4096] = [0; 4096];

fn served() {
    let _ = syscall::sleep(100); // the hogs hold their memory by then
    // SAFETY: this task's own static, written by this thread only.
    unsafe { (&raw mut DIRTY).cast::<u8>().write_volatile(1) };
    let r = checkpoint(|attempt| {
        // SAFETY: as above; in a scope, the write is copy-on-write.
        unsafe { (&raw mut DIRTY).cast::<u8>().write_volatile(2) };
        if attempt.number == 0 {
            // SAFETY: a deliberate fault; the fault server rolls the scope back.
            unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
        }
        attempt.number
    });
    report("served", r == Ok(1), r.unwrap_or(0));
}

fn big_commit() {
    fn pile(records: u64) -> Result<u64, Error> {
        let mut rounds = 0;
        while rounds * 32 < records {
            map_unmap_once(FIXED, 64)?;
            rounds += 1;
        }
        Ok(rounds)
    }
    let r = checkpoint(|_| {
        let outer = pile(BIG_RECORDS)?;
        let inner = checkpoint(|_| pile(BIG_RECORDS)).unwrap_or(Err(Error::BadArgument))?;
        Ok::<u64, Error>(outer + inner)
    });
    let r = r.unwrap_or(Err(Error::BadArgument));
    println!("hostile big commit: {r:?}");
    report("big_commit", r.is_ok(), r.unwrap_or(0));
}

fn wx_rollback() {
    let page = FIXED;
    if syscall::map(page, PAGE_SIZE, MapFlags::EXEC).is_err() {
        report("wx_rollback", false, u64::MAX);
        return;
    }
    let _ = checkpoint(|attempt| {
        if attempt.number == 0 {
            // SAFETY: the page mapped above, nothing refers to it.
            let _ = unsafe { syscall::unmap(page as *mut u8, PAGE_SIZE) };
            // SAFETY: a deliberate fault; the scope is rolled back (the
            // page mapped again, executable and read-only).
            unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
        }
    });
    let r = checkpoint(|attempt| {
        if attempt.number == 0 {
            // SAFETY: a write to an executable, read-only page: it must
            // fault (and the scope is rolled back). If it does not, W^X is
            // broken and we say so.
            unsafe { (page as *mut u8).write_volatile(0xc3) };
            report("wx_rollback", false, 0);
        }
        attempt.number
    });
    if r == Ok(1) {
        report("wx_rollback", true, 1);
    }
}

fn smap() {
    // SAFETY: this task's own static, written by this thread only: the
    // write arms the page, so the scope's open write-protects it.
    unsafe { (&raw mut DIRTY).cast::<u8>().write_volatile(1) };
    let _ = checkpoint(|_| {
        let p = (&raw mut DIRTY).cast::<u8>();
        // SAFETY: sets RFLAGS.AC (ring 3 may; CR0.AM is clear, so it
        // changes nothing here), then: a store to a tracked page (a
        // copy-on-write page fault), `YIELD`, and a ~3 M instruction spin
        // (timer ticks), all with AC set; clears AC. Clobbers: rax, rcx,
        // r11 (syscall), the counter; uses the stack for pushfq/popfq.
        unsafe {
            core::arch::asm!(
                "pushfq",
                "or qword ptr [rsp], 0x40000",
                "popfq",
                "mov byte ptr [{p}], 2",
                "mov eax, {yield_}",
                "syscall",
                "mov {n}, 1500000",
                "2:",
                "dec {n}",
                "jnz 2b",
                "pushfq",
                "and qword ptr [rsp], -0x40001",
                "popfq",
                p = in(reg) p,
                n = out(reg) _,
                yield_ = const nr::YIELD,
                out("rax") _, out("rcx") _, out("r11") _,
            );
        }
    });
    report("smap_done", true, 0);
    // SAFETY: sets RFLAGS.NT (ring 3 may, with `popf`), makes a system
    // call and runs ~1 M instructions (a timer tick or so) with it set,
    // clears it. The kernel must not carry NT into its own `iretq` (#GP in
    // ring 0: `IA32_FMASK` clears it on `syscall`; exceptions and
    // interrupts clear it themselves). Clobbers: rax, rcx, r11, the
    // counter; uses the stack for pushfq/popfq.
    unsafe {
        core::arch::asm!(
            "pushfq",
            "or qword ptr [rsp], 0x4000",
            "popfq",
            "mov eax, {yield_}",
            "syscall",
            "mov {n}, 500000",
            "2:",
            "dec {n}",
            "jnz 2b",
            "pushfq",
            "and qword ptr [rsp], -0x4001",
            "popfq",
            n = out(reg) _,
            yield_ = const nr::YIELD,
            out("rax") _, out("rcx") _, out("r11") _,
        );
    }
    report("nt_done", true, 0);
    let bit63 = ipc::cap("note").and_then(|c| ipc::signal(c, 1 << 63));
    let bit62 = ipc::cap("note").and_then(|c| {
        ipc::signal(c, 1 << 62)?;
        ipc::wait(c, Timeout::Poll)
    });
    report("signal_bit63", bit63 == Err(Error::BadArgument) && bit62 == Ok(1 << 62), 0);
}

fn fpu_holder() {
    let secret = SECRET;
    // SAFETY: loads the secret into xmm0 and x87 st0 (FPU/SSE registers
    // only: no compiled code of this soft-float task uses them).
    unsafe {
        core::arch::asm!("movq xmm0, {s}", "fild qword ptr [{p}]", s = in(reg) secret, p = in(reg) &secret,
            out("xmm0") _, options(nostack, readonly));
    }
    for _ in 0..20 {
        syscall::yield_now();
    }
    let (xmm, mut st) = (0u64, 0u64);
    let xmm_out: u64;
    // SAFETY: reads xmm0; stores st0 as an integer into `st` and pops it.
    unsafe {
        core::arch::asm!("movq {x}, xmm0", "fistp qword ptr [{p}]", x = out(reg) xmm_out, p = in(reg) &mut st,
            options(nostack));
    }
    let _ = xmm;
    println!("hostile fpu holder: xmm0 {xmm_out:#x}, st0 {st:#x}");
    report("fpu_kept", xmm_out == SECRET && st == SECRET, xmm_out);
}

fn fpu_snooper() {
    let mut seen = false;
    let mut last = 0;
    for _ in 0..20 {
        syscall::yield_now();
        let mut st = 0u64;
        let xmm: u64;
        // SAFETY: reads xmm0; stores st0 (empty: the integer indefinite)
        // into `st` and pops.
        unsafe {
            core::arch::asm!("movq {x}, xmm0", "fistp qword ptr [{p}]", x = out(reg) xmm, p = in(reg) &mut st,
                options(nostack));
        }
        seen |= xmm == SECRET || st == SECRET;
        last = xmm;
    }
    report("fpu_isolated", !seen, last);
}

/// `MAP` with flag bits outside `MapFlags`: refused with `BadArgument`,
/// nothing mapped (the same address is free afterwards).
fn map_unknown_bits() {
    let hint = FIXED;
    for flags in [MapFlags::WRITE.bits() | 1 << 2, 1 << 63, u64::MAX] {
        // SAFETY: MAP adds memory at an address nothing uses (if the kernel
        // accepted the call at all); it touches none of ours.
        let raw = unsafe { raw::syscall3(nr::MAP, hint, PAGE_SIZE, flags) };
        println!("hostile flags: MAP with flags {flags:#x}: rax {raw:#x}");
        report("map_unknown_bits", raw == Error::BadArgument.to_raw(), raw);
    }
    let mapped = syscall::map(hint, PAGE_SIZE, MapFlags::WRITE);
    report("map_known_bits", mapped == Ok(hint as *mut u8), mapped.map_or(0, |p| p as u64));
}

/// The `flag` region's first word, through `REGION` (it survives restarts).
fn flag() -> *mut u64 {
    let cap = ipc::cap("flag").map(|c| c.index()).unwrap_or(u64::MAX);
    // SAFETY: REGION touches no memory of ours.
    let base = unsafe { raw::syscall1(nr::REGION, cap) };
    Error::decode(base).map(|b| b as *mut u64).unwrap_or(core::ptr::null_mut())
}

fn supervisor(me: u64) {
    let flag = flag();
    if flag.is_null() {
        report("sup_flag", false, 0);
        return;
    }
    let (client, other) = (me + 1, me + 2);
    // SAFETY: the region's first word, ours to use; shared regions are
    // never rolled back and survive our restart.
    let first_run = unsafe { flag.read_volatile() } == 0;
    if first_run {
        report("sup_scoped", supervise::get_regs(other).err() == Some(Error::Denied), other);
        report("sup_not_held", supervise::get_regs(client).err() == Some(Error::BadTask), client);
    }
    let Ok(faults) = ipc::cap("faults") else { return };
    loop {
        let Ok(m) = ipc::recv(faults, Timeout::Forever) else { return };
        let task = m.msg.words[0];
        // SAFETY: as above.
        if unsafe { flag.read_volatile() } == 0 {
            // SAFETY: as above.
            unsafe { flag.write_volatile(1) };
            panic!("hostile supervisor: panics holding the fault of task {task}");
        }
        let resumed = supervise::get_regs(task).and_then(|mut r| {
            r.rip += 2;
            supervise::set_regs(task, &r)?;
            supervise::resume(task)
        });
        report("sup_resumed", resumed.is_ok(), task);
    }
}

/// Starts the role 13 supervisor panics at (then it serves quietly).
const CRASH_LOOP_STARTS: u64 = 7;

/// A supervisor that panics at each of its first [`CRASH_LOOP_STARTS`]
/// starts, counted in region `flag` (it survives restarts): the kernel
/// restarts it each time, at once for the first few quick restarts, then
/// backing off, so the bystander (more urgent work is never starved by a
/// supervisor dying at every start) keeps its pace.
fn crash_looping_supervisor() {
    let flag = flag();
    if flag.is_null() {
        report("crash_loop_flag", false, 0);
        return;
    }
    // SAFETY: the region's first word, ours to use; shared regions are
    // never rolled back and survive our restart.
    let starts = unsafe { flag.read_volatile() } + 1;
    // SAFETY: as above.
    unsafe { flag.write_volatile(starts) };
    if starts <= CRASH_LOOP_STARTS {
        panic!("hostile supervisor: dies at start {starts}");
    }
    report("crash_loop_over", true, starts);
    let Ok(faults) = ipc::cap("faults") else { return };
    while ipc::recv(faults, Timeout::Forever).is_ok() {}
}

fn client() {
    let _ = syscall::sleep(30);
    // SAFETY: a deliberate fault; the supervisor resumes us after it.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    report("client_resumed", true, 0);
}
