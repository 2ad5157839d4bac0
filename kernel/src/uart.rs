//! The transmit side of a 16550A UART, driven in bursts: one poll of the
//! line status register, then up to a FIFO's worth of bytes with one
//! `rep outsb`.
//!
//! Both serial ports write through this (`console.rs` on COM1,
//! `events.rs` on COM2). THRE (LSR bit 5) says the transmit FIFO is empty,
//! so after one poll that sees it set, 16 bytes (the 16550A's FIFO; 1
//! without FIFOs) can go out without another. Under TCG `rep outsb`
//! counts as one guest instruction per byte, where a loop of `out`s costs
//! ~10 per byte with its bookkeeping: a 400-byte report goes out in ~450
//! instructions instead of ~4,000.
//!
//! Callers hold the lock of the port they write (`Tx` is not shared).

/// Line status register offset, and its "transmit FIFO empty" bit.
const LSR: u16 = 5;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// The 16550A's transmit FIFO.
pub const FIFO: usize = 16;

/// A transmitter at I/O base `base`.
pub struct Tx {
    base: u16,
    /// Bytes per THRE poll: [`FIFO`] when the FIFOs are on, else 1.
    burst: usize,
    /// Bytes the FIFO still takes without polling.
    room: usize,
}

impl Tx {
    /// The transmitter of the UART at `base`, which takes `burst` bytes
    /// per poll (its FIFO's size, 1 without one). Assumes nothing about
    /// what is in the FIFO: the first write polls.
    pub const fn new(base: u16, burst: usize) -> Tx {
        Tx { base, burst, room: 0 }
    }

    /// Writes `bytes`, polling THRE once per burst.
    #[inline]
    pub fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.room == 0 {
                self.wait_empty();
                self.room = self.burst;
            }
            let n = self.room.min(bytes.len());
            outsb(self.base, &bytes[..n]);
            self.room -= n;
            bytes = &bytes[n..];
        }
    }

    /// Spins until the transmit FIFO is empty.
    #[inline(always)]
    fn wait_empty(&self) {
        loop {
            let lsr: u8;
            // SAFETY: reading the UART's line status register (`base` is a
            // 16550A the caller owns) has no effect on memory or on the
            // device. Register contract: `dx` = port in, `al` = byte out.
            unsafe {
                core::arch::asm!("in al, dx", out("al") lsr, in("dx") self.base + LSR,
                    options(nomem, nostack, preserves_flags));
            }
            if lsr & LSR_THR_EMPTY != 0 {
                return;
            }
            core::hint::spin_loop();
        }
    }
}

/// `rep outsb`: `bytes` to the data register at `port`, in order.
#[inline(always)]
fn outsb(port: u16, bytes: &[u8]) {
    // SAFETY: `rep outsb` reads `rcx` bytes from `[rsi]` upward (the
    // direction flag is clear, as the Rust ABI guarantees at every asm
    // block) — exactly `bytes`, which is live — and writes them to port
    // `dx`, the transmit register of a UART the caller owns; it writes no
    // memory. Register contract: `rsi` = `bytes.as_ptr()` in, clobbered;
    // `rcx` = `bytes.len()` in, 0 out; `dx` = port in; flags preserved.
    unsafe {
        core::arch::asm!("rep outsb", inout("rsi") bytes.as_ptr() => _, inout("rcx") bytes.len() => _,
            in("dx") port, options(nostack, readonly, preserves_flags));
    }
}
