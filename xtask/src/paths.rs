//! Where things are. Everything is relative to the workspace root, found
//! from this crate's manifest directory at compile time.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root").to_path_buf()
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { root().join(dir) }
        }
        None => root().join("target"),
    }
}

/// Outputs of runs: event streams, consoles, reports (`target/rewind`).
pub fn rewind_dir() -> PathBuf {
    target_dir().join("rewind")
}

/// The target specification for the kernel.
pub fn kernel_target_spec() -> PathBuf {
    root().join("targets/x86_64-rewind-kernel.json")
}

/// The target specification for tasks (the linker script, `task.ld`,
/// reaches them through libtask's build script).
pub fn task_target_spec() -> PathBuf {
    root().join("targets/x86_64-rewind-task.json")
}
