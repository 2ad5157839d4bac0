//! `ipcfault`: a `call` whose client or server is killed, rolled back,
//! restarted or stopped while the call is in flight — the rows of the
//! table in `docs/ipc.md`, one qemu-test each (`qemu-tests/tests/ipc_faults.rs`,
//! which also holds the manifests and the kill plans).
//!
//! Every scenario is one server on endpoint `svc` and one or two clients.
//! A request labelled [`SLOW`] makes the server hold it (sleep [`HOLD_MS`])
//! before replying; the test's plan kills the client or the server at tick
//! 100, while the call is certainly in flight (the client blocked waiting
//! for the reply, the server holding the request). Retries are labelled
//! [`FAST`], which the server answers at once, so nothing is killed twice.
//!
//! Roles (`arg`):
//!
//! | arg | role |
//! |-----|------|
//! | 1 | server: `recv`, (hold), `reply`, forever; check `server:reply` per request (ok = the reply went through, value = the error code, 0 if none) |
//! | 2 | server whose request handling is a checkpoint scope (`recv`, hold, `reply` inside): a kill rolls it back; check `server:attempt` per scope run |
//! | 3 | server that exits (code 0) holding its first request, without replying |
//! | 4 | server that receives *outside* any scope, then holds and replies inside one: a kill rolls back a scope that does not hold the request; check `server:attempt` per scope run, `server:reply` |
//! | 5 | server that receives `abi::ipc::MAX_HELD` (4) requests in one scope: check `server:full` (value = the error code of one more `recv`, `POLL`), `server:buffer-reply` (value = the error code of a reply with a buffer in the scope), then replies to the last request (the only one it has a reply right for) and commits; check `server:committed` |
//! | 10 | client: `call(SLOW)`, check `client:first-call` (value = the error code, 0 for a reply), then `client:first-answer` (value = the request label the reply answers) or `client:generation` (value = the server's generation a `Restarted`/`Stopped` error carries); then `call(FAST)`, check `client:retry` (value = the request label the reply answers) |
//! | 11 | client: `call(SLOW)`, check `client:first-call` (and `client:first-answer` / `client:generation`), no retry |
//! | 12 | client whose call is a checkpoint scope: check `client:attempt` (value = attempt number) per run, then `client:reply` (value = the label the reply answers) |
//! | 13 | client queued behind another: sleeps 20 ms, `call(FAST)`, check `queued:reply` (value = the error code, 0 for a reply), and `queued:generation` on `Restarted`/`Stopped` |
//!
//! A reply carries the request's label in `words[1]` and the server's count
//! of requests received in `words[0]`, so a test can tell which request a
//! reply answers.
#![no_std]
#![no_main]

use libtask::checkpoint::checkpoint;
use libtask::ipc::{self, CallError, Cap, Message, Received, Timeout};
use libtask::{Error, Start, report, syscall};

libtask::entry!(main);

/// A request the server holds for [`HOLD_MS`] before replying.
const SLOW: u64 = 0x510;
/// A request the server answers at once.
const FAST: u64 = 0xfa5;
/// How long a [`SLOW`] request is held: the kill (tick 100) lands inside.
const HOLD_MS: u64 = 400;

fn main(start: Start) -> u64 {
    let Ok(svc) = ipc::cap("svc") else {
        report("ipcfault-caps", false, start.arg);
        return 1;
    };
    match start.arg {
        1 => server(svc),
        2 => scoped_server(svc),
        3 => exiting_server(svc),
        4 => half_scoped_server(svc),
        5 => full_server(svc),
        10 => client(svc, true),
        11 => client(svc, false),
        12 => scoped_client(svc),
        13 => queued_client(svc),
        other => {
            report("ipcfault-arg", false, other);
            2
        }
    }
}

/// The error code of a result, 0 for success.
fn code<T>(r: &Result<T, Error>) -> u64 {
    match r {
        Ok(_) => 0,
        Err(e) => *e as u64,
    }
}

fn request(label: u64) -> Message {
    Message { label, words: [label, 0, 0, 0] }
}

