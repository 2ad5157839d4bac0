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
    /// The profile's folder under `target/<target>/`.
    pub fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// A `cargo build` for a custom target with build-std.
fn cargo_build(package: &str, target_spec: &std::path::Path, profile: Profile) -> Result<()> {
    cargo_build_with(&["--package".into(), package.into()], target_spec, None, profile)
        .with_context(|| format!("building {package}"))
}

/// `cargo build ARGS` of task crates (`--package`s, a `--manifest-path`)
/// for the task target, into `target_dir` if given. Cargo runs in Rewind's
/// root whatever the crate, so Rewind's toolchain pin applies.
pub fn cargo_build_tasks(args: &[String], target_dir: Option<&std::path::Path>, profile: Profile) -> Result<()> {
    cargo_build_with(args, &paths::task_target_spec(), target_dir, profile)
}

fn cargo_build_with(
    args: &[String],
    target_spec: &std::path::Path,
    target_dir: Option<&std::path::Path>,
    profile: Profile,
) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(paths::root()).arg("build").args(args).arg("--target").arg(target_spec).args([
        "-Zbuild-std=core,alloc,compiler_builtins",
        "-Zbuild-std-features=compiler-builtins-mem",
        "-Zjson-target-spec",
    ]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    if let Some(dir) = target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
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

/// Builds every task crate of the workspace (`tasks/*`, packages
/// `task-*`, for `cargo xtask test`, which packs every image); returns the
/// folder holding their binaries.
pub fn tasks(profile: Profile) -> Result<PathBuf> {
    cargo_build("task-*", &paths::task_target_spec(), profile)?;
    Ok(paths::target_dir().join("x86_64-rewind-task").join(profile.dir()))
}

/// Builds the kernel and the tasks image `image` (a name in `images/` or a
/// manifest file) needs, wherever their crates are (`sources`); packs it.
/// Returns the kernel ELF, the image file and the binaries.
pub fn system(profile: Profile, image: &str) -> Result<(PathBuf, PathBuf)> {
    let (kernel, img, _) = system_bins(profile, image)?;
    Ok((kernel, img))
}

/// [`system`], with where each task binary of the image is.
pub fn system_bins(profile: Profile, image: &str) -> Result<(PathBuf, PathBuf, crate::sources::Binaries)> {
    let manifest = crate::images::Manifest::load(image)?;
    let kernel = kernel(profile)?;
    let bins = crate::sources::build(&manifest, profile, &crate::sources::InTree::Build)?;
    let img = crate::images::write_image(image, &manifest.pack_bins(&bins)?)?;
    Ok((kernel, img, bins))
}
