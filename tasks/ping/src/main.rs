//! `ping`: IPC ping-pong between two tasks of one binary, told apart by
//! their manifest `arg` (`images/ipc.toml`, `images/ipc-fair.toml`).
//!
//! Why one binary: both sides must agree on the message formulas below,
//! and one source file is the simplest way to keep them agreeing.
//!
//! * `arg = 1`, the **ponger** (server): holds `ping:recv` and `bell:wait`.
//!   It answers every call with [`answer`] of the request, and a call with
//!   a buffer with the buffer's bytes reversed. It waits for the bell
//!   before serving, and stops after the [`STOP`] call.
//! * `arg = 2`, the **pinger** (client): holds `ping:send`, `quiet:recv`
//!   (an endpoint nobody sends on) and `bell:signal`. It first checks
//!   timeouts (`recv` on `quiet` with `Poll` and with 20 ms must both fail
//!   with `Timeout`, the second after ≥ 20 ticks: check `recv-timeout`),
//!   rings the bell (`signal` 0b101; the ponger checks it `wait`s exactly
//!   those bits: check `notification`), then makes [`ROUNDS`] calls, every
//!   [`BUFFER_EVERY`]-th with a 64-byte buffer, and verifies every reply.
//!
//! Checks: `ping-pong` (pinger; ok when every reply was right; value = the
//! number of correct round trips), `ipc-round-trip` (pinger; value = mean
//! TSC ticks per word-only round trip: guest instructions under icount),
//! `pong-served` (ponger; value = calls answered).
//!
//! Fair service (`images/ipc-fair.toml`):
//!
//! * `arg = 3`, the **fair server**: holds `fair:recv`, runs more urgently
//!   than its clients, answers [`FAIR_CALLS`] × [`FAIR_CLIENTS`] calls
//!   (reply with [`answer`]) recording the badge of each caller in the
//!   order it served them, then reports that order: one check `fair-served`
//!   per call, in order, value = the caller's badge.
//! * `arg = 4`, a **fair client** (`count = 3`, one priority): makes
//!   [`FAIR_CALLS`] calls on `fair` back to back, nothing in between, and
//!   verifies every reply: check `fair-calls` (ok when all were right;
//!   value = correct replies).
#![no_std]
#![no_main]

use libtask::ipc::{self, Message, Timeout};
use libtask::{Start, println, report, syscall};

libtask::entry!(main);

/// Round trips the pinger makes.
const ROUNDS: u64 = 10_000;
/// Every this many rounds, the call carries a buffer.
const BUFFER_EVERY: u64 = 100;
/// Label of the last call: the ponger answers it and exits.
const STOP: u64 = 0x5709;
/// Label of an ordinary request.
const PING: u64 = 0x9196;
/// Calls each fair client makes.
const FAIR_CALLS: u64 = 30;
/// Fair clients in `images/ipc-fair.toml`.
const FAIR_CLIENTS: u64 = 3;

/// The reply to request `m`: label + 1, each word mixed with its index.
fn answer(m: &Message) -> Message {
    let mut words = m.words;
    for (i, w) in words.iter_mut().enumerate() {
        *w = w.rotate_left(7) ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1));
    }
    Message { label: m.label + 1, words }
}

/// The request of round `i`.
fn request(i: u64) -> Message {
    Message { label: PING, words: [i, !i, i.wrapping_mul(0x1234_5678_9abc_def1), u64::MAX - i * 3] }
}

fn main(start: Start) -> u64 {
    match start.arg {
        1 => ponger(),
        2 => pinger(),
        3 => fair_server(),
        4 => fair_client(),
        other => {
            report("ping-arg", false, other);
            2
        }
    }
}

fn ponger() -> u64 {
    let (Ok(ep), Ok(bell)) = (ipc::cap("ping"), ipc::cap("bell")) else {
        report("ponger-caps", false, 0);
        return 1;
    };
    let bits = ipc::wait(bell, Timeout::Forever);
    report("notification", bits == Ok(0b101), bits.unwrap_or(0));
    let mut buf = [0u8; 256];
    let mut served = 0u64;
    let mut next = ipc::recv_into(ep, &mut buf, Timeout::Forever);
    loop {
        let got = match next {
            Ok(got) => got,
            Err(e) => {
                println!("ponger: recv failed: {}", e.name());
                report("pong-served", false, served);
                return 1;
            }
        };
        served += 1;
        let reply = answer(&got.msg);
        let mut out = [0u8; 256];
        let n = got.len;
        for (o, b) in out[..n].iter_mut().zip(buf[..n].iter().rev()) {
            *o = *b;
        }
        if got.msg.label == STOP {
            let _ = ipc::reply(&reply);
            report("pong-served", true, served);
            return 0;
        }
        next = ipc::reply_recv_with(ep, &reply, &out[..n], &mut buf, Timeout::Forever);
    }
}

