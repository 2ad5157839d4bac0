//! Links the kernel with `targets/kernel.ld`.
//!
//! The script path is passed from here rather than from rustflags because a
//! relative `-T` in rustflags is resolved against the wrong directory.
fn main() {
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let script = manifest.join("../targets/kernel.ld");
    let script = script.canonicalize().expect("targets/kernel.ld exists");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rustc-link-arg-bins=--no-pie");
}
