//! The wire format of typed IPC (`libtask::ipc::typed`): a request or
//! reply is one Rust value, postcard-encoded into the message buffer.
//!
//! Here rather than in libtask so that both ends of a protocol — tasks,
//! and host tools that decode captured messages — share one definition,
//! and so that the decoding rules are host-tested (`cargo test -p
//! rewind-abi`): a message must decode to *exactly* one value (trailing
//! bytes are malformed, not ignored), anything else is a [`DecodeError`]
//! value, never a panic, whatever another task sent.

use crate::ipc::MAX_BUFFER;
use core::fmt;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reply label: the request decoded; the bytes are the reply value.
pub const REPLY_OK: u64 = 0;
/// Reply label: the request did not decode (no bytes).
pub const REPLY_MALFORMED: u64 = 1;

/// Why bytes did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Bytes that arrived.
    pub len: usize,
    /// postcard's reason.
    pub reason: postcard::Error,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes did not decode: {}", self.len, self.reason)
    }
}

impl core::error::Error for DecodeError {}

/// The value does not encode into the buffer (at most [`MAX_BUFFER`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge;

/// Encodes `value` into `buf` (at most [`MAX_BUFFER`] bytes of it used);
/// the bytes written.
pub fn encode<'b, T: Serialize + ?Sized>(value: &T, buf: &'b mut [u8]) -> Result<&'b [u8], TooLarge> {
    let n = buf.len().min(MAX_BUFFER);
    postcard::to_slice(value, &mut buf[..n]).map(|b| &*b).map_err(|_| TooLarge)
}

/// Decodes exactly one `T` from `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(DecodeError { len: bytes.len(), reason: postcard::Error::DeserializeBadEncoding }),
        Err(reason) => Err(DecodeError { len: bytes.len(), reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Op {
        Deposit { account: (u64, u64), amount: u64 },
        Name([u8; 4]),
        Stop,
    }

    #[test]
    fn values_round_trip() {
        let mut buf = [0u8; MAX_BUFFER];
        for op in [Op::Deposit { account: (0x2000_0000_0080, 7), amount: 5 }, Op::Name(*b"abcd"), Op::Stop] {
            let bytes = encode(&op, &mut buf).unwrap().to_vec();
            assert_eq!(decode::<Op>(&bytes), Ok(op));
        }
        assert_eq!(decode::<()>(&[]), Ok(()));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let mut buf = [0u8; MAX_BUFFER];
        let good = encode(&Op::Deposit { account: (1, 2), amount: 3 }, &mut buf).unwrap().to_vec();
        // Truncated anywhere, an unknown variant, varints that never end,
        // trailing bytes: each an error naming the length.
        for cut in 0..good.len() {
            assert_eq!(decode::<Op>(&good[..cut]).unwrap_err().len, cut);
        }
        assert!(decode::<Op>(&[9]).is_err(), "no variant 9");
        assert!(decode::<Op>(&[0xff, 0xff, 0xff]).is_err());
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode::<Op>(&long).unwrap_err().reason, postcard::Error::DeserializeBadEncoding);
        // Every 2-byte message decodes or errs; none panics.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = decode::<Op>(&[a, b]);
            }
        }
    }

    #[test]
    fn too_large_values_are_refused() {
        let mut buf = [0u8; 2 * MAX_BUFFER];
        assert_eq!(encode(&[7u8; MAX_BUFFER][..], &mut buf), Err(TooLarge), "length prefix + 1 KiB");
        assert!(encode(&[7u8; MAX_BUFFER - 2][..], &mut buf).is_ok());
        assert_eq!(encode(&Op::Stop, &mut [0u8; 0]), Err(TooLarge));
    }
}
