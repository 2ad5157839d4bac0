//! A postcard writer for the guest's hot paths: the same bytes as
//! `postcard::to_slice`, written straight into the output.
//!
//! Postcard's own serializer encodes each varint into a scratch array and
//! appends it with `copy_from_slice` — a `memcpy` call per field, ~20 guest
//! instructions for a one-byte integer. A fault report is ~150 fields, so
//! the fault server's report and the kernel's own events are encoded with
//! this serializer instead: each byte is one bounds-checked store, and
//! serde's derive inlines the whole event into one function.
//!
//! It implements the postcard format for what the event schema uses
//! (`abi::event`): integers (varints, zigzag for signed ones), `bool`,
//! strings and byte slices (length-prefixed), options, enums (variant index
//! as a varint), structs, tuples, arrays, sequences of known length. What
//! the schema does not use — floats, `char`, maps, 128-bit integers,
//! `collect_str` — is refused (`SerializeBufferFull` is never claimed for
//! those: `SerdeSerCustom`). The tests compare it with postcard on every
//! kind of event.
//!
//! Usage: `wire::to_slice(&value, &mut buf)?` → the encoded bytes.

use postcard::Error;
use serde::Serialize;
use serde::ser::{self, Impossible};

/// Encodes `value` into `buf`, like `postcard::to_slice`; returns the
/// bytes written.
#[inline]
pub fn to_slice<'b, T: Serialize + ?Sized>(value: &T, buf: &'b mut [u8]) -> Result<&'b mut [u8], Error> {
    let n = encode(value, buf)?;
    Ok(&mut buf[..n])
}

/// Encodes `value` into `buf`; returns its length.
#[inline]
pub fn encode<T: Serialize + ?Sized>(value: &T, buf: &mut [u8]) -> Result<usize, Error> {
    let mut w = Writer { buf, pos: 0 };
    value.serialize(&mut w)?;
    Ok(w.pos)
}

/// Appends the varint of `v` to `buf` at `pos`; returns the new position
/// (`None`: no room). The LEB128 postcard uses: 7 bits a byte, low first.
#[inline(always)]
pub fn put_varint(buf: &mut [u8], pos: usize, v: u64) -> Option<usize> {
    let mut w = Writer { buf, pos };
    w.varint(v).ok()?;
    Some(w.pos)
}

/// Reads a varint of at most 10 bytes at the start of `bytes`; returns it
/// and how many bytes it took (`None`: truncated or too long).
#[inline]
pub fn take_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            // The tenth byte holds bit 63 only.
            return (i < 9 || b <= 1).then_some((v, i + 1));
        }
    }
    None
}

/// The output: `buf[..pos]` is written.
pub struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) -> Result<(), Error> {
        let slot = self.buf.get_mut(self.pos).ok_or(Error::SerializeBufferFull)?;
        *slot = b;
        self.pos += 1;
        Ok(())
    }

    /// Most fields are small numbers, one byte: that case is inlined
    /// into the event's encoder, the loop is not.
    #[inline(always)]
    fn varint(&mut self, v: u64) -> Result<(), Error> {
        if v < 0x80 { self.byte(v as u8) } else { self.long_varint(v) }
    }

    #[inline(never)]
    fn long_varint(&mut self, mut v: u64) -> Result<(), Error> {
        if let Some(out) = self.buf.get_mut(self.pos..self.pos + 10) {
            // Room for the longest (10 bytes): one check for all of them.
            let mut k = 0;
            while v >= 0x80 && k < 9 {
                out[k] = v as u8 | 0x80;
                v >>= 7;
                k += 1;
            }
            out[k] = v as u8;
            self.pos += k + 1;
            return Ok(());
        }
        while v >= 0x80 {
            self.byte(v as u8 | 0x80)?;
            v >>= 7;
        }
        self.byte(v as u8)
    }

    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        self.varint(b.len() as u64)?;
        let end = self.pos.checked_add(b.len()).ok_or(Error::SerializeBufferFull)?;
        self.buf.get_mut(self.pos..end).ok_or(Error::SerializeBufferFull)?.copy_from_slice(b);
        self.pos = end;
        Ok(())
    }
}

fn unsupported() -> Error {
    Error::SerdeSerCustom
}

