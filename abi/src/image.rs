//! The boot image: the task images of one manifest, packed by `xtask` and
//! handed to the kernel as a PVH boot module (QEMU's `-initrd`).
//!
//! ```text
//! Header          magic "RWNDIMG1", version, counts, total size
//! Entry[tasks]    one fixed-size record per task (name, where its ELF is,
//!                 scheduling and recovery parameters, fault endpoint,
//!                 CPU affinity)
//! Name[endpoints] the names of the endpoints the image declares
//! Name[notifs]    the names of its notifications
//! Region[regions] shared memory regions (name, size)
//! Cap[caps]       capabilities: which task holds what, with which rights
//! ELF bytes       the task images, each 8-byte aligned, identical ones shared
//! ```
//!
//! The kernel treats the module as hostile: [`parse`] checks the header and
//! table bounds, and [`Image::task`] checks each entry on its own, so one bad
//! entry is rejected with a reason while the others still load.

/// Magic of the injection plan that may follow the image in the module:
/// `PLAN_MAGIC`, a little-endian `u64` length, then that many bytes of text
/// (the kernel injector's command language).
pub const PLAN_MAGIC: [u8; 8] = *b"RWNDPLN1";

/// The injection plan after an image of `image_size` bytes, if any.
pub fn plan(module: &[u8], image_size: usize) -> Option<&str> {
    let rest = module.get(image_size..)?;
    let start = rest.windows(8).take(8).position(|w| w == PLAN_MAGIC)?;
    let rest = &rest[start + 8..];
    let len = u64_at(rest, 0) as usize;
    let text = rest.get(8..8usize.checked_add(len)?)?;
    core::str::from_utf8(text).ok()
}

/// Magic at offset 0.
pub const MAGIC: [u8; 8] = *b"RWNDIMG1";
/// Format version.
pub const VERSION: u32 = 4;
/// Longest task name.
pub const NAME_LEN: usize = 24;
/// Most tasks in one image.
pub const MAX_TASKS: usize = 64;
/// The largest task id: the kernel numbers an image's tasks from 1 as it
/// loads them and never makes another (a restart keeps its id), so an id
/// above this names no task — what libtask checks a mutex word's owner
/// against before it waits on it.
pub const MAX_TASK_ID: u32 = MAX_TASKS as u32;

/// Size of the header in bytes.
pub const HEADER_SIZE: usize = 40;
/// Size of one entry in bytes.
pub const ENTRY_SIZE: usize = 96;
/// Size of one shared-region record in bytes (name, size).
pub const REGION_SIZE: usize = 32;
/// Largest shared region.
pub const MAX_REGION_BYTES: u64 = 64 << 20;
/// Size of one capability record in bytes.
pub const CAP_SIZE: usize = 48;
/// Most endpoints, notifications or capabilities in one image.
pub const MAX_OBJECTS: usize = 256;
/// `fault_endpoint` value meaning "none".
const NO_ENDPOINT: u16 = u16::MAX;

use crate::ipc::CapKind;

/// One task as the manifest describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSpec<'a> {
    pub name: &'a str,
    /// The task's ELF file.
    pub elf: &'a [u8],
    /// Scheduling priority: 0 is the most urgent.
    pub priority: u8,
    /// Stack size in bytes (a multiple of the page size).
    pub stack_bytes: u64,
    /// Bit flags, see [`flags`].
    pub flags: u32,
    /// A word passed to the task at start (in `rsi`), chosen in the manifest.
    pub arg: u64,
    /// Index of the endpoint its faults go to, if any.
    pub fault_endpoint: Option<u16>,
    /// Watchdog: the task is stopped and handled as a fault when it runs
    /// this long without a system call (0 = no watchdog).
    pub watchdog_ms: u32,
    /// Restart policy for its supervisor: at most this many restarts ...
    pub max_restarts: u32,
    /// ... within this window (0 and 0 = the supervisor's defaults).
    pub restart_window_ms: u32,
    /// Most physical frames the task may hold: private pages, the page
    /// versions its checkpoint scopes keep, page tables (0 =
    /// [`DEFAULT_MAX_FRAMES`]). Past it, `map` is `NoMemory` and a
    /// copy-on-write in a scope is a page fault.
    pub max_frames: u32,
    /// Most page records its open checkpoint scopes may hold together
    /// (kernel heap, 32 bytes each; 0 = [`DEFAULT_MAX_RECORDS`], at most
    /// [`MAX_RECORDS_LIMIT`]). Past it, `map`/`unmap` in a scope are
    /// `NoMemory`.
    pub max_records: u32,
    /// Core files its supervisor may make of its faults: at most this many
    /// per task per minute (0 = none; see `fault-server/server/src/coredump.rs`).
    pub core_dumps: u32,
    /// Which instance of its manifest entry this task is (0 .. `count`;
    /// 0 for `count = 1`): passed at start in `rdx`.
    pub instance: u32,
    /// The CPU it may run on ([`ANY_CPU`]: every CPU; else the kernel's CPU
    /// index, 0 = the boot CPU, below [`MAX_CPUS`]). Entry bytes 92..96
    /// hold it plus one, so the zeros of an image packed before this field
    /// existed mean "any CPU", as they did.
    pub cpu: u32,
}

