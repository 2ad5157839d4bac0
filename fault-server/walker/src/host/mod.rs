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
