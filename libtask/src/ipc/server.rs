//! Transactional servers: each request handled inside a checkpoint scope,
//! replied at the scope's commit — and clients that learn when a server
//! is gone instead of waiting forever.
//!
//! ```ignore
//! let mut store = Store::default();           // private: rolled back with a scope
//! libtask::ipc::serve(ep, |req| store.apply(req.msg))?;
//! ```
//!
//! [`Server::next`] is one request: a checkpoint scope in which `recv`
//! takes the request, the handler computes the reply, `reply` hands it to
//! the kernel, and the scope's commit delivers it. The kernel holds the
//! request for the scope (`docs/ipc.md`, "Requests in a scope"): if the
//! task faults, is killed or hangs anywhere in there — blocked in `recv`
//! included — the fault server rolls the scope back, the kernel queues the
//! request again first in line and forgets any reply the failed run made,
//! and the re-run receives the same request from the same caller. So the
//! handler's effects on *private* memory happen exactly once, and every
//! call is answered exactly once. What is not rolled back — shared
//! regions, messages the handler sent to other tasks, the console — the
//! handler must make idempotent itself (a per-request id it records in
//! the same locked data, as `tasks/kv` does), or repair after a poisoned
//! lock, as with any scope.
//!
//! Why the reply travels with the commit rather than before it: a reply
//! delivered while the scope is still open could be followed by a fault
//! before the commit, and the re-run would answer again.

use super::{Cap, Message, Received, Timeout, ipc_detail, recv, reply};
use crate::checkpoint::{Attempt, checkpoint, repeat};
use abi::syscall::{Error, nr};
use core::ops::ControlFlow;

/// A request, as the handler sees it.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// The caller's badge (from its capability: who is calling).
    pub badge: u64,
    pub msg: Message,
    /// Which run of this request's scope this is (a retry after a fault
    /// sees the same request with `number > 0`).
    pub attempt: Attempt,
}

/// What [`Server::next`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Answered: the reply went out at the commit.
    Replied,
    /// The caller was gone before the reply (it faulted or was stopped):
    /// nothing to answer; the request's effects stand.
    CallerGone,
}

/// A request loop on one endpoint.
pub struct Server {
    ep: Cap,
}

impl Server {
    pub const fn new(ep: Cap) -> Server {
        Server { ep }
    }

    /// Receives one request and handles it in a checkpoint scope; the reply
    /// is delivered when the scope commits. Errors: the endpoint's (a bad
    /// capability, `NoMemory` when `abi::ipc::MAX_HELD` requests are held
    /// by enclosing scopes), or the scope's (`checkpoint`'s).
    pub fn next(&mut self, handler: &mut impl FnMut(&Request) -> Message) -> Result<Served, Error> {
        let ep = self.ep;
        checkpoint(|attempt| one(ep, handler, attempt))?
    }

    /// Serves requests until `done()` — asked inside each request's scope,
    /// after its handler — says so, each request in a checkpoint scope of
    /// its own as with [`Server::next`], chained (`checkpoint::repeat`):
    /// one request's commit (which delivers its reply) and the next one's
    /// open are one system call, so the server is inside a scope from the
    /// first `recv` to the last reply — a fault, kill or hang *between*
    /// two requests is rolled back like one inside a request, never a
    /// restart that loses the private store. Errors: as [`Server::next`]'s;
    /// the scope of the request whose `recv` or `reply` failed commits
    /// (there was no fault to roll back) and the error is returned.
    pub fn serve_until(
        &mut self,
        handler: &mut impl FnMut(&Request) -> Message,
        mut done: impl FnMut() -> bool,
    ) -> Result<(), Error> {
        let ep = self.ep;
        repeat(|attempt| match one(ep, handler, attempt) {
            Ok(_) if done() => ControlFlow::Break(Ok(())),
            Ok(_) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(Err(e)),
        })?
    }
}

/// One request, inside its scope: `recv`, the handler, `reply`.
fn one(ep: Cap, handler: &mut impl FnMut(&Request) -> Message, attempt: Attempt) -> Result<Served, Error> {
    let got: Received = recv(ep, Timeout::Forever)?;
    let answer = handler(&Request { badge: got.badge, msg: got.msg, attempt });
    match reply(&answer) {
        Ok(()) => Ok(Served::Replied),
        Err(Error::NoCaller) => Ok(Served::CallerGone),
        Err(e) => Err(e),
    }
}

/// Serves endpoint `ep` forever with `handler`, one scope per request,
/// chained ([`Server::serve_until`]); returns only the error that stopped
/// it.
pub fn serve(ep: Cap, mut handler: impl FnMut(&Request) -> Message) -> Error {
    match Server::new(ep).serve_until(&mut handler, || false) {
        Ok(()) => unreachable!("`done` never says so"),
        Err(e) => e,
    }
}

/// Why a call to a server failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The server was restarted from its image while it held the request
    /// (now generation `generation`): the request is lost, its effects on
    /// the server's private memory with it.
    Restarted { generation: u64 },
    /// The server ended for good (stopped, or exited) — the call was in
    /// flight or still queued — or no task may receive on the endpoint any
    /// more. `generation`: the instance that ended.
    Stopped { generation: u64 },
    /// Any other error of `call` (`BadTask`: the server lost the request
    /// in a rollback of a scope that did not hold it; a bad capability ...).
    Other(Error),
}

/// `CALL` that tells a server's restart or end apart, with its generation.
pub fn call_server(cap: Cap, msg: &Message) -> Result<Received, CallError> {
    ipc_detail(nr::CALL, cap.index(), msg, &[], &mut [], Timeout::Forever).map(|(_, r)| r).map_err(|(e, rdx)| match e {
        Error::Restarted => CallError::Restarted { generation: rdx },
        Error::Stopped => CallError::Stopped { generation: rdx },
        e => CallError::Other(e),
    })
}
