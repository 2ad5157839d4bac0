//! Installing what a fresh machine lacks.
//!
//! The README promises that `cargo xtask run` and `cargo xtask test` are the
//! whole setup. So when a tool is missing we install Debian's package if we
//! can (root and apt-get), and otherwise fail with the exact command to run:
//! never with a bare "No such file or directory".

use anyhow::{Context, Result, bail};
use std::process::{Command, Stdio};

/// Whether `program --version` runs.
pub fn have(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Makes sure `program` exists, installing Debian package `package` if not.
pub fn ensure(program: &str, package: &str, why: &str) -> Result<()> {
    if have(program) {
        return Ok(());
    }
    if !(is_root() && have("apt-get")) {
        bail!(
            "`{program}` was not found; it is needed {why}.\n\
             Install it, e.g. `sudo apt-get install {package}` (Debian/Ubuntu), \
             `sudo dnf install {package}` (Fedora) or `brew install qemu` (macOS), then retry."
        );
    }
    eprintln!("xtask: `{program}` is missing; installing Debian package `{package}` (needed {why})");
    // Wait for a dpkg lock held by another apt (e.g. a parallel test run
    // installing the same package) instead of failing at once.
    const LOCK_WAIT: &str = "DPkg::Lock::Timeout=300";
    let update =
        Command::new("apt-get").args(["-o", LOCK_WAIT, "update", "-qq"]).status().context("running apt-get update")?;
    if !update.success() {
        eprintln!("xtask: apt-get update failed ({update}); trying the install anyway");
    }
    let status = Command::new("apt-get")
        .args(["-o", LOCK_WAIT, "install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !status.success() || !have(program) {
        bail!("installing `{package}` with apt-get failed ({status}); install it by hand and retry");
    }
    Ok(())
}
