//! Where a manifest's task binaries come from, and building only those.
//!
//! A `[[task]]` names a `bin`; its crate is found by two optional keys:
//!
//! | keys | the crate |
//! |---|---|
//! | neither | the package of Rewind's workspace with that `[[bin]]` (a crate in `tasks/`, or the fault server) |
//! | `package` | that package of Rewind's workspace |
//! | `path` (and maybe `package`) | the crate (or workspace) in that folder, relative to the manifest file: anywhere on disk |
//!
//! A task package is one that depends on `libtask`: that is also how the
//! linker script reaches it (`libtask/build.rs`), so a crate outside the
//! tree needs nothing but that dependency — by `path` to a Rewind checkout,
//! or `git`.
//!
//! **Only what the image needs is built**: one `cargo build -p A -p B` in
//! Rewind's workspace for its in-tree packages, and one `cargo build
//! --manifest-path` per outside crate, each with the task target and
//! build-std exactly as `build.rs` passes them. A task that does not
//! compile thus breaks the images that use it and no others.
//!
//! Outside crates are built with Rewind's toolchain (cargo runs in Rewind's
//! root, where `rust-toolchain.toml` pins it, whatever the crate's folder
//! says) into one shared target folder, `target/outside/`, so `core` is
//! built once for all of them and their binaries never overwrite Rewind's
//! (a user's `hello` is not `tasks/hello`). A crate without a `Cargo.lock`
//! gets a copy of Rewind's first: the same versions of libtask's
//! dependencies as the in-tree tasks, and no registry lookup.
//!
//! Every refusal names the manifest, the task and the key; cargo's own
//! errors (a compile error in the crate) are printed by cargo, followed by
//! which crate and which tasks they broke.

use crate::build::{self, Profile};
use crate::images::{Manifest, TaskEntry};
use crate::paths;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The ELF of each binary an image needs, by bin name.
pub type Binaries = BTreeMap<String, PathBuf>;

/// Rewind's own task binaries: build what the manifest needs, or take them
/// from a folder already built (`cargo xtask test` builds them all and
/// passes `REWIND_TASK_BINS` to the QEMU tests).
#[derive(Clone, Debug)]
pub enum InTree {
    Build,
    Prebuilt(PathBuf),
}

/// The shared target folder of crates outside the tree.
pub fn outside_target_dir() -> PathBuf {
    paths::target_dir().join("outside")
}

/// The task target's folder name under a target directory.
const TASK_TARGET: &str = "x86_64-rewind-task";

/// The subset of `cargo metadata --no-deps` read here.
#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_root: PathBuf,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    manifest_path: PathBuf,
    targets: Vec<Target>,
    dependencies: Vec<Dependency>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

#[derive(Deserialize)]
struct Dependency {
    name: String,
}

impl Package {
    fn bins(&self) -> Vec<&str> {
        self.targets.iter().filter(|t| t.kind.iter().any(|k| k == "bin")).map(|t| t.name.as_str()).collect()
    }
    fn is_task(&self) -> bool {
        self.dependencies.iter().any(|d| d.name == "libtask")
    }
}