/// [`TaskSpec::cpu`] of a task that may run on every CPU.
pub const ANY_CPU: u32 = u32::MAX;
/// Most CPUs the kernel runs (its CPU indices are 0..MAX_CPUS).
pub const MAX_CPUS: u32 = 16;

impl Default for TaskSpec<'_> {
    fn default() -> Self {
        TaskSpec {
            name: "",
            elf: &[],
            priority: 0,
            stack_bytes: 0,
            flags: 0,
            arg: 0,
            fault_endpoint: None,
            watchdog_ms: 0,
            max_restarts: 0,
            restart_window_ms: 0,
            max_frames: 0,
            max_records: 0,
            core_dumps: 0,
            instance: 0,
            cpu: ANY_CPU,
        }
    }
}

/// Frames a task may hold when its manifest says nothing: 32 MiB.
pub const DEFAULT_MAX_FRAMES: u32 = 8192;
/// Page records a task's scopes may hold when its manifest says nothing.
pub const DEFAULT_MAX_RECORDS: u32 = 16 * 1024;
/// The most page records any task may be given (2 MiB of kernel heap).
pub const MAX_RECORDS_LIMIT: u32 = 64 * 1024;

impl TaskSpec<'_> {
    /// The frame quota, the default applied.
    pub fn frame_quota(&self) -> usize {
        if self.max_frames == 0 { DEFAULT_MAX_FRAMES as usize } else { self.max_frames as usize }
    }

    /// The page-record quota, the default applied.
    pub fn record_quota(&self) -> usize {
        if self.max_records == 0 { DEFAULT_MAX_RECORDS as usize } else { self.max_records as usize }
    }
}

/// A shared memory region: mapped into every task that holds a capability
/// for it, at the same address in each, and never rolled back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionSpec<'a> {
    pub name: &'a str,
    /// Size in bytes (a multiple of the page size, at most `MAX_REGION_BYTES`).
    pub size: u64,
}

/// One capability as the manifest grants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapSpec<'a> {
    /// Index of the task that holds it.
    pub task: u16,
    pub kind: CapKind,
    /// Its rights (one byte in the image: [`crate::ipc::Rights`]' bits).
    pub rights: crate::ipc::Rights,
    /// Index of the endpoint or notification (0 for supervisor).
    pub object: u32,
    /// Badge delivered with messages sent through it.
    pub badge: u64,
    /// The name `cap_lookup` finds it by.
    pub name: &'a str,
}

/// Everything an image holds, for [`write`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ImageSpec<'a> {
    pub tasks: &'a [TaskSpec<'a>],
    pub endpoints: &'a [&'a str],
    pub notifications: &'a [&'a str],
    pub regions: &'a [RegionSpec<'a>],
    pub caps: &'a [CapSpec<'a>],
}

/// Task flags.
pub mod flags {
    /// Nothing yet; reserved for later issues (fault endpoint, policy...).
    pub const NONE: u32 = 0;
}