fn check_timeouts() -> bool {
    let Ok(quiet) = ipc::cap("quiet") else { return false };
    let poll = ipc::recv(quiet, Timeout::Poll);
    let before = syscall::ticks();
    let timed = ipc::recv(quiet, Timeout::Ms(20));
    let waited = syscall::ticks() - before;
    let ok = poll == Err(libtask::Error::Timeout) && timed == Err(libtask::Error::Timeout) && waited >= 20;
    report("recv-timeout", ok, waited);
    ok
}

fn pinger() -> u64 {
    let (Ok(ep), Ok(bell)) = (ipc::cap("ping"), ipc::cap("bell")) else {
        report("pinger-caps", false, 0);
        return 1;
    };
    let timeouts_ok = check_timeouts();
    if ipc::signal(bell, 0b101).is_err() {
        report("notification-signal", false, 0);
    }
    let mut good = 0u64;
    let mut first_bad = None;
    let mut word_ticks = 0u64;
    let mut word_rounds = 0u64;
    for i in 0..ROUNDS {
        let req = request(i);
        let ok = if i % BUFFER_EVERY == 0 {
            let mut send = [0u8; 64];
            for (j, b) in send.iter_mut().enumerate() {
                *b = (i as u8).wrapping_add(j as u8 * 3);
            }
            let mut back = [0u8; 64];
            match ipc::call_with(ep, &req, &send, &mut back) {
                Ok(r) => r.msg == answer(&req) && r.len == 64 && back.iter().eq(send.iter().rev()),
                Err(_) => false,
            }
        } else {
            let t0 = syscall::clock();
            let r = ipc::call(ep, &req);
            word_ticks += syscall::clock() - t0;
            word_rounds += 1;
            matches!(r, Ok(r) if r.msg == answer(&req) && r.badge == 0 && r.len == 0)
        };
        if ok {
            good += 1;
        } else if first_bad.is_none() {
            first_bad = Some(i);
        }
    }
    let stop = Message { label: STOP, words: [0; 4] };
    let stopped = matches!(ipc::call(ep, &stop), Ok(r) if r.msg.label == STOP + 1);
    let per_round = word_ticks / word_rounds.max(1);
    println!("pinger: {good}/{ROUNDS} round trips correct, {per_round} TSC ticks per word-only round trip");
    if let Some(i) = first_bad {
        println!("pinger: first wrong reply in round {i}");
    }
    report("ipc-round-trip", true, per_round);
    let ok = good == ROUNDS && stopped && timeouts_ok;
    report("ping-pong", ok, good);
    if ok { 0 } else { 1 }
}

fn fair_server() -> u64 {
    let Ok(ep) = ipc::cap("fair") else {
        report("fair-caps", false, 0);
        return 1;
    };
    let mut order = [0u64; (FAIR_CALLS * FAIR_CLIENTS) as usize];
    let mut next = ipc::recv(ep, Timeout::Forever);
    for k in 0..order.len() {
        let got = match next {
            Ok(got) => got,
            Err(e) => {
                println!("fair server: recv failed after {k} calls: {}", e.name());
                report("fair-served", false, k as u64);
                return 1;
            }
        };
        order[k] = got.badge;
        let reply = answer(&got.msg);
        if k + 1 == order.len() {
            let _ = ipc::reply(&reply);
            break;
        }
        next = ipc::reply_recv(ep, &reply, Timeout::Forever);
    }
    // Reported after the last reply, so that the reports change nothing in
    // the order they report.
    for badge in order {
        report("fair-served", true, badge);
    }
    0
}

fn fair_client() -> u64 {
    let Ok(ep) = ipc::cap("fair") else {
        report("fair-caps", false, 0);
        return 1;
    };
    let mut good = 0;
    for i in 0..FAIR_CALLS {
        let req = request(i);
        if matches!(ipc::call(ep, &req), Ok(r) if r.msg == answer(&req)) {
            good += 1;
        }
    }
    report("fair-calls", good == FAIR_CALLS, good);
    if good == FAIR_CALLS { 0 } else { 1 }
}
