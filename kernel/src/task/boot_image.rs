//! Starting the tasks of the boot image (the PVH module `xtask` packs).
//!
//! The image declares endpoints and notifications (created first), the
//! tasks, and the capabilities each task holds. Each entry is checked and
//! loaded on its own: a malformed task or capability is rejected with an
//! event naming the reason, and the rest still starts. The module's memory
//! stays reserved for the kernel's lifetime, so task specs borrow their ELF
//! bytes from it for good (a restart reloads from them).

use super::{Cap, Task, loader};
use crate::events::Event;
use crate::ipc::{Endpoint, Notification};
use crate::mem::region::Region;
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
    let mut s = SCHED.lock();
    for i in 0..image.endpoint_count() {
        s.endpoints.push(Endpoint::new(image.endpoint_name(i)));
    }
    for i in 0..image.notification_count() {
        s.notifications.push(Notification::new(image.notification_name(i)));
    }
    for i in 0..image.region_count() {
        let region = match image.region(i) {
            Some(Ok(spec)) => Region::new(i, spec.name, spec.size),
            _ => None,
        };
        match region {
            Some(r) => {
                Event::new("object")
                    .str("kind", "region")
                    .u64("index", i as u64)
                    .str("name", &r.name)
                    .hex("base", r.base)
                    .u64("size", r.size())
                    .emit();
                s.regions.push(r);
            }
            None => {
                Event::new("region_rejected")
                    .u64("index", i as u64)
                    .str("reason", "malformed, too large, or out of memory")
                    .emit();
                // Keep indices stable: a zero-page placeholder maps nothing.
                if let Some(r) = Region::new(i, "?", 0) {
                    s.regions.push(r);
                }
            }
        }
    }

    // Image task index -> scheduler slot, for the capabilities.
    let mut slots = [None; abi::image::MAX_TASKS];
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
            Ok(loaded) => {
                let id = s.allocate_id();
                let mut ev = Event::new("task_start")
                    .u64("task", id as u64)
                    .str("name", spec.name)
                    .u64("priority", spec.priority as u64)
                    .u64("arg", spec.arg)
                    .hex("entry", loaded.entry)
                    .u64("image_bytes", spec.elf.len() as u64);
                if let Some(ep) = spec.fault_endpoint {
                    ev = ev.str("fault_endpoint", image.endpoint_name(ep as usize));
                }
                ev.emit();
                slots[index] = Some(s.tasks.len());
                s.add(Task::new(id, spec, loaded));
                started += 1;
            }
            Err(e) => reject(index, spec.name, e.reason()),
        }
    }

    for index in 0..image.cap_count() {
        let Some(Ok(c)) = image.cap(index) else {
            crate::kprintln!("capability {index} rejected: malformed");
            Event::new("cap_rejected").u64("index", index as u64).str("reason", "malformed capability").emit();
            continue;
        };
        let Some(slot) = slots.get(c.task as usize).copied().flatten() else { continue };
        let mut name = heapless::String::new();
        let _ = name.push_str(c.name);
        let cap = Cap { name, kind: c.kind, rights: c.rights, object: c.object, badge: c.badge };
        if s.tasks[slot].caps.push(cap).is_err() {
            Event::new("cap_rejected")
                .u64("index", index as u64)
                .str("reason", "too many capabilities for one task")
                .emit();
        }
    }
    for idx in 0..s.tasks.len() {
        s.map_regions(idx);
    }
    for (i, n) in s.notifications.iter().enumerate() {
        Event::new("object").str("kind", "notification").u64("index", i as u64).str("name", &n.name).emit();
    }
    for (i, e) in s.endpoints.iter().enumerate() {
        Event::new("object").str("kind", "endpoint").u64("index", i as u64).str("name", &e.name).emit();
    }
    started
}

fn reject(index: usize, name: &str, reason: &str) {
    crate::kprintln!("task {index} ({name}) rejected: {reason}");
    Event::new("task_rejected").u64("index", index as u64).str("name", name).str("reason", reason).emit();
}
