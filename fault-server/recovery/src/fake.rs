//! Shared memory as a byte array, for the host tests of [`crate::execute`]
//! and [`crate::plan`]: the [`SharedOps`] the fault server and the kernel
//! implement on a task's memory, here on a `Vec`, with a log of the futex
//! wakes asked for. One fake, so every test sees the same semantics
//! (little-endian words, a `CAS64` that is one 8-byte compare-and-store).

extern crate std;
use crate::SharedOps;
use std::vec::Vec;

/// Where the fake memory starts.
pub const BASE: u64 = 0x2000_0000_0000;

/// `len` bytes at [`BASE`], zeroed, and the wakes asked for.
pub struct Mem {
    pub bytes: Vec<u8>,
    pub wakes: Vec<(u64, u64)>,
}

impl Mem {
    pub fn new(len: usize) -> Mem {
        Mem { bytes: std::vec![0; len], wakes: Vec::new() }
    }
    fn at(&self, addr: u64) -> usize {
        (addr - BASE) as usize
    }
    pub fn u32(&self, addr: u64) -> u32 {
        let i = self.at(addr);
        u32::from_le_bytes(self.bytes[i..i + 4].try_into().unwrap())
    }
    pub fn set32(&mut self, addr: u64, v: u32) {
        let i = self.at(addr);
        self.bytes[i..i + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&self, addr: u64) -> u64 {
        let i = self.at(addr);
        u64::from_le_bytes(self.bytes[i..i + 8].try_into().unwrap())
    }
}

impl SharedOps for Mem {
    type Error = ();
    fn cas64(&mut self, addr: u64, old: u64, new: u64) -> Result<u64, ()> {
        let found = self.u64(addr);
        if found == old {
            let i = self.at(addr);
            self.bytes[i..i + 8].copy_from_slice(&new.to_le_bytes());
        }
        Ok(found)
    }
    fn fetch_add32(&mut self, addr: u64, delta: i32) -> Result<u32, ()> {
        let old = self.u32(addr);
        self.set32(addr, old.wrapping_add(delta as u32));
        Ok(old)
    }
    fn futex_wake(&mut self, addr: u64, n: u64) -> Result<u64, ()> {
        self.wakes.push((addr, n));
        Ok(0)
    }
}
