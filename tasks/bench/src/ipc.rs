//! The IPC round trip: `call` from one address space, `reply_recv` in
//! another.
//!
//! The client (arg 5) `call`s the endpoint `ping`; the server (arg 4) sits
//! in the server loop's one system call, `reply_recv`, which answers the
//! previous caller and waits for the next. One round trip is therefore two
//! system calls and two switches between address spaces: client → kernel
//! (rendezvous with the waiting server) → server → kernel (reply, then
//! receive again) → client. Messages are the label and four register words,
//! no buffer, the common case the register convention is built for.
//!
//! Both measured loops are asm against the raw register convention of
//! `abi::ipc`, not `libtask::ipc`'s `call`/`reply_recv`: the wrappers pass
//! the registers through a block in memory and decode the result, a few
//! dozen instructions that differ between build profiles and that no empty
//! loop could subtract. So the figure holds only the kernel's path and the
//! two loop bodies, which are the same length (four instructions and the
//! `syscall`). The client times rounds of [`ITERS`] calls and subtracts its
//! empty loop twice — once for its own loop body, once for the server's:
//! `(round - 2 × empty) / iterations`. Setting up and stopping (capability
//! lookup, the last call, the last reply) use `libtask::ipc`.
//!
//! A call with the label [`STOP`] ends that loop: the server answers it
//! with `reply` and turns into a request-scoped server
//! (`libtask::ipc::Server`: a checkpoint scope per request around `recv`,
//! a trivial handler and `reply`, the reply delivered by the commit), and
//! the client measures the same call loop against it —
//! `ipc_request_in_scope`: `(round - empty) / iterations`, the empty loop
//! subtracted once (the server's side is libtask's, not a matched asm
//! loop), so the figure is the whole cost of one request handled
//! exactly-once: call, open, recv, the first writes to the pages the
//! scope protected, reply held, commit delivering it, switches. A call
//! with the label [`STOP_SCOPED`] ends the server, which then exits: the
//! image ends with no server left waiting. Both phases use the same two
//! tasks, so the image's task table — which every switch scans — does not
//! grow for the second figure.

use crate::measure::{best, report_figure, timed};
use crate::syscall::ROUNDS;
use core::arch::asm;
use libtask::abi::ipc::WAIT_FOREVER;
use libtask::abi::syscall::nr;
use libtask::ipc::{Message, cap};
use libtask::report;

/// Calls per round.
const ITERS: u64 = 50;
/// Calls before measuring.
const WARMUP: u64 = 4;
/// The label that ends the server's `reply_recv` loop.
const STOP: u64 = 0x5709;
/// The label that ends the request-scoped server.
const STOP_SCOPED: u64 = 0x570a;
/// The endpoint, by its name in the manifest.
const ENDPOINT: &str = "ping";

/// Role 5: reports `bench:ipc_call_reply`.
pub fn client() {
    let Ok(ep) = cap(ENDPOINT) else { return report("bench:ipc_call_reply", false, 0) };
    // One checked call first: the loops below cannot see errors.
    if let Err(e) = libtask::ipc::call(ep, &Message::default()) {
        return report("bench:ipc_call_reply", false, e as u64);
    }
    let ep = ep.index();
    let empty = best(ROUNDS, || timed(|| call_loop::<false>(ep, ITERS)));
    call_loop::<true>(ep, WARMUP);
    let total = best(ROUNDS, || timed(|| call_loop::<true>(ep, ITERS)));
    let stop = Message { label: STOP, ..Message::default() };
    let stopped = libtask::ipc::call(libtask::ipc::Cap::from_index(ep), &stop);
    report_figure("bench:ipc_call_reply", if stopped.is_ok() { total } else { 0 }, 2 * empty, ITERS);
    // The request-scoped server: one checked call, then the same loop.
    if let Err(e) = libtask::ipc::call(libtask::ipc::Cap::from_index(ep), &Message::default()) {
        return report("bench:ipc_request_in_scope", false, e as u64);
    }
    call_loop::<true>(ep, WARMUP);
    let scoped = best(ROUNDS, || timed(|| call_loop::<true>(ep, ITERS)));
    let stop = Message { label: STOP_SCOPED, ..Message::default() };
    let stopped = libtask::ipc::call(libtask::ipc::Cap::from_index(ep), &stop);
    report_figure("bench:ipc_request_in_scope", if stopped.is_ok() { scoped } else { 0 }, empty, ITERS);
}

/// The `reply_recv` round trip alone (the two-CPU rows, `placed.rs`):
/// reports figure `figure` like `ipc_call_reply`, then ends its part of
/// the server's loop with [`STOP`].
pub fn client_only(figure: &str) {
    let Ok(ep) = cap(ENDPOINT) else { return report(figure, false, 0) };
    if let Err(e) = libtask::ipc::call(ep, &Message::default()) {
        return report(figure, false, e as u64);
    }
    let ep = ep.index();
    let empty = best(ROUNDS, || timed(|| call_loop::<false>(ep, ITERS)));
    call_loop::<true>(ep, WARMUP);
    let total = best(ROUNDS, || timed(|| call_loop::<true>(ep, ITERS)));
    let stop = Message { label: STOP, ..Message::default() };
    let stopped = libtask::ipc::call(libtask::ipc::Cap::from_index(ep), &stop);
    report_figure(figure, if stopped.is_ok() { total } else { 0 }, 2 * empty, ITERS);
}