/// Receives one request, holds it if it is [`SLOW`] (and `hold`), replies.
fn serve_one(svc: Cap, served: &mut u64, hold: bool) -> Result<(), Error> {
    let got = ipc::recv(svc, Timeout::Forever)?;
    *served += 1;
    if got.msg.label == SLOW && hold {
        let _ = syscall::sleep(HOLD_MS);
    }
    ipc::reply(&Message { label: got.msg.label + 1, words: [*served, got.msg.label, 0, 0] })
}

fn server(svc: Cap) -> u64 {
    let mut served = 0;
    loop {
        let r = serve_one(svc, &mut served, true);
        report("server:reply", r.is_ok(), code(&r));
    }
}

fn scoped_server(svc: Cap) -> u64 {
    let mut served = 0;
    loop {
        let r = checkpoint(|attempt| {
            report("server:attempt", true, attempt.number);
            serve_one(svc, &mut served, attempt.number == 0)
        });
        let r = r.and_then(|r| r);
        report("server:reply", r.is_ok(), code(&r));
    }
}

fn half_scoped_server(svc: Cap) -> u64 {
    let mut served = 0;
    loop {
        let r = ipc::recv(svc, Timeout::Forever).and_then(|got| {
            served += 1;
            let held = checkpoint(|attempt| {
                report("server:attempt", true, attempt.number);
                if got.msg.label == SLOW && attempt.number == 0 {
                    let _ = syscall::sleep(HOLD_MS);
                }
                ipc::reply(&Message { label: got.msg.label + 1, words: [served, got.msg.label, 0, 0] })
            });
            held.and_then(|r| r)
        });
        report("server:reply", r.is_ok(), code(&r));
    }
}

fn full_server(svc: Cap) -> u64 {
    let r = checkpoint(|_| {
        let mut last = 0;
        for _ in 0..libtask::abi::ipc::MAX_HELD {
            last = ipc::recv(svc, Timeout::Forever)?.msg.label;
        }
        let more = ipc::recv(svc, Timeout::Poll);
        report("server:full", more.is_err(), code(&more));
        let buffered = ipc::reply_with(&Message::default(), &[1, 2, 3]);
        report("server:buffer-reply", buffered.is_err(), code(&buffered));
        ipc::reply(&Message { label: last + 1, words: [0, last, 0, 0] })
    });
    let r = r.and_then(|r| r);
    report("server:committed", r.is_ok(), code(&r));
    let _ = syscall::sleep(50);
    0
}

fn exiting_server(svc: Cap) -> u64 {
    let got = ipc::recv(svc, Timeout::Forever);
    report("server:received", got.is_ok(), got.map_or(0, |g| g.msg.label));
    let _ = syscall::sleep(50);
    0
}

/// The error code of a call to a server, 0 for a reply; reports the
/// generation a `Restarted`/`Stopped` error carries as check `what`.
fn call_code(r: &Result<Received, CallError>, what: &str) -> u64 {
    match r {
        Ok(_) => 0,
        Err(CallError::Restarted { generation }) => {
            report(what, true, *generation);
            Error::Restarted as u64
        }
        Err(CallError::Stopped { generation }) => {
            report(what, true, *generation);
            Error::Stopped as u64
        }
        Err(CallError::Other(e)) => *e as u64,
    }
}

fn client(svc: Cap, retry: bool) -> u64 {
    let first = ipc::call_server(svc, &request(SLOW));
    report("client:first-call", true, call_code(&first, "client:generation"));
    if let Ok(r) = first {
        report("client:first-answer", true, r.msg.words[1]);
    }
    if retry {
        let again = ipc::call(svc, &request(FAST));
        report("client:retry", again.is_ok(), again.map_or(0, |r| r.msg.words[1]));
    }
    0
}

fn scoped_client(svc: Cap) -> u64 {
    let r = checkpoint(|attempt| {
        report("client:attempt", true, attempt.number);
        ipc::call(svc, &request(if attempt.number == 0 { SLOW } else { FAST }))
    });
    let r = r.and_then(|r| r);
    report("client:reply", r.is_ok(), r.map_or(0, |r| r.msg.words[1]));
    0
}

fn queued_client(svc: Cap) -> u64 {
    let _ = syscall::sleep(20);
    let r = ipc::call_server(svc, &request(FAST));
    report("queued:reply", r.is_ok(), call_code(&r, "queued:generation"));
    0
}
