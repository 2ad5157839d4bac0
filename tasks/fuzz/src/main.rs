//! `fuzz`: a seeded in-guest system call fuzzer. It makes `calls` system
//! calls, each with a number drawn from every call of `abi::syscall::nr`
//! (and a few past the last), hostile argument values (0, 1, -1, kernel
//! and non-canonical addresses, unaligned and page-straddling pointers,
//! unmapped user memory, huge lengths, capability indices it does not
//! hold, random words) in every argument register, and random values in
//! the other registers a call may read (`rbx`, `r12`–`r15`). It then
//! reports the check `fuzz:done` (value = calls made) and exits 0: if the
//! kernel survived every call, the run shuts down cleanly.
//!
//! `arg` = `calls | seed << 40` (calls: the low 40 bits; seed: 24 bits).
//! `images/fuzz.toml` runs 10 M calls (`cargo xtask run --image fuzz`),
//! `images/fuzz-short.toml` 100 k (in `cargo xtask test`); the ignored
//! qemu-test `fuzz_millions` takes `REWIND_FUZZ_CALLS` / `REWIND_FUZZ_SEED`.
//!
//! What is kept out, so that the fuzzer keeps running (each is the task
//! harming itself, not the kernel; the kernel's checks for them are the
//! same argument checks fuzzed everywhere else):
//! * `EXIT` and `PANIC` end the task: replaced by `NULL`;
//! * calls that may block forever get a bounded time: `SLEEP` ≤ 2 ms, the
//!   `rbx` timeout of `RECV`/`WAIT`/`REPLY_RECV` is `POLL` or 1–2 ms,
//!   `FUTEX_WAIT`'s 1–2 ms; `SEND`/`CALL` (no timeout) never name a
//!   capability the task holds (they get the wrong-kind and invalid
//!   indices: nobody would ever receive);
//! * pointers into the task's own stack and statics are never passed
//!   (the kernel would rightly write there): pointer arguments point into
//!   a scratch buffer, its edges, read-only text, guard pages, unmapped or
//!   kernel memory;
//! * `UNMAP` gets the same pointers minus the scratch buffer, and a `MAP`
//!   that succeeds is unmapped at once (memory is not hoarded);
//! * `REPORT` and `WRITE` (console, events) get at most 16 bytes.
//!
//! With the `supervisor` capability (`images/fuzz-supervisor.toml`) the
//! `TASK_CTL` operations are fuzzed too, on task ids other than its own and
//! the fault server's (arg bit 63 of the seed field: see `main`).
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use libtask::abi::layout::{SHARED_BASE, USER_END, USER_IMAGE_BASE, USER_MAP_BASE, USER_STACK_TOP};
use libtask::abi::syscall::nr;
use libtask::{Start, println, report};

libtask::entry!(main);

const SCRATCH: usize = 64 * 1024;
#[repr(C, align(4096))]
struct Scratch(UnsafeCell<[u8; SCRATCH]>);
// SAFETY: one thread; the bytes are only ever written by the kernel (as
// a system call's output buffer) and never read as anything but bytes.
unsafe impl Sync for Scratch {}
static SCRATCH_BUF: Scratch = Scratch(UnsafeCell::new([0; SCRATCH]));

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Pointers the kernel may be given: never into our stack or statics
/// (but the scratch buffer).
fn pointer(r: &mut Rng, unmap: bool) -> u64 {
    let scratch = SCRATCH_BUF.0.get() as u64;
    let choices = [
        0,
        1,
        8,
        u64::MAX,
        u64::MAX - 7,
        USER_END - 8,
        USER_END,
        0xffff_8000_0000_0000,
        0xffff_ffff_8000_0000,
        0x0000_8000_0000_1000,
        0x7fff_ffff_ffff_f000,
        USER_MAP_BASE + 0x4000_0000 + r.below(64) * 4096,
        SHARED_BASE + (r.below(4) << 30) + r.below(8) * 4096,
        // Not for UNMAP (ours): the text (read-only) and the stack's guard
        // page (the manifest's 64 KiB stack).
        USER_IMAGE_BASE,
        USER_IMAGE_BASE + 0x10,
        USER_STACK_TOP - 64 * 1024 - 4096,
    ];
    let n = choices.len() as u64;
    if unmap {
        return choices[r.below(n - 3) as usize];
    }
    match r.below(4) {
        0 | 1 => scratch + r.below(SCRATCH as u64),
        2 => scratch + SCRATCH as u64 - r.below(16), // straddling its end
        _ => choices[r.below(n) as usize],
    }
}

/// A hostile word for any argument.
fn word(r: &mut Rng) -> u64 {
    match r.below(8) {
        0 => [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 63, 64, 255, 256, 4095, 4096, 4097][r.below(17) as usize],
        1 => [u64::MAX, u64::MAX - 1, i64::MAX as u64, i64::MIN as u64, u32::MAX as u64, 1 << 32, 1 << 47, 1 << 63]
            [r.below(8) as usize],
        2 | 3 => pointer(r, false),
        4 => r.below(1 << 20),
        _ => r.next(),
    }
}