fn metadata(manifest_path: &Path) -> Result<Metadata> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(paths::root())
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(manifest_path)
        .output()
        .with_context(|| format!("running cargo metadata on {}", manifest_path.display()))?;
    if !out.status.success() {
        bail!("cargo metadata on {} failed:\n{}", manifest_path.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading cargo metadata of {}", manifest_path.display()))
}

/// The package of `meta` that builds task `t`'s `bin` (and is its
/// `package`, if it names one). `place` says where we looked, for errors.
fn find_package<'m>(meta: &'m Metadata, t: &TaskEntry, place: &str) -> Result<&'m Package> {
    let candidates: Vec<&Package> = match &t.package {
        Some(name) => {
            let Some(p) = meta.packages.iter().find(|p| &p.name == name) else {
                let names: Vec<&str> = meta.packages.iter().map(|p| p.name.as_str()).collect();
                bail!(
                    "task {:?}: `package` = {name:?}: no such package in {place} (packages: {})",
                    t.name,
                    names.join(", ")
                );
            };
            if !p.bins().contains(&t.bin.as_str()) {
                bail!(
                    "task {:?}: `bin` = {:?}: package {name:?} has no such [[bin]] (its binaries: {})",
                    t.name,
                    t.bin,
                    p.bins().join(", ")
                );
            }
            vec![p]
        }
        None => meta.packages.iter().filter(|p| p.is_task() && p.bins().contains(&t.bin.as_str())).collect(),
    };
    match candidates.as_slice() {
        [p] if p.is_task() => Ok(p),
        [p] => bail!("task {:?}: package {:?} does not depend on libtask: it is not a task", t.name, p.name),
        [] => {
            let mut bins: Vec<&str> = meta.packages.iter().filter(|p| p.is_task()).flat_map(|p| p.bins()).collect();
            bins.sort();
            bail!(
                "task {:?}: `bin` = {:?}: no task package in {place} has that [[bin]] (binaries: {}){}",
                t.name,
                t.bin,
                bins.join(", "),
                if t.path.is_none() { "; a crate elsewhere needs a `path` key" } else { "" }
            )
        }
        many => {
            let names: Vec<&str> = many.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "task {:?}: `bin` = {:?} is built by several packages ({}): say which with `package`",
                t.name,
                t.bin,
                names.join(", ")
            )
        }
    }
}

/// Builds the binaries manifest `m` needs; returns where each one is.
pub fn build(m: &Manifest, profile: Profile, in_tree: &InTree) -> Result<Binaries> {
    let file = m.file.as_ref().map_or_else(|| "the manifest".to_string(), |f| f.display().to_string());
    resolve_and_build(m, profile, in_tree).with_context(|| format!("in {file}"))
}

fn resolve_and_build(m: &Manifest, profile: Profile, in_tree: &InTree) -> Result<Binaries> {
    let root_manifest = paths::root().join("Cargo.toml");
    let mut workspace: Option<Metadata> = None;
    let mut bins = Binaries::new();
    // In-tree packages to build (-p each); outside crates by manifest path.
    let mut inside: Vec<String> = Vec::new();
    let mut outside: BTreeMap<PathBuf, (Vec<String>, Vec<String>)> = BTreeMap::new();
    let in_tree_dir = match in_tree {
        InTree::Build => paths::target_dir().join(TASK_TARGET).join(profile.dir()),
        InTree::Prebuilt(dir) => dir.clone(),
    };
    let outside_dir = outside_target_dir().join(TASK_TARGET).join(profile.dir());
    for t in &m.tasks {
        if bins.contains_key(&t.bin) {
            continue; // `check` made sure one bin name has one source
        }
        let crate_manifest = match m.crate_dir(t) {
            Some(dir) => {
                let path = dir.join("Cargo.toml");
                Some(path.canonicalize().with_context(|| format!("task {:?}: `path`: {}", t.name, path.display()))?)
            }
            None => None,
        };
        // A `path` into Rewind's own workspace is an in-tree crate.
        let in_workspace = match &crate_manifest {
            None => true,
            Some(p) => {
                workspace_member(&mut workspace, &root_manifest)?.packages.iter().any(|pk| &pk.manifest_path == p)
            }
        };
        if in_workspace {
            if matches!(in_tree, InTree::Prebuilt(_)) && t.package.is_none() && crate_manifest.is_none() {
                bins.insert(t.bin.clone(), in_tree_dir.join(&t.bin));
                continue;
            }
            let meta = workspace_member(&mut workspace, &root_manifest)?;
            let p = match &crate_manifest {
                Some(path) => {
                    let pk = meta.packages.iter().find(|pk| &pk.manifest_path == path).expect("checked above");
                    let t = TaskEntry { package: Some(t.package.clone().unwrap_or(pk.name.clone())), ..t.clone() };
                    find_package(meta, &t, "Rewind's workspace")?
                }
                None => find_package(meta, t, "Rewind's workspace")?,
            };
            if matches!(in_tree, InTree::Build) && !inside.contains(&p.name) {
                inside.push(p.name.clone());
            }
            bins.insert(t.bin.clone(), in_tree_dir.join(&t.bin));
        } else {
            let path = crate_manifest.expect("outside crates have a path");
            let meta = metadata(&path)
                .with_context(|| format!("task {:?}: `path` = {:?}", t.name, t.path.as_deref().unwrap_or_default()))?;
            // The package of that folder, unless `package` names another
            // member of its workspace.
            let t_pkg = match (&t.package, meta.packages.iter().find(|p| p.manifest_path == path)) {
                (None, Some(own)) => TaskEntry { package: Some(own.name.clone()), ..t.clone() },
                _ => t.clone(),
            };
            let p = find_package(&meta, &t_pkg, &path.display().to_string())?;
            seed_lockfile(&meta.workspace_root)?;
            let entry = outside.entry(path).or_default();
            if !entry.0.contains(&p.name) {
                entry.0.push(p.name.clone());
            }
            entry.1.push(t.name.clone());
            bins.insert(t.bin.clone(), outside_dir.join(&t.bin));
        }
    }
    if !inside.is_empty() {
        let mut args = Vec::new();
        for p in &inside {
            args.extend(["--package".to_string(), p.clone()]);
        }
        build::cargo_build_tasks(&args, None, profile).with_context(|| format!("building {}", inside.join(", ")))?;
    }
    for (path, (packages, tasks)) in &outside {
        let mut args = vec!["--manifest-path".to_string(), path.display().to_string()];
        for p in packages {
            args.extend(["--package".to_string(), p.clone()]);
        }
        build::cargo_build_tasks(&args, Some(&outside_target_dir()), profile)
            .with_context(|| format!("building {} (tasks {})", path.display(), tasks.join(", ")))?;
    }
    for (bin, path) in &bins {
        if !path.is_file() {
            bail!("binary {bin:?}: {} is missing after the build", path.display());
        }
    }
    Ok(bins)
}

