//! Starting the tasks of the boot image (the PVH module `xtask` packs).
//!
//! The image declares endpoints and notifications (created first), the
//! tasks, and the capabilities each task holds. Each entry is checked and
//! loaded on its own: a malformed task or capability is rejected with an
//! event naming the reason, and the rest still starts. The module's memory
//! stays reserved for the kernel's lifetime, so task specs borrow their ELF
//! bytes from it for good (a restart reloads from them).

use super::{Cap, Task, loader};
use crate::events;
use crate::ipc::{Endpoint, Notification};
use crate::mem::region::Region;
use crate::sched::SCHED;
use abi::event::Event;

/// Loads every task of the image in `bytes`; returns how many started.
pub fn start_tasks(bytes: &'static [u8]) -> usize {
    let image = match abi::image::parse(bytes) {
        Ok(image) => image,
        Err(e) => {
            crate::kprintln!("boot image rejected: {}", e.reason());
            let detail = events::text::<256>(format_args!("{e:?}"));
            events::emit(&Event::ImageRejected { reason: e.reason(), detail: &detail });
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
    let (endpoints, notifications) = (s.endpoints.len(), s.notifications.len());
    s.tasks.set_objects(endpoints, notifications);
    for i in 0..image.region_count() {
        let region = match image.region(i) {
            Some(Ok(spec)) => Region::new(i, spec.name, spec.size),
            _ => None,
        };
        match region {
            Some(r) => {
                events::emit(&Event::Object {
                    kind: "region",
                    index: i as u64,
                    name: &r.name,
                    base: Some(r.base),
                    size: Some(r.size()),
                });
                s.regions.push(r);
            }
            None => {
                events::emit(&Event::RegionRejected {
                    index: i as u64,
                    reason: "malformed, too large, or out of memory",
                });
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
    let online = crate::arch::smp::cpus_online();
    for index in 0..image.len() {
        let spec = match image.task(index) {
            Some(Ok(spec)) => spec,
            Some(Err(e)) => {
                reject(index, "?", e.reason());
                continue;
            }
            None => break,
        };
        // An affinity for a CPU that is not online: the task could never
        // run. Refused like any bad entry (the image's others still load).
        if spec.cpu != abi::image::ANY_CPU && spec.cpu >= online {
            reject(index, spec.name, "cpu affinity names a CPU that is not online");
            continue;
        }
        match loader::load(&spec) {
            Ok(loaded) => {
                let id = s.allocate_id();
                let mut task = Task::new(id, spec, loaded);
                // With one CPU it runs there: its `task_start` says so now.
                // With several, the CPU that first takes it writes it
                // (`sched::Scheduler::own`).
                if online == 1 {
                    task.start_event(&s.endpoints, 0);
                }
                match s.add(task) {
                    Some(slot) => {
                        slots[index] = Some(slot);
                        started += 1;
                    }
                    // One bit per task in the scheduler's masks.
                    None => reject(index, spec.name, "too many tasks"),
                }
            }
            Err(e) => reject(index, spec.name, e.reason()),
        }
    }

    for index in 0..image.cap_count() {
        let Some(Ok(c)) = image.cap(index) else {
            crate::kprintln!("capability {index} rejected: malformed");
            events::emit(&Event::CapRejected { index: index as u64, reason: "malformed capability" });
            continue;
        };
        let Some(slot) = slots.get(c.task as usize).copied().flatten() else { continue };
        let mut name = heapless::String::new();
        let _ = name.push_str(c.name);
        let cap = Cap { name, kind: c.kind, rights: c.rights, object: c.object, badge: c.badge };
        if s.tasks[slot].caps.push(cap).is_err() {
            events::emit(&Event::CapRejected { index: index as u64, reason: "too many capabilities for one task" });
        }
    }
    for idx in 0..s.tasks.len() {
        s.map_regions(idx);
    }
    for (i, n) in s.notifications.iter().enumerate() {
        let name = &n.name;
        events::emit(&Event::Object { kind: "notification", index: i as u64, name, base: None, size: None });
    }
    for (i, e) in s.endpoints.iter().enumerate() {
        let name = &e.name;
        events::emit(&Event::Object { kind: "endpoint", index: i as u64, name, base: None, size: None });
    }
    started
}

fn reject(index: usize, name: &str, reason: &str) {
    crate::kprintln!("task {index} ({name}) rejected: {reason}");
    events::emit(&Event::TaskRejected { index: index as u64, name, reason });
}
