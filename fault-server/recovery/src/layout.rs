//! Word layout of the shared objects: region header, mutex, Arc slot.
//!
//! Tasks (through `libtask::sync`) and the fault server (through this
//! crate) touch the same words, from different address spaces and with
//! different tools — the task with its own atomics, the server with
//! `TASK_CTL` atomics on the task's addresses — so the offsets live in one
//! place, here, and both sides use these constants.
//!
//! Every object starts on an 8-byte boundary so that its first two `u32`
//! words also form one `u64`: the fault server changes both at once with a
//! single `CAS64` (poison + unlock; see [`crate::execute`]).
//!
//! ```text
//! region (base = what REGION / TASK_CTL REGIONS report)
//!   +0   u64 magic            REGION_MAGIC once initialized
//!   +8   u32 state            0 untouched, 1 being initialized, 2 ready
//!   +12  u32 initializer      task id that initialized it
//!   +16  u32 statics_size     bytes of the statics area
//!   +20  u32 slot_size        bytes per Arc slot (header + payload), multiple of 8
//!   +24  u32 slot_count
//!   +28  u32 slots_offset     from base, multiple of 64
//!   +32  u32 allocs           statistics: slots allocated,
//!   +36  u32 frees            freed (count reached 0),
//!   +40  u32 double_frees     decrements found at count 0 (undone),
//!   +44  u32 alloc_failures   allocations that found no free slot
//!   +48  u32 statics_type     fingerprint of the statics struct S (type_fingerprint)
//!   +52  u32 slot_type        fingerprint of the Arc payload type T
//!   +56  reserved up to +64
//!   +64  statics area         one S: the user's #[repr(C)] struct (Mutex<T>, atomics ...)
//!   +slots_offset             slot_count Arc slots of slot_size bytes
//!
//! mutex (8-aligned, in the statics area or in an Arc slot's payload)
//!   +0   u32 word     0 = unlocked, else owner task id | MUTEX_CONTENDED (bit 31)
//!   +4   u32 poison   0 = clean, 1 = poisoned (set by the fault server)
//!   +8   T            the data
//!
//! Arc slot (8-aligned, slots_offset + i * slot_size)
//!   +0   u32 generation   incremented by each allocation of the slot
//!   +4   u32 count        shared references; 0 = free
//!   +8   T                the payload
//! ```

/// Region header: `+0 magic`.
pub const REGION_MAGIC: u64 = u64::from_le_bytes(*b"RWNDSHM1");
/// Bytes of the region header; objects start at or after it.
pub const REGION_HEADER_SIZE: u64 = 64;

/// Offsets of the region header words.
pub mod region {
    pub const MAGIC: u64 = 0;
    pub const STATE: u64 = 8;
    pub const INITIALIZER: u64 = 12;
    pub const STATICS_SIZE: u64 = 16;
    pub const SLOT_SIZE: u64 = 20;
    pub const SLOT_COUNT: u64 = 24;
    pub const SLOTS_OFFSET: u64 = 28;
    pub const ALLOCS: u64 = 32;
    pub const FREES: u64 = 36;
    pub const DOUBLE_FREES: u64 = 40;
    pub const ALLOC_FAILURES: u64 = 44;
    pub const STATICS_TYPE: u64 = 48;
    pub const SLOT_TYPE: u64 = 52;
    /// Where the statics area starts.
    pub const STATICS: u64 = super::REGION_HEADER_SIZE;

    /// `STATE` values.
    pub const STATE_UNTOUCHED: u32 = 0;
    pub const STATE_INITIALIZING: u32 = 1;
    pub const STATE_READY: u32 = 2;
}

/// Offsets of a mutex's words.
pub mod mutex {
    pub const WORD: u64 = 0;
    pub const POISON: u64 = 4;
    /// Where the data starts (for data aligned to at most 8).
    pub const DATA: u64 = 8;
    pub const CONTENDED: u32 = abi::checkpoint::MUTEX_CONTENDED;
    /// The owner part of the word.
    pub const OWNER_MASK: u32 = !CONTENDED;
    /// `POISON` value of a poisoned mutex.
    pub const POISONED: u32 = 1;
}

/// Offsets of an Arc slot's words.
pub mod arc {
    pub const GENERATION: u64 = 0;
    pub const COUNT: u64 = 4;
    pub const PAYLOAD: u64 = 8;
    /// Bytes of the slot header.
    pub const HEADER: u64 = 8;
}