/// Role 9: the server of [`client_only`]'s calls from `clients` callers,
/// one after the other: `reply_recv` until each has sent [`STOP`].
pub fn server_for(clients: u32) {
    let Ok(ep) = cap(ENDPOINT) else { return report("bench:ipc_server", false, 0) };
    for _ in 0..clients {
        serve(ep.index());
        if let Err(e) = libtask::ipc::reply(&Message::default()) {
            return report("bench:ipc_server", false, e as u64);
        }
    }
}

/// Role 4: answers calls until one carries [`STOP`].
pub fn server() {
    let Ok(ep) = cap(ENDPOINT) else { return report("bench:ipc_server", false, 0) };
    serve(ep.index());
    if let Err(e) = libtask::ipc::reply(&Message::default()) {
        report("bench:ipc_server", false, e as u64);
    }
    // Request-scoped until STOP_SCOPED (its reply, too, goes out at the commit).
    let mut server = libtask::ipc::Server::new(ep);
    let stop = core::cell::Cell::new(false);
    let mut handler = |req: &libtask::ipc::Request| {
        stop.set(req.msg.label == STOP_SCOPED);
        Message::default()
    };
    while !stop.get() {
        if let Err(e) = server.next(&mut handler) {
            return report("bench:ipc_server", false, e as u64);
        }
    }
}

/// The server loop: `reply_recv` until a message with label [`STOP`] came.
///
/// Register contract (abi::ipc): in `rax` = REPLY_RECV, `rdi` = the
/// endpoint capability (reset every time: a receive returns the badge in
/// it), `rsi` + `rdx`/`r10`/`r8`/`r9` = the reply (what the last message
/// left there), `r13` = 0 (no reply buffer; a receive sets it to the bytes
/// received, 0 here), `r15` = 0 (no receive buffer), `rbx` = the timeout
/// (WAIT_FOREVER). `rbx` cannot be an asm operand (LLVM reserves it), so it
/// is saved in a scratch register around the loop. The kernel writes rax,
/// rdi, rsi, rdx, r10, r8, r9, r13 (all declared) and `syscall` rcx, r11.
#[inline(never)]
fn serve(ep: u64) {
    // SAFETY: the register contract above; no memory is passed (both
    // buffer lengths 0), the stack is untouched.
    unsafe {
        asm!(
            "mov {saved}, rbx",
            "mov ebx, {forever}",
            "2:",
            "mov rdi, {ep}",
            "mov eax, {nr}",
            "syscall",
            "cmp rsi, {stop}",
            "jne 2b",
            "mov rbx, {saved}",
            saved = out(reg) _,
            ep = in(reg) ep,
            forever = const WAIT_FOREVER,
            nr = const nr::REPLY_RECV,
            stop = const STOP,
            out("rax") _, out("rdi") _, inout("rsi") 0u64 => _, out("rdx") _, out("r10") _, out("r8") _, out("r9") _,
            inout("r13") 0u64 => _, in("r15") 0u64,
            out("rcx") _, out("r11") _,
            options(nostack),
        );
    }
}

/// `n` (> 0) calls with label 0 and no buffers (`CALL = false`: the empty
/// loop, without the `syscall`).
///
/// Register contract: as [`serve`], with `rax` = CALL; `rsi` = the label,
/// 0 (the reply brings back the server's, also 0); `rbx` is not used by
/// `call`.
#[inline(never)]
fn call_loop<const CALL: bool>(ep: u64, n: u64) {
    if CALL {
        // SAFETY: the register contract above; no memory is passed.
        unsafe {
            asm!(
                "2:",
                "mov rdi, {ep}",
                "mov eax, {nr}",
                "syscall",
                "dec {n}",
                "jnz 2b",
                ep = in(reg) ep,
                n = inout(reg) n => _,
                nr = const nr::CALL,
                out("rax") _, out("rdi") _, inout("rsi") 0u64 => _, out("rdx") _, out("r10") _, out("r8") _, out("r9") _,
                inout("r13") 0u64 => _, in("r15") 0u64,
                out("rcx") _, out("r11") _,
                options(nostack),
            );
        }
    } else {
        // SAFETY: register-only loop; the registers written are declared.
        unsafe {
            asm!(
                "2:",
                "mov rdi, {ep}",
                "mov eax, {nr}",
                "dec {n}",
                "jnz 2b",
                ep = in(reg) ep,
                n = inout(reg) n => _,
                nr = const nr::CALL,
                out("rax") _, out("rdi") _,
                options(nostack),
            );
        }
    }
}