/// Why an image or entry was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    TooShort,
    BadMagic,
    BadVersion(u32),
    TooManyTasks(u32),
    SizeMismatch {
        header: u64,
        actual: u64,
    },
    /// Entry `index` points outside the module.
    ElfOutOfBounds {
        index: usize,
    },
    /// Entry `index` has a name that is empty, too long or not UTF-8.
    BadName {
        index: usize,
    },
    /// Entry `index` asks for an unusable stack size.
    BadStack {
        index: usize,
    },
    /// Too many endpoints, notifications or capabilities.
    TooManyObjects,
    /// Entry `index` names a fault endpoint that does not exist.
    BadFaultEndpoint {
        index: usize,
    },
    /// Capability record `index` is malformed (kind, object, task, badge, name).
    BadCap {
        index: usize,
    },
    /// Region record `index` is malformed (name, size).
    BadRegion {
        index: usize,
    },
    /// Entry `index` asks for more page records than any task may hold.
    BadQuota {
        index: usize,
    },
    /// Entry `index` names a CPU at or above [`MAX_CPUS`].
    BadCpu {
        index: usize,
    },
}

impl ImageError {
    pub const fn reason(&self) -> &'static str {
        match self {
            ImageError::TooShort => "image shorter than its header",
            ImageError::BadMagic => "bad image magic",
            ImageError::BadVersion(_) => "unsupported image version",
            ImageError::TooManyTasks(_) => "too many tasks",
            ImageError::SizeMismatch { .. } => "image size does not match its header",
            ImageError::ElfOutOfBounds { .. } => "task ELF lies outside the image",
            ImageError::BadName { .. } => "bad task name",
            ImageError::BadStack { .. } => "bad stack size",
            ImageError::TooManyObjects => "too many endpoints, notifications or capabilities",
            ImageError::BadFaultEndpoint { .. } => "fault endpoint does not exist",
            ImageError::BadCap { .. } => "malformed capability",
            ImageError::BadRegion { .. } => "malformed shared region",
            ImageError::BadQuota { .. } => "page-record quota above the limit",
            ImageError::BadCpu { .. } => "cpu affinity above the most CPUs the kernel runs",
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

/// A parsed, bounds-checked image.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    bytes: &'a [u8],
    count: usize,
    endpoints: usize,
    notifications: usize,
    regions: usize,
    caps: usize,
}

fn name_at(bytes: &[u8]) -> Option<&str> {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    match core::str::from_utf8(&bytes[..len]) {
        Ok(n) if !n.is_empty() => Some(n),
        _ => None,
    }
}

/// Checks the header and the entry table of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Image<'_>, ImageError> {
    if bytes.len() < HEADER_SIZE {
        return Err(ImageError::TooShort);
    }
    if bytes[..8] != MAGIC {
        return Err(ImageError::BadMagic);
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(ImageError::BadVersion(version));
    }
    let count = u32_at(bytes, 12);
    if count as usize > MAX_TASKS {
        return Err(ImageError::TooManyTasks(count));
    }
    let total = u64_at(bytes, 16);
    let (endpoints, notifications, caps, regions) = (
        u32_at(bytes, 24) as usize,
        u32_at(bytes, 28) as usize,
        u32_at(bytes, 32) as usize,
        u32_at(bytes, 36) as usize,
    );
    if endpoints > MAX_OBJECTS || notifications > MAX_OBJECTS || caps > MAX_OBJECTS || regions > MAX_OBJECTS {
        return Err(ImageError::TooManyObjects);
    }
    let tables = HEADER_SIZE
        + count as usize * ENTRY_SIZE
        + (endpoints + notifications) * NAME_LEN
        + regions * REGION_SIZE
        + caps * CAP_SIZE;
    // The module may be padded by the loader, never shorter.
    if total > bytes.len() as u64 || (total as usize) < tables {
        return Err(ImageError::SizeMismatch { header: total, actual: bytes.len() as u64 });
    }
    Ok(Image { bytes: &bytes[..total as usize], count: count as usize, endpoints, notifications, regions, caps })
}

