//! Rewind's host build tool, as a library.
//!
//! `main.rs` is the `cargo xtask` command line; the QEMU integration tests
//! (`qemu-tests/`) use the same modules, so a test boots the system exactly
//! the way `cargo xtask run` does.
//!
//! | module    | job |
//! |-----------|-----|
//! | `paths`   | where the workspace, targets and run outputs are |
//! | `build`   | builds the kernel and tasks with build-std for `targets/*.json` |
//! | `images`  | image manifests (`images/*.toml`) and packing boot images |
//! | `sources` | where a manifest's task crates are (in the tree or anywhere), building only those |
//! | `template`| `cargo xtask new`: a task crate and its manifest, outside the tree |
//! | `qemu`    | finds (or installs) QEMU, boots an image, returns the verdict |
//! | `install` | installs a missing Debian package, or says what to install |
//! | `symbols` | names the pcs of kernel backtraces with the kernel ELF |
//! | `events`  | decodes COM2's typed event records (postcard + COBS) to the JSON lines of `docs/events.md` |
//! | `cores`   | writes the task core files the fault server streams as `core_*` events |
//! | `inject`  | `cargo xtask inject`: fault-injection scripts, parallel boots, classification, reports |
//! | `bench`   | `cargo xtask bench`: boots the benchmark image under icount, reads its figures |

pub mod bench;
pub mod build;
pub mod cores;
pub mod events;
#[cfg(test)]
mod events_doc;
pub mod images;
pub mod inject;
pub mod install;
pub mod paths;
pub mod qemu;
pub mod sources;
pub mod symbols;
pub mod template;
