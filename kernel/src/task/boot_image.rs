//! Starting the tasks of the boot image (the PVH module `xtask` packs).
//!
//! Each entry is checked and loaded on its own: a malformed entry or ELF is
//! rejected with a `task_rejected` event naming the reason, and the others
//! still start. The module's memory stays reserved for the kernel's
//! lifetime, so task specs can borrow their ELF bytes from it for good
//! (a restart reloads from them).

use super::{Task, loader};
use crate::events::Event;
use crate::sched::SCHED;

/// Loads every task of the image in `bytes`; returns how many started.
pub fn start_tasks(bytes: &'static [u8]) -> usize {
    let image = match abi::image::parse(bytes) {
        Ok(image) => image,
        Err(e) => {
            crate::kprintln!("boot image rejected: {}", e.reason());
            Event::new("image_rejected").str("reason", e.reason()).display("detail", format_args!("{e:?}")).emit();
            return 0;
        }
    };
    let mut started = 0;
    for index in 0..image.len() {
        let spec = match image.task(index) {
            Some(Ok(spec)) => spec,
            Some(Err(e)) => {
                reject(index, "?", e.reason());
                continue;
            }
            None => break,
        };
        match loader::load(&spec) {
            Ok((space, entry)) => {
                let mut s = SCHED.lock();
                let id = s.allocate_id();
                Event::new("task_start")
                    .u64("task", id as u64)
                    .str("name", spec.name)
                    .u64("priority", spec.priority as u64)
                    .u64("arg", spec.arg)
                    .hex("entry", entry)
                    .u64("image_bytes", spec.elf.len() as u64)
                    .emit();
                s.add(Task::new(id, spec, space, entry));
                started += 1;
            }
            Err(e) => reject(index, spec.name, e.reason()),
        }
    }
    started
}

fn reject(index: usize, name: &str, reason: &str) {
    crate::kprintln!("task {index} ({name}) rejected: {reason}");
    Event::new("task_rejected").u64("index", index as u64).str("name", name).str("reason", reason).emit();
}