impl<'a> Image<'a> {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The image's size in bytes (a plan for the injector may follow it).
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints
    }

    pub fn notification_count(&self) -> usize {
        self.notifications
    }

    pub fn cap_count(&self) -> usize {
        self.caps
    }

    pub fn region_count(&self) -> usize {
        self.regions
    }

    /// Region record `i`, checked on its own.
    pub fn region(&self, i: usize) -> Option<Result<RegionSpec<'a>, ImageError>> {
        if i >= self.regions {
            return None;
        }
        let at = self.names_start() + (self.endpoints + self.notifications) * NAME_LEN + i * REGION_SIZE;
        let raw = &self.bytes[at..at + REGION_SIZE];
        let size = u64_at(raw, NAME_LEN);
        match name_at(&raw[..NAME_LEN]) {
            Some(name) if size > 0 && size % crate::layout::PAGE_SIZE == 0 && size <= MAX_REGION_BYTES => {
                Some(Ok(RegionSpec { name, size }))
            }
            _ => Some(Err(ImageError::BadRegion { index: i })),
        }
    }

    fn names_start(&self) -> usize {
        HEADER_SIZE + self.count * ENTRY_SIZE
    }

    /// The name of endpoint `i` (`"?"` if unreadable).
    pub fn endpoint_name(&self, i: usize) -> &'a str {
        if i >= self.endpoints {
            return "?";
        }
        let at = self.names_start() + i * NAME_LEN;
        name_at(&self.bytes[at..at + NAME_LEN]).unwrap_or("?")
    }

    /// The name of notification `i` (`"?"` if unreadable).
    pub fn notification_name(&self, i: usize) -> &'a str {
        if i >= self.notifications {
            return "?";
        }
        let at = self.names_start() + (self.endpoints + i) * NAME_LEN;
        name_at(&self.bytes[at..at + NAME_LEN]).unwrap_or("?")
    }

    /// Capability record `index`, checked on its own.
    pub fn cap(&self, index: usize) -> Option<Result<CapSpec<'a>, ImageError>> {
        if index >= self.caps {
            return None;
        }
        let at = self.names_start()
            + (self.endpoints + self.notifications) * NAME_LEN
            + self.regions * REGION_SIZE
            + index * CAP_SIZE;
        let raw = &self.bytes[at..at + CAP_SIZE];
        let bad = Some(Err(ImageError::BadCap { index }));
        let task = u16::from_le_bytes([raw[0], raw[1]]);
        let Some(kind) = CapKind::from_u8(raw[2]) else { return bad };
        let Some(rights) = crate::ipc::Rights::from_bits(raw[3]) else { return bad };
        let object = u32_at(raw, 4);
        let badge = u64_at(raw, 8);
        let Some(name) = name_at(&raw[16..16 + NAME_LEN]) else { return bad };
        let object_ok = match kind {
            CapKind::Endpoint => (object as usize) < self.endpoints,
            CapKind::Notification => (object as usize) < self.notifications,
            CapKind::Supervisor => object == 0,
            CapKind::Region => (object as usize) < self.regions,
        };
        if task as usize >= self.count || !object_ok || badge > crate::ipc::MAX_BADGE {
            return bad;
        }
        Some(Ok(CapSpec { task, kind, rights, object, badge, name }))
    }

    /// Entry `index`, checked on its own.
    pub fn task(&self, index: usize) -> Option<Result<TaskSpec<'a>, ImageError>> {
        if index >= self.count {
            return None;
        }
        let e = HEADER_SIZE + index * ENTRY_SIZE;
        let raw = &self.bytes[e..e + ENTRY_SIZE];
        let Some(name) = name_at(&raw[..NAME_LEN]) else {
            return Some(Err(ImageError::BadName { index }));
        };
        let offset = u64_at(raw, 24);
        let size = u64_at(raw, 32);
        let stack_bytes = u64_at(raw, 40);
        let priority = raw[48];
        let flags = u32_at(raw, 52);
        let arg = u64_at(raw, 56);
        let (watchdog_ms, max_restarts, restart_window_ms) = (u32_at(raw, 64), u32_at(raw, 68), u32_at(raw, 72));
        let (max_frames, max_records) = (u32_at(raw, 76), u32_at(raw, 80));
        if max_records > MAX_RECORDS_LIMIT {
            return Some(Err(ImageError::BadQuota { index }));
        }
        let core_dumps = u32_at(raw, 84);
        let instance = u32_at(raw, 88);
        let cpu = match u32_at(raw, 92) {
            0 => ANY_CPU,
            n if n - 1 < MAX_CPUS => n - 1,
            _ => return Some(Err(ImageError::BadCpu { index })),
        };
        let fault_endpoint = match u16::from_le_bytes([raw[50], raw[51]]) {
            NO_ENDPOINT => None,
            e if (e as usize) < self.endpoints => Some(e),
            _ => return Some(Err(ImageError::BadFaultEndpoint { index })),
        };
        let end = match offset.checked_add(size) {
            Some(end) if end <= self.bytes.len() as u64 => end,
            _ => return Some(Err(ImageError::ElfOutOfBounds { index })),
        };
        if stack_bytes == 0
            || stack_bytes % crate::layout::PAGE_SIZE != 0
            || stack_bytes > crate::layout::MAX_STACK_BYTES
        {
            return Some(Err(ImageError::BadStack { index }));
        }
        let elf = &self.bytes[offset as usize..end as usize];
        Some(Ok(TaskSpec {
            name,
            elf,
            priority,
            stack_bytes,
            flags,
            arg,
            fault_endpoint,
            watchdog_ms,
            max_restarts,
            restart_window_ms,
            max_frames,
            max_records,
            core_dumps,
            instance,
            cpu,
        }))
    }
}

