//! The boot image: the task images of one manifest, packed by `xtask` and
//! handed to the kernel as a PVH boot module (QEMU's `-initrd`).
//!
//! ```text
//! Header   magic "RWNDIMG1", version, task count, total size
//! Entry[count]   one fixed-size record per task (name, where its ELF is,
//!                scheduling and recovery parameters)
//! ELF bytes      the task images, each 8-byte aligned
//! ```
//!
//! The kernel treats the module as hostile: [`parse`] checks the header and
//! table bounds, and [`Image::task`] checks each entry on its own, so one bad
//! entry is rejected with a reason while the others still load.

/// Magic at offset 0.
pub const MAGIC: [u8; 8] = *b"RWNDIMG1";
/// Format version.
pub const VERSION: u32 = 1;
/// Longest task name.
pub const NAME_LEN: usize = 24;
/// Most tasks in one image.
pub const MAX_TASKS: usize = 64;

/// Size of the header in bytes.
pub const HEADER_SIZE: usize = 24;
/// Size of one entry in bytes.
pub const ENTRY_SIZE: usize = 64;

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
    SizeMismatch { header: u64, actual: u64 },
    /// Entry `index` points outside the module.
    ElfOutOfBounds { index: usize },
    /// Entry `index` has a name that is empty, too long or not UTF-8.
    BadName { index: usize },
    /// Entry `index` asks for an unusable stack size.
    BadStack { index: usize },
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
    // The module may be padded by the loader, never shorter.
    if total > bytes.len() as u64 || (total as usize) < HEADER_SIZE + count as usize * ENTRY_SIZE {
        return Err(ImageError::SizeMismatch { header: total, actual: bytes.len() as u64 });
    }
    Ok(Image { bytes: &bytes[..total as usize], count: count as usize })
}

impl<'a> Image<'a> {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Entry `index`, checked on its own.
    pub fn task(&self, index: usize) -> Option<Result<TaskSpec<'a>, ImageError>> {
        if index >= self.count {
            return None;
        }
        let e = HEADER_SIZE + index * ENTRY_SIZE;
        let raw = &self.bytes[e..e + ENTRY_SIZE];
        let name_bytes = &raw[..NAME_LEN];
        let name_len = name_bytes.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        let name = match core::str::from_utf8(&name_bytes[..name_len]) {
            Ok(n) if !n.is_empty() => n,
            _ => return Some(Err(ImageError::BadName { index })),
        };
        let offset = u64_at(raw, 24);
        let size = u64_at(raw, 32);
        let stack_bytes = u64_at(raw, 40);
        let priority = raw[48];
        let flags = u32_at(raw, 52);
        let arg = u64_at(raw, 56);
        let end = match offset.checked_add(size) {
            Some(end) if end <= self.bytes.len() as u64 => end,
            _ => return Some(Err(ImageError::ElfOutOfBounds { index })),
        };
        if stack_bytes == 0 || stack_bytes % crate::layout::PAGE_SIZE != 0 || stack_bytes > crate::layout::MAX_STACK_BYTES {
            return Some(Err(ImageError::BadStack { index }));
        }
        let elf = &self.bytes[offset as usize..end as usize];
        Some(Ok(TaskSpec { name, elf, priority, stack_bytes, flags, arg }))
    }
}

/// Packs `tasks` into an image (host side). Identical ELF files are stored
/// once and shared by their entries (32 instances of a task cost one copy).
#[cfg(feature = "alloc")]
pub fn write(tasks: &[TaskSpec<'_>]) -> alloc::vec::Vec<u8> {
    let mut table = alloc::vec::Vec::new();
    let mut blobs = alloc::vec::Vec::new();
    let mut stored: alloc::vec::Vec<(&[u8], u64)> = alloc::vec::Vec::new();
    let data_start = HEADER_SIZE + tasks.len() * ENTRY_SIZE;
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
        let name = t.name.as_bytes();
        let n = name.len().min(NAME_LEN);
        entry[..n].copy_from_slice(&name[..n]);
        entry[24..32].copy_from_slice(&offset.to_le_bytes());
        entry[32..40].copy_from_slice(&(t.elf.len() as u64).to_le_bytes());
        entry[40..48].copy_from_slice(&t.stack_bytes.to_le_bytes());
        entry[48] = t.priority;
        entry[52..56].copy_from_slice(&t.flags.to_le_bytes());
        entry[56..64].copy_from_slice(&t.arg.to_le_bytes());
        table.extend_from_slice(&entry);
    }
    let total = (data_start + blobs.len()) as u64;
    let mut out = alloc::vec::Vec::with_capacity(total as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(tasks.len() as u32).to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&table);
    out.extend_from_slice(&blobs);
    out
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    fn spec<'a>(name: &'a str, elf: &'a [u8]) -> TaskSpec<'a> {
        TaskSpec { name, elf, priority: 2, stack_bytes: 16384, flags: 0, arg: 7 }
    }

    #[test]
    fn round_trips() {
        let tasks = [spec("hello", b"\x7fELF-one"), spec("world", b"two")];
        let bytes = write(&tasks);
        let image = parse(&bytes).unwrap();
        assert_eq!(image.len(), 2);
        assert_eq!(image.task(0), Some(Ok(tasks[0])));
        assert_eq!(image.task(1), Some(Ok(tasks[1])));
        assert_eq!(image.task(2), None);
    }

    #[test]
    fn identical_elfs_are_stored_once() {
        let elf = [7u8; 1000];
        let one = write(&[spec("a", &elf)]);
        let two = write(&[spec("a", &elf), spec("b", &elf)]);
        assert_eq!(two.len(), one.len() + ENTRY_SIZE);
        let image = parse(&two).unwrap();
        assert_eq!(image.task(1).unwrap().unwrap().elf, &elf[..]);
    }

    #[test]
    fn rejects_bad_headers() {
        let bytes = write(&[spec("a", b"x")]);
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
        let mut bytes = write(&[spec("good", b"elf"), spec("bad", b"elf")]);
        let e1 = HEADER_SIZE + ENTRY_SIZE;
        bytes[e1 + 24..e1 + 32].copy_from_slice(&u64::MAX.to_le_bytes());
        let image = parse(&bytes).unwrap();
        assert!(image.task(0).unwrap().is_ok());
        assert_eq!(image.task(1), Some(Err(ImageError::ElfOutOfBounds { index: 1 })));
    }
}
