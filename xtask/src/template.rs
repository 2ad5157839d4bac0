//! `cargo xtask new NAME [--dir DIR]`: a task crate of its own, anywhere.
//!
//! Writes `DIR/NAME/` (DIR: the current directory by default):
//!
//! | file | what |
//! |---|---|
//! | `Cargo.toml` | package NAME, `[[bin]]` NAME, `libtask` by path to this checkout, an empty `[workspace]` |
//! | `src/main.rs` | `libtask::entry!`, a `Mutex<u64>` in a shared region's typed statics, rounds in checkpoint scopes, one deliberate fault the fault server rolls back, a `check` |
//! | `NAME.toml` | the image: Rewind's fault server and the task (`path = "."`) |
//! | `Cargo.lock` | a copy of Rewind's: the dependency versions its tasks use |
//! | `rust-toolchain.toml`, `.cargo/config.toml` | Rewind's toolchain, the task target and build-std: a plain `cargo build` (or an editor) in the folder works too |
//! | `.gitignore` | `/target` |
//!
//! The empty `[workspace]` makes the crate its own workspace root, so it
//! works inside another project's tree (even Rewind's) as well as alone.
//! `cargo xtask run --image DIR/NAME/NAME.toml` builds and boots it
//! (`sources.rs` builds it from its folder). The generated files hold
//! absolute paths to this checkout (libtask, the target spec): they are
//! the user's files, outside the repository; a crate meant to be shared
//! names libtask by `git` instead (see `docs/first-task.md`).

use crate::paths;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Whether `name` can be a crate, binary and task name at once.
pub fn check_name(name: &str) -> Result<()> {
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_lowercase()) || !ok_chars {
        bail!("task name {name:?}: use lowercase letters, digits, `-` and `_`, starting with a letter");
    }
    if name.len() > abi::image::NAME_LEN {
        bail!("task name {name:?} is {} bytes; a task's name is at most {}", name.len(), abi::image::NAME_LEN);
    }
    if ["libtask", "test", "core", "alloc", "std"].contains(&name) {
        bail!("task name {name:?} is taken by a crate it needs");
    }
    Ok(())
}

/// Writes the crate `dir/name`; returns its folder. Refuses to write into
/// a folder that exists.
pub fn create(name: &str, dir: &Path) -> Result<PathBuf> {
    check_name(name)?;
    let root = std::path::absolute(dir.join(name))?;
    if root.exists() {
        bail!("{} exists already: choose another NAME or --dir", root.display());
    }
    let rewind = paths::root().canonicalize().context("finding the Rewind checkout")?;
    let files = [
        ("Cargo.toml".to_string(), cargo_toml(name, &rewind)),
        ("src/main.rs".to_string(), main_rs(name)),
        (format!("{name}.toml"), manifest(name)),
        (".cargo/config.toml".to_string(), cargo_config(&rewind)),
        (".gitignore".to_string(), "/target\n".to_string()),
    ];
    for (rel, text) in &files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("files are in the crate"))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    for copied in ["Cargo.lock", "rust-toolchain.toml"] {
        std::fs::copy(rewind.join(copied), root.join(copied)).with_context(|| format!("copying {copied}"))?;
    }
    Ok(root)
}

/// TOML string literal of a path (TOML basic strings escape `\` and `"`).
fn toml_str(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

fn cargo_toml(name: &str, rewind: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[[bin]]
name = "{name}"     # what the manifest's `bin` names
path = "src/main.rs"
test = false
bench = false

[dependencies]
# Everything a task is written against. Another checkout, or
# libtask = {{ git = "https://…/rewind" }}, works the same.
libtask = {{ path = {libtask} }}
# `#[derive(FromBytes)]` for what lives in shared regions (libtask::sync).
zerocopy = {{ version = "0.8.63", default-features = false, features = ["derive"] }}

# Its own workspace: builds the same inside another project's tree.
[workspace]

# As Rewind's own tasks are built (debug info kept for backtraces and cores).
[profile.dev]
opt-level = 1

[profile.release]
debug = true
"#,
        libtask = toml_str(&rewind.join("libtask")),
    )
}

fn cargo_config(rewind: &Path) -> String {
    format!(
        r#"# For a plain `cargo build` (or an editor) in this folder. `cargo xtask
# run --image NAME.toml` in the Rewind checkout passes the same itself.
[build]
target = {spec}

[unstable]
build-std = ["core", "alloc", "compiler_builtins"]
build-std-features = ["compiler-builtins-mem"]
json-target-spec = true
"#,
        spec = toml_str(&rewind.join("targets/x86_64-rewind-task.json")),
    )
}

