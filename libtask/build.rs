//! Puts `targets/task.ld` on the linker's search path of every task.
//!
//! Every task depends on libtask, and `cargo:rustc-link-search` (unlike
//! `cargo:rustc-link-arg`) propagates from a library to the binaries that
//! depend on it. The task target (`targets/x86_64-rewind-task.json`) passes
//! `-Ttask.ld` in its `pre-link-args`; lld resolves a `-T` name that is not a
//! file in its working directory against the `-L` paths, and it collects all
//! `-L` paths before it reads any script, so the order of the two does not
//! matter. The result: a task needs no build.rs of its own. The full story is
//! in the comment at the top of `targets/task.ld`.
fn main() {
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let targets = manifest.join("../targets");
    let script = targets.join("task.ld");
    let targets = targets.canonicalize().expect("the targets/ folder exists");
    assert!(script.exists(), "targets/task.ld is missing");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-search=native={}", targets.display());
}
