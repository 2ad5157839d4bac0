//! Typed IPC: requests and replies as Rust values, postcard-encoded into
//! the message buffer, so protocols are not hand-encoded into words.
//!
//! A request is `serde::Serialize`; [`call`] encodes it (`postcard::to_slice`
//! into a stack buffer of `abi::ipc::MAX_BUFFER` bytes: no allocation),
//! sends it with the caller's `label` (free for the protocol: an operation
//! number, a version), and decodes the reply. The server side is [`recv`]
//! / [`reply_recv`], which hand out a [`Request`] whose body is the decoded
//! value *or* why it did not decode — a message from another task is
//! hostile input, and a malformed one is the server's to refuse
//! ([`reply_malformed`]), never a panic — and [`reply`].
//!
//! Reply labels: [`REPLY_OK`] with the encoded value, [`REPLY_MALFORMED`]
//! when the server could not decode the request (the caller gets
//! [`TypedError::Refused`]). The words of the message are not used (0).
//!
//! Limits: an encoded value must fit `MAX_BUFFER` bytes
//! ([`TypedError::TooLarge`]); values are decoded as owned
//! (`DeserializeOwned`: no borrowing from the buffer, which is reused).
//! The wire rules (one value exactly, errors as values) are
//! `abi::typed_msg`, host-tested there.

use super::{Cap, Received, Timeout};
use abi::ipc::{MAX_BUFFER, Message};
use abi::syscall::Error;
use core::fmt;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use abi::typed_msg::{DecodeError, REPLY_MALFORMED, REPLY_OK, decode};

/// Why a typed exchange failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypedError {
    /// The IPC system call failed.
    Ipc(Error),
    /// The value does not encode into `MAX_BUFFER` bytes.
    TooLarge,
    /// The bytes that arrived are not a value of the expected type.
    Malformed(DecodeError),
    /// The server could not decode our request (it replied
    /// [`REPLY_MALFORMED`]).
    Refused,
    /// The reply had a label that is neither [`REPLY_OK`] nor
    /// [`REPLY_MALFORMED`]: not a typed server.
    BadReply(u64),
}

impl fmt::Display for TypedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypedError::Ipc(e) => write!(f, "IPC failed: {e}"),
            TypedError::TooLarge => write!(f, "the value does not encode into {MAX_BUFFER} bytes"),
            TypedError::Malformed(d) => write!(f, "malformed message: {d}"),
            TypedError::Refused => f.write_str("the server could not decode the request"),
            TypedError::BadReply(l) => write!(f, "reply label {l} is not a typed reply"),
        }
    }
}

impl core::error::Error for TypedError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            TypedError::Ipc(e) => Some(e),
            TypedError::Malformed(d) => Some(d),
            _ => None,
        }
    }
}

impl From<Error> for TypedError {
    fn from(e: Error) -> TypedError {
        TypedError::Ipc(e)
    }
}

/// Encodes `value` into `buf`; the bytes used.
pub fn encode<'b, T: Serialize + ?Sized>(value: &T, buf: &'b mut [u8]) -> Result<&'b [u8], TypedError> {
    abi::typed_msg::encode(value, buf).map_err(|_| TypedError::TooLarge)
}

/// `CALL` with a typed request and reply: `label` travels as the message
/// label, `request` as its bytes.
pub fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
    cap: Cap,
    label: u64,
    request: &Req,
) -> Result<Resp, TypedError> {
    let mut out = [0u8; MAX_BUFFER];
    let mut back = [0u8; MAX_BUFFER];
    let bytes = encode(request, &mut out)?;
    let r = super::call_with(cap, &Message { label, words: [0; 4] }, bytes, &mut back)?;
    match r.msg.label {
        REPLY_OK => decode(&back[..r.len]).map_err(TypedError::Malformed),
        REPLY_MALFORMED => Err(TypedError::Refused),
        other => Err(TypedError::BadReply(other)),
    }
}

/// A request a server received.
#[derive(Debug)]
pub struct Request<Req> {
    /// The sender's badge.
    pub badge: u64,
    /// The caller's label.
    pub label: u64,
    /// The decoded request, or why it did not decode.
    pub body: Result<Req, DecodeError>,
}

impl<Req: DeserializeOwned> Request<Req> {
    fn from(r: Received, buf: &[u8]) -> Request<Req> {
        Request { badge: r.badge, label: r.msg.label, body: decode(&buf[..r.len.min(buf.len())]) }
    }
}

/// `RECV` of one typed request on endpoint `cap`.
pub fn recv<Req: DeserializeOwned>(cap: Cap, timeout: Timeout) -> Result<Request<Req>, Error> {
    let mut buf = [0u8; MAX_BUFFER];
    let r = super::recv_into(cap, &mut buf, timeout)?;
    Ok(Request::from(r, &buf))
}

/// `REPLY` with a typed value ([`REPLY_OK`]).
pub fn reply<Resp: Serialize + ?Sized>(response: &Resp) -> Result<(), TypedError> {
    let mut out = [0u8; MAX_BUFFER];
    let bytes = encode(response, &mut out)?;
    super::reply_with(&Message { label: REPLY_OK, words: [0; 4] }, bytes).map_err(TypedError::Ipc)
}

/// `REPLY` [`REPLY_MALFORMED`]: the request did not decode.
pub fn reply_malformed() -> Result<(), Error> {
    super::reply(&Message { label: REPLY_MALFORMED, words: [0; 4] })
}

/// `REPLY_RECV`: answers the pending caller with `response` (typed, or
/// `None` for [`REPLY_MALFORMED`]) and receives the next typed request.
pub fn reply_recv<Resp: Serialize + ?Sized, Req: DeserializeOwned>(
    cap: Cap,
    response: Option<&Resp>,
    timeout: Timeout,
) -> Result<Request<Req>, TypedError> {
    let mut out = [0u8; MAX_BUFFER];
    let mut buf = [0u8; MAX_BUFFER];
    let (label, bytes): (u64, &[u8]) = match response {
        Some(v) => (REPLY_OK, encode(v, &mut out)?),
        None => (REPLY_MALFORMED, &[]),
    };
    let r = super::reply_recv_with(cap, &Message { label, words: [0; 4] }, bytes, &mut buf, timeout)?;
    Ok(Request::from(r, &buf))
}
