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
//!   +48  reserved up to +64
//!   +64  statics area         Mutex<T> and atomics at offsets the tasks agree on
//!   +slots_offset             slot_count Arc slots of slot_size bytes
//!
//! mutex (8-aligned, in the statics area)
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
}