impl<'a, 'b> ser::Serializer for &'a mut Writer<'b> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    #[inline(always)]
    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.byte(v as u8)
    }
    #[inline(always)]
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.byte(v as u8)
    }
    #[inline(always)]
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.varint(((v << 1) ^ (v >> 15)) as u16 as u64)
    }
    #[inline(always)]
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.varint(((v << 1) ^ (v >> 31)) as u32 as u64)
    }
    #[inline(always)]
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.varint(((v << 1) ^ (v >> 63)) as u64)
    }
    #[inline(always)]
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.byte(v)
    }
    #[inline(always)]
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.varint(v as u64)
    }
    #[inline(always)]
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.varint(v as u64)
    }
    #[inline(always)]
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.varint(v)
    }
    fn serialize_f32(self, _: f32) -> Result<(), Error> {
        Err(unsupported())
    }
    fn serialize_f64(self, _: f64) -> Result<(), Error> {
        Err(unsupported())
    }
    fn serialize_char(self, _: char) -> Result<(), Error> {
        Err(unsupported())
    }
    #[inline(always)]
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.bytes(v.as_bytes())
    }
    #[inline(always)]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        self.bytes(v)
    }
    #[inline(always)]
    fn serialize_none(self) -> Result<(), Error> {
        self.byte(0)
    }
    #[inline(always)]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        self.byte(1)?;
        value.serialize(self)
    }
    #[inline(always)]
    fn serialize_unit(self) -> Result<(), Error> {
        Ok(())
    }
    #[inline(always)]
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        Ok(())
    }
    #[inline(always)]
    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Result<(), Error> {
        self.varint(index as u64)
    }
    #[inline(always)]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    #[inline(always)]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.varint(index as u64)?;
        value.serialize(self)
    }
    #[inline(always)]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Error> {
        self.varint(len.ok_or(Error::SerializeSeqLengthUnknown)? as u64)?;
        Ok(self)
    }
    #[inline(always)]
    fn serialize_tuple(self, _: usize) -> Result<Self, Error> {
        Ok(self)
    }
    #[inline(always)]
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }
    #[inline(always)]
    fn serialize_tuple_variant(self, _: &'static str, index: u32, _: &'static str, _: usize) -> Result<Self, Error> {
        self.varint(index as u64)?;
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(unsupported())
    }
    #[inline(always)]
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }
    #[inline(always)]
    fn serialize_struct_variant(self, _: &'static str, index: u32, _: &'static str, _: usize) -> Result<Self, Error> {
        self.varint(index as u64)?;
        Ok(self)
    }
    fn collect_str<T: core::fmt::Display + ?Sized>(self, _: &T) -> Result<(), Error> {
        Err(unsupported())
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The compound forms: their elements follow one another, nothing around.
macro_rules! compound {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for &mut Writer<'_> {
            type Ok = ();
            type Error = Error;
            #[inline(always)]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                value.serialize(&mut **self)
            }
            #[inline(always)]
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        }
    )*};
}
compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeStruct for &mut Writer<'_> {
    type Ok = ();
    type Error = Error;
    #[inline(always)]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Result<(), Error> {
        value.serialize(&mut **self)
    }
    #[inline(always)]
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Writer<'_> {
    type Ok = ();
    type Error = Error;
    #[inline(always)]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Result<(), Error> {
        value.serialize(&mut **self)
    }
    #[inline(always)]
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_agree_with_postcard() {
        let mut values = alloc::vec![0u64, 1, 0x7f, 0x80, 0x3fff, 0x4000, u32::MAX as u64, u64::MAX - 1, u64::MAX];
        for shift in 0..64 {
            values.push(1 << shift);
            values.push((1 << shift) - 1);
        }
        for v in values {
            let (mut a, mut b) = ([0u8; 10], [0u8; 10]);
            let ours = to_slice(&v, &mut a).unwrap().to_vec();
            assert_eq!(ours, postcard::to_slice(&v, &mut b).unwrap(), "{v:#x}");
            assert_eq!(take_varint(&ours), Some((v, ours.len())));
            let mut c = [0u8; 10];
            assert_eq!(put_varint(&mut c, 0, v), Some(ours.len()));
            assert_eq!(&c[..ours.len()], &ours[..]);
            assert_eq!(put_varint(&mut c[..ours.len() - 1], 0, v), None, "no room");
        }
        for v in [i64::MIN, -1, 0, 1, 63, -64, 64, i64::MAX] {
            let (mut a, mut b) = ([0u8; 10], [0u8; 10]);
            assert_eq!(to_slice(&v, &mut a).unwrap(), postcard::to_slice(&v, &mut b).unwrap(), "{v}");
        }
    }

    #[test]
    fn bad_varints_are_refused() {
        assert_eq!(take_varint(&[]), None);
        assert_eq!(take_varint(&[0x80]), None);
        assert_eq!(take_varint(&[0xff; 10]), None);
        let mut eleven = [0x80u8; 11];
        eleven[10] = 0;
        assert_eq!(take_varint(&eleven), None);
        // Bit 64 and above.
        let mut big = [0xffu8; 10];
        big[9] = 0x02;
        assert_eq!(take_varint(&big), None);
    }

    #[test]
    fn a_full_buffer_is_an_error_never_a_panic() {
        let value = (7u64, "some text", Some(300u32), [1u64, 2, 3]);
        let mut whole = [0u8; 64];
        let n = to_slice(&value, &mut whole).unwrap().len();
        for cut in 0..n {
            let mut buf = alloc::vec![0u8; cut];
            assert_eq!(to_slice(&value, &mut buf), Err(Error::SerializeBufferFull), "{cut}");
        }
    }
}
