//! Host-side loading (feature `std`): executables and ELF core files.
//!
//! Design note: the walker itself only sees byte slices, addresses and a
//! [`crate::Memory`]. Getting those out of files is host work, shared by the
//! `cargo xtask stack` tool and the gdb comparison tests, so it lives here
//! behind the `std` feature and never reaches the kernel. Errors are strings
//! that name the file and what is wrong with it, for humans.

mod core_file;
mod elf;

pub use core_file::CoreFile;
pub use elf::Executable;

/// A load error, with a message naming the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(pub std::string::String);

impl core::fmt::Display for HostError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostError {}

fn err<T>(msg: impl Into<std::string::String>) -> Result<T, HostError> {
    Err(HostError(msg.into()))
}

/// The `GNU` build id (`NT_GNU_BUILD_ID`) in the `PT_NOTE` segments of an
/// ELF file — an executable linked with `--build-id`, or a core file that
/// names its executable's (Rewind's task cores do) — if it has one.
pub fn build_id(elf_bytes: &[u8]) -> Option<std::vec::Vec<u8>> {
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::{LittleEndian as LE, elf};
    let hdr = elf::FileHeader64::<LE>::parse(elf_bytes).ok()?;
    for ph in hdr.program_headers(LE, elf_bytes).ok()? {
        let Ok(Some(mut notes)) = ph.notes(LE, elf_bytes) else { continue };
        while let Ok(Some(n)) = notes.next() {
            if n.name() == b"GNU" && n.n_type(LE) == elf::NT_GNU_BUILD_ID {
                return Some(n.desc().to_vec());
            }
        }
    }
    None
}
