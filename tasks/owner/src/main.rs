//! `owner`: the other half of the isolation test (`faulter` 13). It maps a
//! page at [`SHARED_LOOKING`] (`USER_MAP_BASE + 0x4000_0000`), writes a
//! marker there, reports the check `owner-mapped` (value = the address),
//! stays alive for a while so that the faulter can try to read the address
//! in its own address space (and must fault, since only the owner maps it),
//! then checks that its marker is intact (check `owner-marker`, value = the
//! marker read back) and exits 0.
#![no_std]
#![no_main]

use libtask::abi::layout::{PAGE_SIZE, USER_MAP_BASE};
use libtask::abi::syscall::MapFlags;
use libtask::{Start, println, report, syscall};

/// The page only this task maps.
const SHARED_LOOKING: u64 = USER_MAP_BASE + 0x4000_0000;
/// What it writes there.
const MARKER: u64 = 0x0dd0_77e6_0000_0013;
/// How long it stays alive, in ms (the faulter waits 20 ms before reading).
const STAY_MS: u64 = 200;

libtask::entry!(main);

fn main(start: Start) -> u64 {
    let page = match syscall::map(SHARED_LOOKING, PAGE_SIZE, MapFlags::WRITE) {
        Ok(page) if page as u64 == SHARED_LOOKING => page.cast::<u64>(),
        other => {
            println!("owner: map at {SHARED_LOOKING:#x} failed: {other:?}");
            report("owner-mapped", false, other.map_or(0, |p| p as u64));
            return 1;
        }
    };
    // SAFETY: `page` is a fresh, writable, page-aligned mapping of this task.
    unsafe { page.write_volatile(MARKER) };
    println!("owner {}: marker {MARKER:#x} at {SHARED_LOOKING:#x}", start.id);
    report("owner-mapped", true, SHARED_LOOKING);
    stay_alive(STAY_MS);
    // SAFETY: as above; the page is still mapped (nothing unmaps it).
    let read_back = unsafe { page.read_volatile() };
    report("owner-marker", read_back == MARKER, read_back);
    0
}

/// Sleeps `ms`; yields until `ms` ticks pass if `SLEEP` is refused.
fn stay_alive(ms: u64) {
    if syscall::sleep(ms).is_ok() {
        return;
    }
    let until = syscall::ticks() + ms;
    while syscall::ticks() < until {
        syscall::yield_now();
    }
}
