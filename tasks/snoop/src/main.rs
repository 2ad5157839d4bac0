//! `snoop`: tries what its capabilities do not allow, and reports that each
//! attempt was refused.
//!
//! Its manifest gives it one capability, `private:recv` (receive only).
//! The target of the supervisor attempts is task `arg` (the fault server
//! in `images/fault-server.toml`). Checks (value = bit mask of the attempts
//! that were *not* refused as expected; ok when 0):
//!
//! * `no-cap-send`: `cap("faults")` → `BadCapability` (it has no such
//!   capability); `send` on its receive-only capability → `Denied`;
//!   `send`/`call`/`signal` on every index it has no capability at →
//!   `BadCapability`;
//! * `no-supervisor`: `GET_REGS`, `READ_MEM`, `WRITE_MEM`, `READ_IMAGE`,
//!   `SET_REGS`, `RESUME`, `RESTART`, `STOP` on the target, and `EMIT`, all
//!   → `Denied`.
//!
//! Exits 0.
#![no_std]
#![no_main]

use libtask::abi::ipc::MAX_CAPS;
use libtask::abi::trap::Registers;
use libtask::ipc::{self, Cap, Message};
use libtask::{Error, Start, println, report, supervise};

libtask::entry!(main);

fn main(start: Start) -> u64 {
    let target = start.arg;
    let msg = Message { label: 1, words: [1, 2, 3, 4] };
    let mut failed = 0u64;
    let mut expect = |bit: u32, got: Result<(), Error>, want: Error| {
        if got != Err(want) {
            println!("snoop: attempt {bit} gave {got:?}, expected {want:?}");
            failed |= 1 << bit;
        }
    };
    expect(0, ipc::cap("faults").map(drop), Error::BadCapability);
    let own = ipc::cap("private");
    expect(1, own.and_then(|c| ipc::send(c, &msg)), Error::Denied);
    for i in 1..=MAX_CAPS as u64 {
        expect(2, ipc::send(Cap::from_index(i), &msg), Error::BadCapability);
        expect(3, ipc::call(Cap::from_index(i), &msg).map(drop), Error::BadCapability);
        expect(4, ipc::signal(Cap::from_index(i), 1), Error::BadCapability);
    }
    report("no-cap-send", failed == 0, failed);

    let mut failed = 0u64;
    let mut expect = |bit: u32, got: Result<(), Error>| {
        if got != Err(Error::Denied) {
            println!("snoop: supervisor attempt {bit} gave {got:?}, expected Denied");
            failed |= 1 << bit;
        }
    };
    let mut buf = [0u8; 64];
    expect(0, supervise::get_regs(target).map(drop));
    expect(1, supervise::read_mem(target, 0x40_0000, &mut buf));
    expect(2, supervise::write_mem(target, 0x40_0000, &buf));
    expect(3, supervise::read_image(target, 0, &mut buf).map(drop));
    expect(4, supervise::set_regs(target, &Registers::default()));
    expect(5, supervise::resume(target));
    expect(6, supervise::restart(target, 0));
    expect(7, supervise::stop(target, 0));
    let forged = libtask::abi::event::Event::Check {
        task: None,
        task_name: None,
        name: "forged",
        ok: true,
        value: None,
        error: None,
    };
    expect(9, supervise::emit_event(&forged));
    report("no-supervisor", failed == 0, failed);
    0
}