/// Capability indices for SEND/CALL: none the task holds as a usable
/// endpoint (see the module note).
fn foreign_cap(r: &mut Rng, held: u64) -> u64 {
    [held, held + 1, 16, 17, 255, 1 << 32, u64::MAX][r.below(7) as usize]
}

struct Call {
    nr: u64,
    a: [u64; 6],
    /// rbx, r12, r13, r14, r15.
    x: [u64; 5],
}

/// One call; returns rax.
fn syscall(c: &mut Call) -> u64 {
    let ret: u64;
    // SAFETY: the call's pointer arguments point only where `pointer`
    // allows (scratch, or memory the kernel must refuse); every register a
    // call may write is declared an output; rbx is saved and restored
    // around it (LLVM reserves it); the stack is not touched by the kernel.
    unsafe {
        core::arch::asm!(
            "push rbx",
            "mov rbx, {bx}",
            "syscall",
            "pop rbx",
            bx = in(reg) c.x[0],
            inlateout("rax") c.nr => ret,
            inlateout("rdi") c.a[0] => _,
            inlateout("rsi") c.a[1] => _,
            inlateout("rdx") c.a[2] => _,
            inlateout("r10") c.a[3] => _,
            inlateout("r8") c.a[4] => _,
            inlateout("r9") c.a[5] => _,
            inlateout("r12") c.x[1] => _,
            inlateout("r13") c.x[2] => _,
            inlateout("r14") c.x[3] => _,
            inlateout("r15") c.x[4] => _,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

fn main(start: Start) -> u64 {
    let calls = start.arg & ((1 << 40) - 1);
    let seed = start.arg >> 40;
    let supervisor = libtask::ipc::cap("supervisor").is_ok();
    let me = start.id;
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    println!("fuzz {me}: {calls} calls, seed {seed}, supervisor {supervisor}");
    let held = 3; // the manifest's capabilities: endpoint, notification, region (+ supervisor)
    let mut errors = 0u64;
    for i in 0..calls {
        let mut c = Call { nr: r.below(nr::COUNT + 3), a: [0; 6], x: [0; 5] };
        for a in c.a.iter_mut() {
            *a = word(&mut r);
        }
        for x in c.x.iter_mut() {
            *x = word(&mut r);
        }
        // Pointer/length pairs of buffers the kernel writes: keep lengths
        // small enough that a scratch pointer stays mostly inside.
        match c.nr {
            nr::EXIT | nr::PANIC => c.nr = nr::NULL,
            nr::SLEEP => c.a[0] %= 3,
            nr::WRITE | nr::REPORT => c.a[1] %= 17,
            nr::RECV | nr::WAIT | nr::REPLY_RECV => {
                c.x[0] = [libtask::abi::ipc::POLL, 1, 2][r.below(3) as usize];
            }
            nr::SEND | nr::CALL => c.a[0] = foreign_cap(&mut r, held),
            nr::FUTEX_WAIT => c.a[2] = 1 + r.below(2),
            nr::UNMAP => c.a[0] = pointer(&mut r, true),
            nr::TASK_CTL if supervisor => {
                // Never ourselves nor the fault server (task ids from 1 in
                // manifest order: the server is 1 in the supervisor image).
                c.a[0] = r.below(24);
                c.a[1] = [2 + r.below(8), 0, 99, u64::MAX, 1 << 32][r.below(5) as usize];
                if c.a[1] == me || c.a[1] == 1 {
                    c.a[1] = 0;
                }
            }
            _ => {}
        }
        // The timeout register also matters to CALL/REPLY: bound it.
        if matches!(c.nr, nr::CALL | nr::REPLY) {
            c.x[0] = libtask::abi::ipc::POLL;
        }
        let (nr_, a1) = (c.nr, c.a[1]);
        let ret = syscall(&mut c);
        if nr_ == nr::MAP && libtask::abi::syscall::Error::decode(ret).is_ok() {
            // Give it back at once (`a1` is the length asked for).
            // SAFETY: UNMAP of the pages this MAP just returned, which
            // nothing of ours uses.
            let _ = unsafe { libtask::syscall::raw::syscall2(nr::UNMAP, ret, a1.max(1)) };
        }
        if libtask::abi::syscall::Error::decode(ret).is_err() {
            errors += 1;
        }
        if i % 1_000_000 == 999_999 {
            println!("fuzz {me}: {} calls, {errors} refused", i + 1);
        }
    }
    // Close any scope left open, so the exit is an ordinary one.
    while libtask::abi::syscall::Error::decode(
        // SAFETY: CHECKPOINT_COMMIT touches no memory of ours.
        unsafe { libtask::syscall::raw::syscall0(nr::CHECKPOINT_COMMIT) },
    )
    .is_ok()
    {}
    println!("fuzz {me}: done, {calls} calls, {errors} refused");
    report("fuzz:done", true, calls);
    0
}
