//! Image manifests (`images/NAME.toml`) and packing them into boot images.
//!
//! A manifest lists the tasks that boot together; `pack` builds the boot
//! image (format: `abi::image`) from the task binaries, which QEMU hands to
//! the kernel as its `-initrd` module. Format of a manifest:
//!
//! ```toml
//! description = "one line"
//! [[task]]
//! name = "hello"     # at most 24 bytes; with count > 1: name-0, name-1, ...
//! bin = "hello"      # a binary built from tasks/
//! priority = 2       # 0 = most urgent (default 2)
//! stack_kib = 64     # default 64
//! arg = 0            # passed to the task in rsi (default 0)
//! count = 1          # instances (default 1)
//! ```

use crate::paths;
use abi::image::{NAME_LEN, TaskSpec};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The image `cargo xtask run` boots by default.
pub const DEFAULT_IMAGE: &str = "demo";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub description: String,
    #[serde(rename = "task", default)]
    pub tasks: Vec<TaskEntry>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    pub name: String,
    pub bin: String,
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default = "default_stack_kib")]
    pub stack_kib: u64,
    #[serde(default)]
    pub arg: u64,
    #[serde(default = "default_count")]
    pub count: u32,
}

fn default_priority() -> u8 {
    2
}
fn default_stack_kib() -> u64 {
    64
}
fn default_count() -> u32 {
    1
}

/// The folder of manifests.
pub fn dir() -> PathBuf {
    paths::root().join("images")
}

/// Names of all manifests, sorted.
pub fn list() -> Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(dir()).with_context(|| format!("reading {}", dir().display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml")
            && let Some(stem) = path.file_stem()
        {
            names.push(stem.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

impl Manifest {
    /// Reads `images/NAME.toml` (or a path to a manifest file).
    pub fn load(name: &str) -> Result<Manifest> {
        let path = if name.ends_with(".toml") { PathBuf::from(name) } else { dir().join(format!("{name}.toml")) };
        if !path.exists() {
            let known = list().unwrap_or_default().join(", ");
            bail!("no image manifest {} (images: {known})", path.display());
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let manifest: Manifest = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        manifest.check().with_context(|| format!("in {}", path.display()))?;
        Ok(manifest)
    }

    fn check(&self) -> Result<()> {
        if self.tasks.is_empty() {
            bail!("the manifest lists no [[task]]");
        }
        for t in &self.tasks {
            let longest = if t.count > 1 { format!("{}-{}", t.name, t.count - 1) } else { t.name.clone() };
            if t.name.is_empty() || longest.len() > NAME_LEN {
                bail!("task name {:?} must be 1..={NAME_LEN} bytes (instances included)", t.name);
            }
            if t.stack_kib == 0 || t.stack_kib * 1024 > abi::layout::MAX_STACK_BYTES || t.stack_kib % 4 != 0 {
                bail!("task {:?}: stack_kib must be a multiple of 4 in 4..={}", t.name, abi::layout::MAX_STACK_BYTES / 1024);
            }
            if t.count == 0 {
                bail!("task {:?}: count must be at least 1", t.name);
            }
        }
        let total: u32 = self.tasks.iter().map(|t| t.count).sum();
        if total as usize > abi::image::MAX_TASKS {
            bail!("{total} tasks; an image holds at most {}", abi::image::MAX_TASKS);
        }
        Ok(())
    }

    /// The binaries the manifest needs.
    pub fn bins(&self) -> Vec<&str> {
        let mut bins: Vec<&str> = self.tasks.iter().map(|t| t.bin.as_str()).collect();
        bins.sort();
        bins.dedup();
        bins
    }

    /// Packs the image from the binaries in `bin_dir`.
    pub fn pack(&self, bin_dir: &Path) -> Result<Vec<u8>> {
        let mut elfs = std::collections::BTreeMap::new();
        for bin in self.bins() {
            let path = bin_dir.join(bin);
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading task binary {} (is there a tasks/ crate with bin {bin:?}?)", path.display()))?;
            elfs.insert(bin.to_string(), bytes);
        }
        let mut names = Vec::new();
        for t in &self.tasks {
            for i in 0..t.count {
                names.push(if t.count > 1 { format!("{}-{i}", t.name) } else { t.name.clone() });
            }
        }
        let mut specs = Vec::new();
        let mut n = 0;
        for t in &self.tasks {
            for _ in 0..t.count {
                specs.push(TaskSpec {
                    name: &names[n],
                    elf: &elfs[&t.bin],
                    priority: t.priority,
                    stack_bytes: t.stack_kib * 1024,
                    flags: abi::image::flags::NONE,
                    arg: t.arg,
                });
                n += 1;
            }
        }
        Ok(abi::image::write(&specs))
    }
}

/// Writes the packed image of manifest `name` to `target/rewind/images/`.
pub fn pack_to_file(name: &str, bin_dir: &Path) -> Result<PathBuf> {
    let manifest = Manifest::load(name)?;
    let bytes = manifest.pack(bin_dir)?;
    let stem = Path::new(name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| name.into());
    let out = paths::rewind_dir().join("images").join(format!("{stem}.img"));
    std::fs::create_dir_all(out.parent().unwrap())?;
    std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}