fn workspace_member<'w>(cache: &'w mut Option<Metadata>, root_manifest: &Path) -> Result<&'w Metadata> {
    if cache.is_none() {
        *cache = Some(metadata(root_manifest)?);
    }
    Ok(cache.as_ref().expect("just set"))
}

/// Copies Rewind's `Cargo.lock` into an outside workspace that has none.
fn seed_lockfile(workspace_root: &Path) -> Result<()> {
    let lock = workspace_root.join("Cargo.lock");
    if !lock.exists() {
        std::fs::copy(paths::root().join("Cargo.lock"), &lock)
            .with_context(|| format!("seeding {} from Rewind's Cargo.lock", lock.display()))?;
        eprintln!("xtask: wrote {} (a copy of Rewind's: the same dependency versions as its tasks)", lock.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `package` and `bin` are checked against the crate's own metadata,
    /// before anything is built, with the manifest, task and key named.
    #[test]
    fn unknown_package_or_bin_of_an_outside_crate_is_an_error() {
        let dir = std::env::temp_dir().join(format!("rewind-sources-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::template::create("probe", &dir).unwrap();
        let try_build = |task: &str| {
            let path = dir.join("probe/bad.toml");
            std::fs::write(&path, format!("[[task]]\nname = \"p\"\n{task}")).unwrap();
            let m = Manifest::load(path.to_str().unwrap()).unwrap();
            format!("{:#}", build(&m, Profile::Debug, &InTree::Prebuilt(dir.clone())).expect_err("must be refused"))
        };
        let package = try_build("bin = \"probe\"\npath = \".\"\npackage = \"nope\"\n");
        let bin = try_build("bin = \"nope\"\npath = \".\"\n");
        let in_tree = try_build("bin = \"no-such-task\"\npackage = \"task-hello\"\n");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            package.contains("bad.toml")
                && package.contains("\"p\"")
                && package.contains("`package` = \"nope\"")
                && package.contains("probe"),
            "{package}"
        );
        assert!(bin.contains("bad.toml") && bin.contains("`bin` = \"nope\"") && bin.contains("probe"), "{bin}");
        assert!(in_tree.contains("`bin` = \"no-such-task\"") && in_tree.contains("hello"), "{in_tree}");
    }
}