/// Alignment of every shared object (mutex, Arc slot).
pub const OBJECT_ALIGN: u64 = 8;

/// Where the objects of a region are for statics of `statics` bytes and
/// `slots` Arc slots of `payload` bytes each, in a region of `size` bytes:
/// `(statics area bytes, slots_offset, slot_size)`, or `None` if that does
/// not fit. libtask's `Region::open` computes its geometry with this from
/// `size_of` of its types (so no task states a size), writes it to the
/// header, and [`RegionLayout::from_header`] accepts exactly what it gives.
pub fn geometry(statics: u64, payload: u64, slots: u32, size: u64) -> Option<(u64, u64, u64)> {
    let align_up = |x: u64, to: u64| x.checked_next_multiple_of(to);
    let statics = align_up(statics, OBJECT_ALIGN)?;
    let slots_offset = align_up(REGION_HEADER_SIZE.checked_add(statics)?, 64)?;
    let slot_size = align_up(arc::HEADER.checked_add(payload)?, OBJECT_ALIGN)?;
    let end = slots_offset.checked_add(slot_size.checked_mul(slots as u64)?)?;
    let fits_u32 = statics <= u32::MAX as u64 && slots_offset <= u32::MAX as u64 && slot_size <= u32::MAX as u64;
    (end <= size && fits_u32).then_some((statics, slots_offset, slot_size))
}

/// A type's fingerprint for the region header's `STATICS_TYPE`/`SLOT_TYPE`
/// words: FNV-1a of its name (`core::any::type_name`, which names the
/// crate that declares it), size and alignment, with bit 0 set (never 0).
/// Tasks built by one toolchain from one declaration agree on it; two
/// look-alike structs in two crates do not, by design.
pub fn type_fingerprint(name: &str, size: u64, align: u64) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes().chain(size.to_le_bytes()).chain(align.to_le_bytes()) {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    h | 1
}

/// Where a region's objects are, as its header records it: the statics
/// area (where every `Mutex` lives) and the Arc slot area `[slots_offset,
/// slots_offset + slot_count * slot_size)`. libtask's `Region::open`
/// writes these four header words (`STATICS_SIZE`, `SLOT_SIZE`,
/// `SLOT_COUNT`, `SLOTS_OFFSET`) before the magic and `STATE_READY`, and
/// every task that opens the region checks them against the layout it
/// expects, so the header *is* the record of which offsets hold what.
///
/// The fault server reads a region's header once (`READ_MEM` of the first
/// task that faults holding it), validates it with [`RegionLayout::from_header`]
/// and keeps that copy — as each task keeps its own after `Region::open` —
/// so later writes to the header move nothing. The planner then accepts a
/// mutex entry only inside the statics area and an Arc entry only at a
/// slot start ([`crate::plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionLayout {
    /// The region's base (its identity: regions sit at fixed addresses,
    /// the same in every holder).
    pub base: u64,
    /// Bytes of the region (as the kernel reports it).
    pub size: u64,
    /// Bytes of the statics area, from [`region::STATICS`].
    pub statics: u64,
    pub slots_offset: u64,
    pub slot_size: u64,
    pub slot_count: u64,
}

/// Why a region header was not accepted as a [`RegionLayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadHeader {
    /// Fewer than [`RegionLayout::HEADER_BYTES`] bytes.
    Short,
    /// Not (yet) initialized: no magic, or `STATE` not `STATE_READY`.
    NotReady,
    /// The four layout words do not describe objects inside the region.
    Inconsistent,
}

impl RegionLayout {
    /// Header bytes [`RegionLayout::from_header`] reads (through `SLOTS_OFFSET`).
    pub const HEADER_BYTES: usize = (region::SLOTS_OFFSET + 4) as usize;