fn manifest(name: &str) -> String {
    format!(
        r#"# The image of `{name}`: boot it from the Rewind checkout with
#   cargo xtask run --image path/to/{name}/{name}.toml
# Keys: docs/manifest.md. A task without `path` is one of Rewind's own
# (here the fault server); `path` is relative to this file.
description = "{name}: a task from its own crate"
endpoints = ["faults"]

[[region]]
name = "shared"
size_kib = 4

[[task]]
name = "fault-server"
bin = "fault-server"
priority = 0
stack_kib = 128
caps = ["faults:recv", "supervisor"]

[[task]]
name = "{name}"
bin = "{name}"
path = "."
caps = ["shared:map"]
"#
    )
}

fn main_rs(name: &str) -> String {
    MAIN_RS.replace("NAME", name)
}

const MAIN_RS: &str = r#"//! `NAME`: a Rewind task in a crate of its own (from `cargo xtask new`).
//!
//! It adds 1 to a counter, `ROUNDS` times, each time in a checkpoint scope
//! and under a `Mutex<u64>` in the shared region `shared`. In round
//! `FAULTY_ROUND` its first attempt executes an invalid instruction while
//! holding the lock. The fault server then releases the lock (poisoned)
//! and rolls the scope back: the task's memory and registers are as they
//! were when the scope opened, and the scope runs again. At the end the
//! task reports the check `NAME:count` (ok if the count is `ROUNDS`) and
//! exits 0. Run it with `cargo xtask run --image NAME.toml`.
#![no_std]
#![no_main]

use libtask::checkpoint::checkpoint;
use libtask::sync::{FromBytes, Mutex, Region};
use libtask::{Start, println, report};

libtask::entry!(main);

const ROUNDS: u64 = 5;
const FAULTY_ROUND: u64 = 3;
/// What the image's tasks share in region `shared`: one `#[repr(C)]`
/// struct whose every field is valid for any bytes (`FromBytes`: another
/// task may write anything there). The region starts zeroed, so `count` is
/// an unlocked `Mutex` over 0 before anyone touches it.
#[derive(FromBytes)]
#[repr(C)]
struct Shared {
    count: Mutex<u64>,
}

fn main(start: Start) -> u64 {
    let region = match Region::<Shared>::open("shared") {
        Ok(r) => r,
        Err(e) => {
            println!("NAME: cannot open region `shared`: {e}");
            return 1;
        }
    };
    let count = &region.statics().count;
    for round in 1..=ROUNDS {
        let done = checkpoint(|attempt| {
            if attempt.is_retry() {
                println!("NAME: round {round} again, after a fault (attempt {})", attempt.number);
            }
            let mut n = match count.lock() {
                Ok(guard) => guard,
                // The last holder faulted with the lock held, and the fault
                // server released it poisoned. Here the fault comes before
                // the write below, so the count is intact: carry on.
                Err(poisoned) => {
                    count.clear_poison();
                    poisoned.into_inner()
                }
            };
            if round == FAULTY_ROUND && !attempt.is_retry() {
                // A bug, on purpose: an invalid instruction, lock held.
                // SAFETY: `ud2` touches no memory or register; it faults,
                // and the fault server rolls this scope back.
                unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
            }
            *n += 1;
            *n
        });
        match done {
            Ok(n) => println!("NAME {}: round {round} done, count = {n}", start.id),
            Err(e) => {
                println!("NAME: checkpoint: {e:?}");
                return 1;
            }
        }
    }
    let total = match count.lock() {
        Ok(n) => *n,
        Err(poisoned) => *poisoned.into_inner(),
    };
    report("NAME:count", total == ROUNDS, total);
    0
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        check_name("my-app").unwrap();
        for bad in ["", "My", "1app", "a b", "libtask", "a-name-longer-than-24-bytes"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_manifest_it_writes_passes_check() {
        let dir = std::env::temp_dir().join(format!("rewind-template-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let krate = create("tmpl", &dir).unwrap();
        let m = crate::images::Manifest::load(krate.join("tmpl.toml").to_str().unwrap());
        let again = create("tmpl", &dir).map(|_| ()).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        let m = m.unwrap();
        assert_eq!(m.tasks[1].path.as_deref(), Some("."));
        assert!(again.contains("exists already"), "{again}");
    }
}