/// Packs an image (host side). Identical ELF files are stored once and
/// shared by their entries (32 instances of a task cost one copy).
#[cfg(feature = "alloc")]
pub fn write(spec: &ImageSpec<'_>) -> alloc::vec::Vec<u8> {
    use alloc::vec::Vec;
    fn name_field(name: &str) -> [u8; NAME_LEN] {
        let mut out = [0u8; NAME_LEN];
        let n = name.len().min(NAME_LEN);
        out[..n].copy_from_slice(&name.as_bytes()[..n]);
        out
    }
    let tasks = spec.tasks;
    let mut tables = Vec::new();
    let mut blobs = Vec::new();
    let mut stored: Vec<(&[u8], u64)> = Vec::new();
    let data_start = HEADER_SIZE
        + tasks.len() * ENTRY_SIZE
        + (spec.endpoints.len() + spec.notifications.len()) * NAME_LEN
        + spec.regions.len() * REGION_SIZE
        + spec.caps.len() * CAP_SIZE;
    for t in tasks {
        let offset = match stored.iter().find(|(elf, _)| *elf == t.elf) {
            Some(&(_, offset)) => offset,
            None => {
                while (data_start + blobs.len()) % 8 != 0 {
                    blobs.push(0);
                }
                let offset = (data_start + blobs.len()) as u64;
                blobs.extend_from_slice(t.elf);
                stored.push((t.elf, offset));
                offset
            }
        };
        let mut entry = [0u8; ENTRY_SIZE];
        entry[..NAME_LEN].copy_from_slice(&name_field(t.name));
        entry[24..32].copy_from_slice(&offset.to_le_bytes());
        entry[32..40].copy_from_slice(&(t.elf.len() as u64).to_le_bytes());
        entry[40..48].copy_from_slice(&t.stack_bytes.to_le_bytes());
        entry[48] = t.priority;
        entry[50..52].copy_from_slice(&t.fault_endpoint.unwrap_or(NO_ENDPOINT).to_le_bytes());
        entry[52..56].copy_from_slice(&t.flags.to_le_bytes());
        entry[56..64].copy_from_slice(&t.arg.to_le_bytes());
        entry[64..68].copy_from_slice(&t.watchdog_ms.to_le_bytes());
        entry[68..72].copy_from_slice(&t.max_restarts.to_le_bytes());
        entry[72..76].copy_from_slice(&t.restart_window_ms.to_le_bytes());
        entry[76..80].copy_from_slice(&t.max_frames.to_le_bytes());
        entry[80..84].copy_from_slice(&t.max_records.to_le_bytes());
        entry[84..88].copy_from_slice(&t.core_dumps.to_le_bytes());
        entry[88..92].copy_from_slice(&t.instance.to_le_bytes());
        // 0 = any CPU (what an entry packed before the field holds).
        let cpu = if t.cpu == ANY_CPU { 0 } else { t.cpu.wrapping_add(1) };
        entry[92..96].copy_from_slice(&cpu.to_le_bytes());
        tables.extend_from_slice(&entry);
    }
    for name in spec.endpoints.iter().chain(spec.notifications) {
        tables.extend_from_slice(&name_field(name));
    }
    for r in spec.regions {
        tables.extend_from_slice(&name_field(r.name));
        tables.extend_from_slice(&r.size.to_le_bytes());
    }
    for c in spec.caps {
        let mut rec = [0u8; CAP_SIZE];
        rec[0..2].copy_from_slice(&c.task.to_le_bytes());
        rec[2] = c.kind as u8;
        rec[3] = c.rights.bits();
        rec[4..8].copy_from_slice(&c.object.to_le_bytes());
        rec[8..16].copy_from_slice(&c.badge.to_le_bytes());
        rec[16..16 + NAME_LEN].copy_from_slice(&name_field(c.name));
        tables.extend_from_slice(&rec);
    }
    let total = (data_start + blobs.len()) as u64;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(tasks.len() as u32).to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&(spec.endpoints.len() as u32).to_le_bytes());
    out.extend_from_slice(&(spec.notifications.len() as u32).to_le_bytes());
    out.extend_from_slice(&(spec.caps.len() as u32).to_le_bytes());
    out.extend_from_slice(&(spec.regions.len() as u32).to_le_bytes());
    out.extend_from_slice(&tables);
    out.extend_from_slice(&blobs);
    out
}

