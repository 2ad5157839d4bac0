//! The kinds that must *not* fault: the kernel refuses bad arguments with an
//! error. Each case that misbehaves sets one bit in the reported value, so a
//! failing test says which case it was (bit n = case n, in listing order).

use libtask::abi::layout::{PAGE_SIZE, USER_END, USER_STACK_TOP};
use libtask::abi::syscall::{Error, MapFlags};
use libtask::{println, report, syscall};

/// 10: `WRITE` with pointers the kernel must refuse with `BadPointer`.
pub fn bad_syscall_pointers() -> u64 {
    let cases: [(&str, u64, u64); 5] = [
        ("kernel address", 0xffff_8000_0000_0000, 16),
        ("unmapped user address (between image and map area)", 0x0000_0800_0000_0000, 16),
        ("null page", 0x10, 8),
        ("straddles the top of the stack", USER_STACK_TOP - 8, 16),
        ("wraps around the address space", u64::MAX - 7, 16),
    ];
    let mut wrong = 0u64;
    for (n, (what, ptr, len)) in cases.into_iter().enumerate() {
        let result = syscall::write_raw(ptr, len);
        let ok = result == Err(Error::BadPointer);
        println!("faulter: WRITE({ptr:#x}, {len}) [{what}] -> {result:?} {}", if ok { "ok" } else { "WRONG" });
        if !ok {
            wrong |= 1 << n;
        }
    }
    report("bad-pointer", wrong == 0, wrong);
    (wrong != 0) as u64
}

/// 12: `MAP` hints outside user space, which the kernel must refuse.
pub fn map_kernel_pages() -> u64 {
    let cases: [(&str, u64, u64); 3] = [
        ("kernel half", 0xffff_8000_0000_0000, PAGE_SIZE),
        ("kernel image", 0xffff_ffff_8010_0000, PAGE_SIZE),
        ("straddles the end of user space", USER_END - PAGE_SIZE, 2 * PAGE_SIZE),
    ];
    let mut wrong = 0u64;
    for (n, (what, hint, len)) in cases.into_iter().enumerate() {
        let result = syscall::map(hint, len, MapFlags::WRITE);
        let ok = result.is_err();
        println!("faulter: MAP({hint:#x}, {len}) [{what}] -> {result:?} {}", if ok { "refused, ok" } else { "WRONG" });
        if !ok {
            wrong |= 1 << n;
        }
    }
    report("map-kernel", wrong == 0, wrong);
    (wrong != 0) as u64
}
