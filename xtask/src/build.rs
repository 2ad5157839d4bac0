//! Building the target crates with build-std.
//!
//! The kernel (and later the tasks) are built for the JSON targets in
//! `targets/` with `core`, `alloc` and `compiler_builtins` rebuilt from
//! source, so that they too get unwind tables (the targets set
//! `default-uwtable`): every function, `core` included, has an FDE. build-std
//! is passed here, not in a workspace-wide config, so host builds stay fast.

use crate::paths;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    #[default]
    Debug,
    Release,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// A `cargo build` for a custom target with build-std.
fn cargo_build(package: &str, target_spec: &std::path::Path, profile: Profile) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(paths::root()).args(["build", "--package", package, "--target"]).arg(target_spec).args([
        "-Zbuild-std=core,alloc,compiler_builtins",
        "-Zbuild-std-features=compiler-builtins-mem",
        "-Zjson-target-spec",
    ]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    let status = cmd.status().with_context(|| format!("running cargo to build {package}"))?;
    if !status.success() {
        bail!("building {package} failed ({status})");
    }
    Ok(())
}

/// Builds the kernel; returns the path of its ELF.
pub fn kernel(profile: Profile) -> Result<PathBuf> {
    let spec = paths::kernel_target_spec();
    cargo_build("kernel", &spec, profile)?;
    let elf = paths::target_dir().join("x86_64-rewind-kernel").join(profile.dir()).join("kernel");
    if !elf.exists() {
        bail!("the kernel build succeeded but {} is missing", elf.display());
    }
    Ok(elf)
}

/// Builds every task crate (`tasks/*`, packages `task-*`); returns the folder
/// holding their binaries.
pub fn tasks(profile: Profile) -> Result<PathBuf> {
    let spec = paths::root().join("targets/x86_64-rewind-task.json");
    cargo_build("task-*", &spec, profile)?;
    Ok(paths::target_dir().join("x86_64-rewind-task").join(profile.dir()))
}

/// Builds the kernel and the tasks; packs image `image`. Returns the kernel
/// ELF and the image file.
pub fn system(profile: Profile, image: &str) -> Result<(PathBuf, PathBuf)> {
    let kernel = kernel(profile)?;
    let bins = tasks(profile)?;
    let img = crate::images::pack_to_file(image, &bins)?;
    Ok((kernel, img))
}