    /// The layout a region header at `base` (of `size` bytes) records, if
    /// it is initialized and consistent: the statics area and the slot
    /// area lie inside the region in this order, 8-aligned, the slot area
    /// 64-aligned — exactly what `Region::open` writes.
    pub fn from_header(base: u64, size: u64, header: &[u8]) -> Result<RegionLayout, BadHeader> {
        let h = header.get(..Self::HEADER_BYTES).ok_or(BadHeader::Short)?;
        let u32_at = |o: u64| {
            u32::from_le_bytes([h[o as usize], h[o as usize + 1], h[o as usize + 2], h[o as usize + 3]]) as u64
        };
        let magic = u64::from_le_bytes(h[..8].try_into().map_err(|_| BadHeader::Short)?);
        if magic != REGION_MAGIC || u32_at(region::STATE) != region::STATE_READY as u64 {
            return Err(BadHeader::NotReady);
        }
        let l = RegionLayout {
            base,
            size,
            statics: u32_at(region::STATICS_SIZE),
            slots_offset: u32_at(region::SLOTS_OFFSET),
            slot_size: u32_at(region::SLOT_SIZE),
            slot_count: u32_at(region::SLOT_COUNT),
        };
        // All four words are u32: no sum or product below overflows a u64.
        let ok = l.statics.is_multiple_of(OBJECT_ALIGN)
            && l.slots_offset.is_multiple_of(64)
            && l.slots_offset >= region::STATICS + l.statics
            && l.slot_size >= arc::HEADER
            && l.slot_size.is_multiple_of(OBJECT_ALIGN)
            && l.slots_offset + l.slot_size * l.slot_count <= size
            && base.checked_add(size).is_some();
        if ok { Ok(l) } else { Err(BadHeader::Inconsistent) }
    }

    /// Whether a mutex (its 8-byte word pair) at `addr` lies, 8-aligned,
    /// in the statics area or in the payload of an Arc slot (an
    /// `Arc<Mutex<T>>`: never over a slot's own `{generation, count}`).
    pub fn is_mutex(&self, addr: u64) -> bool {
        if !addr.is_multiple_of(OBJECT_ALIGN) {
            return false;
        }
        let start = self.base + region::STATICS;
        if addr >= start && addr - start + OBJECT_ALIGN <= self.statics {
            return true;
        }
        let first = self.base + self.slots_offset;
        if addr < first || (addr - first) / self.slot_size >= self.slot_count {
            return false;
        }
        let within = (addr - first) % self.slot_size;
        within >= arc::PAYLOAD && within + OBJECT_ALIGN <= self.slot_size
    }

