//! Reading the walked task's memory.
//!
//! Design note: the walker never dereferences an address itself. Every load of
//! the stack goes through [`Memory`], which may fail: the fault server reads
//! another address space through the kernel, the kernel reads a possibly
//! unmapped stack, the host tool reads a core file with holes. A failed read
//! ends the walk with `Stop::Unreadable { addr }` instead of a fault.

/// Memory of the walked context. Implementations must not panic on any address.
pub trait Memory {
    /// The little-endian 64-bit word at `addr`, or `None` if any of its 8 bytes
    /// is unreadable.
    fn read_u64(&self, addr: u64) -> Option<u64>;

    /// The hot path of [`Self::read_u64`], for the walker's loads of stack
    /// slots: `Some` where a read is cheap and certain (e.g. a copied
    /// stack), `None` to let [`Self::read_u64`] decide. The walker tries
    /// this first and calls `read_u64` only on `None`, so the common load
    /// is a bounds check and a load with no second test of its result. The
    /// default says `None`: everything goes through `read_u64`.
    #[inline(always)]
    fn read_u64_fast(&self, addr: u64) -> Option<u64> {
        let _ = addr;
        None
    }

    /// `size` (1..=8) bytes at `addr`, zero-extended. The default reads the
    /// aligned words that contain them, so it never touches a byte outside the
    /// 8-byte-aligned words holding the requested ones.
    fn read_sized(&self, addr: u64, size: u8) -> Option<u64> {
        if size == 0 || size > 8 {
            return None;
        }
        if size == 8 && addr.is_multiple_of(8) {
            return self.read_u64(addr);
        }
        let base = addr & !7;
        let shift = (addr - base) * 8;
        let lo = self.read_u64(base)?;
        let end = addr.checked_add(u64::from(size) - 1)?;
        let mut v = lo >> shift;
        if end & !7 != base {
            let hi = self.read_u64(base.checked_add(8)?)?;
            v |= hi << (64 - shift);
        }
        if size < 8 {
            v &= (1u64 << (u64::from(size) * 8)) - 1;
        }
        Some(v)
    }
}

impl<M: Memory + ?Sized> Memory for &M {
    #[inline]
    fn read_u64(&self, addr: u64) -> Option<u64> {
        (**self).read_u64(addr)
    }

    #[inline(always)]
    fn read_u64_fast(&self, addr: u64) -> Option<u64> {
        (**self).read_u64_fast(addr)
    }
}

/// A contiguous byte slice mapped at `base`: the simplest and cheapest
/// [`Memory`] (e.g. a copied stack: the stack bytes a fault message carries),
/// used by the fault server, tests, the fuzzer and benchmarks. Reads outside
/// the slice are `None`.
#[derive(Clone, Copy, Debug)]
pub struct SliceMemory<'a> {
    /// Address of `bytes[0]`.
    pub base: u64,
    /// The contents.
    pub bytes: &'a [u8],
}

impl Memory for SliceMemory<'_> {
    /// Two comparisons and a load (an address below `base` wraps to an
    /// offset beyond any slice).
    #[inline]
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.wrapping_sub(self.base)).ok()?;
        let word = self.bytes.get(off..)?.first_chunk::<8>()?;
        Some(u64::from_le_bytes(*word))
    }

    #[inline(always)]
    fn read_u64_fast(&self, addr: u64) -> Option<u64> {
        self.read_u64(addr)
    }
}

/// No memory at all: every read fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMemory;

impl Memory for NoMemory {
    fn read_u64(&self, _addr: u64) -> Option<u64> {
        None
    }
}