/// Packs an image of tasks only (no IPC objects).
#[cfg(feature = "alloc")]
pub fn write_tasks(tasks: &[TaskSpec<'_>]) -> alloc::vec::Vec<u8> {
    write(&ImageSpec { tasks, ..ImageSpec::default() })
}

/// The body of the image parser's fuzz target (`abi/fuzz`, `cargo fuzz run
/// image_parse`) and of its seeded property test: parses `data` as a boot
/// image and reads every task, object and capability it claims. It must
/// never panic; what it accepts must lie inside `data`.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    let Ok(img) = parse(data) else { return };
    assert!(img.size() <= data.len());
    for i in 0..img.len() + 2 {
        if let Some(Ok(t)) = img.task(i) {
            assert!(t.elf.len() <= data.len() && t.name.len() <= NAME_LEN);
        }
    }
    for i in 0..img.cap_count() + 2 {
        let _ = img.cap(i);
    }
    for i in 0..img.region_count() + 2 {
        if let Some(Ok(r)) = img.region(i) {
            assert!(r.size <= MAX_REGION_BYTES);
        }
    }
    for i in 0..img.endpoint_count() {
        let _ = img.endpoint_name(i);
    }
    for i in 0..img.notification_count() {
        let _ = img.notification_name(i);
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    fn spec<'a>(name: &'a str, elf: &'a [u8]) -> TaskSpec<'a> {
        TaskSpec { name, elf, priority: 2, stack_bytes: 16384, arg: 7, watchdog_ms: 50, ..TaskSpec::default() }
    }

    #[test]
    fn objects_and_caps_round_trip() {
        let tasks = [spec("server", b"elf1"), TaskSpec { fault_endpoint: Some(1), ..spec("client", b"elf2") }];
        let caps = [
            CapSpec {
                task: 0,
                kind: CapKind::Endpoint,
                rights: crate::ipc::Rights::RECV,
                object: 0,
                badge: 0,
                name: "ping",
            },
            CapSpec {
                task: 1,
                kind: CapKind::Endpoint,
                rights: crate::ipc::Rights::SEND,
                object: 0,
                badge: 42,
                name: "ping",
            },
            CapSpec {
                task: 0,
                kind: CapKind::Supervisor,
                rights: crate::ipc::Rights::empty(),
                object: 0,
                badge: 0,
                name: "supervisor",
            },
        ];
        let regions = [RegionSpec { name: "bank", size: 8192 }];
        let bytes = write(&ImageSpec {
            tasks: &tasks,
            endpoints: &["ping", "faults"],
            notifications: &["tick"],
            regions: &regions,
            caps: &caps,
        });
        let image = parse(&bytes).unwrap();
        assert_eq!(image.region(0), Some(Ok(regions[0])));
        assert_eq!(image.region(1), None);
        assert_eq!(image.task(1), Some(Ok(tasks[1])));
        assert_eq!((image.endpoint_name(1), image.notification_name(0)), ("faults", "tick"));
        for (i, c) in caps.iter().enumerate() {
            assert_eq!(image.cap(i), Some(Ok(*c)));
        }
        assert_eq!(image.cap(3), None);
    }

    #[test]
    fn bad_caps_are_rejected_one_by_one() {
        let tasks = [spec("a", b"elf")];
        let caps = [
            CapSpec {
                task: 0,
                kind: CapKind::Endpoint,
                rights: crate::ipc::Rights::SEND,
                object: 0,
                badge: 0,
                name: "ok",
            },
            CapSpec {
                task: 0,
                kind: CapKind::Endpoint,
                rights: crate::ipc::Rights::SEND,
                object: 5,
                badge: 0,
                name: "no-such-object",
            },
            CapSpec {
                task: 9,
                kind: CapKind::Endpoint,
                rights: crate::ipc::Rights::SEND,
                object: 0,
                badge: 0,
                name: "no-such-task",
            },
            CapSpec {
                task: 0,
                kind: CapKind::Endpoint,
                rights: crate::ipc::Rights::SEND,
                object: 0,
                badge: crate::ipc::FAULT_BADGE,
                name: "forged",
            },
        ];
        let bytes = write(&ImageSpec { tasks: &tasks, endpoints: &["e"], caps: &caps, ..ImageSpec::default() });
        let image = parse(&bytes).unwrap();
        assert!(image.cap(0).unwrap().is_ok());
        for i in 1..4 {
            assert_eq!(image.cap(i), Some(Err(ImageError::BadCap { index: i })), "cap {i}");
        }
    }

    /// A rights byte with a bit outside `ipc::Rights` is refused (the
    /// bits a manifest can grant read back as they were written).
    #[test]
    fn unknown_rights_bits_are_rejected() {
        let tasks = [spec("a", b"elf")];
        let caps = [CapSpec {
            task: 0,
            kind: CapKind::Endpoint,
            rights: crate::ipc::Rights::all(),
            object: 0,
            badge: 1,
            name: "the-cap",
        }];
        let mut bytes = write(&ImageSpec { tasks: &tasks, endpoints: &["e"], caps: &caps, ..ImageSpec::default() });
        let name = bytes.windows(7).position(|w| w == b"the-cap").unwrap();
        let at = name - 16 + 3;
        assert_eq!(bytes[at], 0b11, "SEND | RECV: the bits of the format");
        for (raw, ok) in [(0b01, true), (0b10, true), (0, true), (0b100, false), (0x80, false), (0xff, false)] {
            bytes[at] = raw;
            let image = parse(&bytes).unwrap();
            match image.cap(0) {
                Some(Ok(c)) => assert!(ok && c.rights.bits() == raw, "rights {raw:#x} read as {:?}", c.rights),
                other => {
                    assert!(!ok && other == Some(Err(ImageError::BadCap { index: 0 })), "rights {raw:#x}: {other:?}")
                }
            }
        }
    }

    #[test]
    fn round_trips() {
        let tasks = [spec("hello", b"\x7fELF-one"), TaskSpec { core_dumps: 4, instance: 3, ..spec("world", b"two") }];
        let bytes = write_tasks(&tasks);
        let image = parse(&bytes).unwrap();
        assert_eq!(image.len(), 2);
        assert_eq!(image.task(0), Some(Ok(tasks[0])));
        assert_eq!(image.task(1), Some(Ok(tasks[1])));
        assert_eq!(image.task(2), None);
    }

    #[test]
    fn cpu_affinity_round_trips_and_zero_means_any() {
        let tasks =
            [spec("any", b"e"), TaskSpec { cpu: 0, ..spec("boot", b"e") }, TaskSpec { cpu: 3, ..spec("three", b"e") }];
        let mut bytes = write_tasks(&tasks);
        let image = parse(&bytes).unwrap();
        for (i, t) in tasks.iter().enumerate() {
            assert_eq!(image.task(i), Some(Ok(*t)));
        }
        // An entry packed before the field existed holds zeros there: any CPU.
        let e0 = HEADER_SIZE;
        assert_eq!(bytes[e0 + 92..e0 + 96], [0; 4]);
        // Past the most CPUs: that entry alone is rejected.
        let e2 = HEADER_SIZE + 2 * ENTRY_SIZE;
        bytes[e2 + 92..e2 + 96].copy_from_slice(&(MAX_CPUS + 1).to_le_bytes());
        let image = parse(&bytes).unwrap();
        assert_eq!(image.task(2), Some(Err(ImageError::BadCpu { index: 2 })));
        assert!(image.task(1).unwrap().is_ok());
    }

    #[test]
    fn identical_elfs_are_stored_once() {
        let elf = [7u8; 1000];
        let one = write_tasks(&[spec("a", &elf)]);
        let two = write_tasks(&[spec("a", &elf), spec("b", &elf)]);
        assert_eq!(two.len(), one.len() + ENTRY_SIZE);
        let image = parse(&two).unwrap();
        assert_eq!(image.task(1).unwrap().unwrap().elf, &elf[..]);
    }

    #[test]
    fn rejects_bad_headers() {
        let bytes = write_tasks(&[spec("a", b"x")]);
        assert_eq!(parse(&bytes[..10]).unwrap_err(), ImageError::TooShort);
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(parse(&bad).unwrap_err(), ImageError::BadMagic);
        let mut bad = bytes.clone();
        bad[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(parse(&bad).unwrap_err(), ImageError::TooManyTasks(1000)));
        assert!(matches!(parse(&bytes[..bytes.len() - 1]).unwrap_err(), ImageError::SizeMismatch { .. }));
    }

    #[test]
    fn a_bad_entry_does_not_hide_the_good_ones() {
        let mut bytes = write_tasks(&[spec("good", b"elf"), spec("bad", b"elf2")]);
        let e1 = HEADER_SIZE + ENTRY_SIZE;
        bytes[e1 + 24..e1 + 32].copy_from_slice(&u64::MAX.to_le_bytes());
        let image = parse(&bytes).unwrap();
        assert!(image.task(0).unwrap().is_ok());
        assert_eq!(image.task(1), Some(Err(ImageError::ElfOutOfBounds { index: 1 })));
    }

    /// Seeded property test over hostile images (the same body as the
    /// cargo-fuzz target `image_parse`): a valid image with random bytes
    /// flipped, truncated or extended, and pure noise.
    #[test]
    fn random_and_mutated_images_never_panic_the_parser() {
        let caps = [CapSpec {
            task: 0,
            kind: crate::ipc::CapKind::Endpoint,
            rights: crate::ipc::Rights::all(),
            object: 0,
            badge: 1,
            name: "ep",
        }];
        let tasks = [spec("server", b"elf1elf1"), TaskSpec { fault_endpoint: Some(0), ..spec("client", b"elf2") }];
        let regions = [RegionSpec { name: "r", size: 8192 }];
        let good = write(&ImageSpec {
            tasks: &tasks,
            endpoints: &["ep"],
            notifications: &["n"],
            regions: &regions,
            caps: &caps,
        });
        fuzz_parse(&good);
        let mut s: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for round in 0..50_000 {
            let mut b = good.clone();
            for _ in 0..1 + next() % 8 {
                let i = (next() as usize) % b.len();
                b[i] = match next() % 4 {
                    0 => 0xff,
                    1 => 0,
                    _ => next() as u8,
                };
            }
            match round % 5 {
                0 => b.truncate((next() as usize) % b.len()),
                1 => b.extend((0..next() % 64).map(|_| next() as u8)),
                2 => b = (0..next() % 512).map(|_| next() as u8).collect(),
                _ => {}
            }
            fuzz_parse(&b);
        }
    }
}