    /// Whether `addr` is the start of one of the Arc slots.
    pub fn is_slot(&self, addr: u64) -> bool {
        let first = self.base + self.slots_offset;
        addr >= first
            && (addr - first).is_multiple_of(self.slot_size)
            && (addr - first) / self.slot_size < self.slot_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_words_fit_and_do_not_overlap() {
        let words = [
            (region::MAGIC, 8),
            (region::STATE, 4),
            (region::INITIALIZER, 4),
            (region::STATICS_SIZE, 4),
            (region::SLOT_SIZE, 4),
            (region::SLOT_COUNT, 4),
            (region::SLOTS_OFFSET, 4),
            (region::ALLOCS, 4),
            (region::FREES, 4),
            (region::DOUBLE_FREES, 4),
            (region::ALLOC_FAILURES, 4),
            (region::STATICS_TYPE, 4),
            (region::SLOT_TYPE, 4),
        ];
        for (i, &(off, len)) in words.iter().enumerate() {
            assert!(off + len <= REGION_HEADER_SIZE);
            assert_eq!(off % len, 0, "word at {off} is not aligned");
            for &(o2, l2) in &words[i + 1..] {
                assert!(off + len <= o2 || o2 + l2 <= off, "{off} overlaps {o2}");
            }
        }
        // The poison+word pair is one naturally aligned u64.
        assert_eq!((mutex::WORD, mutex::POISON), (0, 4));
        assert_eq!((arc::GENERATION, arc::COUNT), (0, 4));
    }

    fn header(statics: u32, slot_size: u32, slots: u32, slots_offset: u32) -> [u8; 64] {
        let mut h = [0u8; 64];
        h[..8].copy_from_slice(&REGION_MAGIC.to_le_bytes());
        h[8..12].copy_from_slice(&region::STATE_READY.to_le_bytes());
        for (o, v) in [(16, statics), (20, slot_size), (24, slots), (28, slots_offset)] {
            h[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        h
    }

    const B: u64 = 0x2000_0000_0000;

    #[test]
    fn a_region_header_says_where_mutexes_and_slots_are() {
        let l = RegionLayout::from_header(B, 0x1_0000, &header(0x40, 0x20, 4, 0x80)).unwrap();
        assert!(l.is_mutex(B + 0x40) && l.is_mutex(B + 0x78));
        assert!(!l.is_mutex(B + 0x80), "past the statics area");
        assert!(!l.is_mutex(B + 0x38), "in the header");
        assert!(!l.is_mutex(B + 0x44), "misaligned");
        assert!(l.is_slot(B + 0x80) && l.is_slot(B + 0xe0));
        assert!(!l.is_slot(B + 0x88), "inside a slot");
        assert!(!l.is_slot(B + 0x100), "past the last slot");
        assert!(!l.is_slot(B + 0x40), "a mutex");
        // Arc<Mutex<T>>: a mutex in a slot's payload, not over its header.
        assert!(l.is_mutex(B + 0x88) && l.is_mutex(B + 0xe8) && l.is_mutex(B + 0x90));
        assert!(!l.is_mutex(B + 0x80), "a slot's generation and count");
        assert!(l.is_mutex(B + 0x98), "the last word pair of a payload");
        assert!(!l.is_mutex(B + 0xa0), "the next slot's header");
        assert!(!l.is_mutex(B + 0x108), "past the last slot");
        assert!(!l.is_mutex(B + 0x8c), "misaligned in a payload");
    }

    /// What `Region::open` computes from its types, the header records and
    /// the fault server accepts: the same objects, exactly.
    #[test]
    fn geometry_from_type_sizes_is_what_the_header_check_accepts() {
        for (statics, payload, slots) in [(0, 0, 0), (1, 1, 1), (24, 40, 16), (192, 0, 0), (4000, 4096, 3)] {
            let (st, so, ss) = geometry(statics, payload, slots, 0x10_0000).unwrap();
            assert!(st >= statics && st % 8 == 0 && ss >= payload + arc::HEADER && ss % 8 == 0);
            let l = RegionLayout::from_header(B, 0x10_0000, &header(st as u32, ss as u32, slots, so as u32)).unwrap();
            assert_eq!((l.statics, l.slots_offset, l.slot_size, l.slot_count), (st, so, ss, slots as u64));
            // Every payload byte range of a slot is in it, none in the next.
            for i in 0..slots as u64 {
                assert!(l.is_slot(B + so + i * ss));
                assert!(!l.is_slot(B + so + i * ss + 8));
            }
        }
        assert_eq!(geometry(64, 0, 0, 64), None, "the header and statics do not fit");
        assert_eq!(geometry(0, 8, 1000, 4096), None, "the slots do not fit");
        assert_eq!(geometry(u64::MAX - 3, 8, 1, u64::MAX), None, "no overflow");
        assert_eq!(geometry(0, u64::MAX, 1, u64::MAX), None, "no overflow");
        assert_eq!(geometry(0, 1 << 32, 1, u64::MAX), None, "a slot size past u32");
    }

    #[test]
    fn type_fingerprints_tell_types_apart() {
        let a = type_fingerprint("bank::Shared", 192, 8);
        assert_eq!(a, type_fingerprint("bank::Shared", 192, 8));
        assert_ne!(a, type_fingerprint("teller::Shared", 192, 8), "a look-alike in another crate");
        assert_ne!(a, type_fingerprint("bank::Shared", 200, 8), "another size");
        assert_ne!(a, type_fingerprint("bank::Shared", 192, 16), "another alignment");
        assert_eq!(a & 1, 1, "never 0");
    }

    #[test]
    fn bad_region_headers_are_refused() {
        let ok = header(0x40, 0x20, 4, 0x80);
        assert_eq!(RegionLayout::from_header(B, 0x1000, &ok[..20]), Err(BadHeader::Short));
        let mut h = ok;
        h[8] = region::STATE_INITIALIZING as u8;
        assert_eq!(RegionLayout::from_header(B, 0x1000, &h), Err(BadHeader::NotReady));
        let mut h = ok;
        h[0] ^= 1;
        assert_eq!(RegionLayout::from_header(B, 0x1000, &h), Err(BadHeader::NotReady));
        for bad in [
            header(0x40, 0x20, 4, 0x40),                 // slots overlap the statics
            header(0x40, 0x20, 4, 0x90),                 // slots not 64-aligned
            header(0x40, 0x1c, 4, 0x80),                 // slot size not 8-aligned
            header(0x40, 0, 4, 0x80),                    // slot smaller than its header
            header(0x44, 0x20, 4, 0xc0),                 // statics not 8-aligned
            header(0x40, 0x20, 0x100, 0x80),             // past the region's end
            header(0x40, u32::MAX & !7, u32::MAX, 0x80), // huge: no overflow, refused
        ] {
            assert_eq!(RegionLayout::from_header(B, 0x1000, &bad), Err(BadHeader::Inconsistent));
        }
    }
}
