//! Image manifests (`images/NAME.toml`) and packing them into boot images.
//!
//! A manifest lists the tasks that boot together; `pack` builds the boot
//! image (format: `abi::image`) from the task binaries, which QEMU hands to
//! the kernel as its `-initrd` module. Every key, with its type, default,
//! limits and an example, is in `docs/manifest.md`. Format of a manifest:
//!
//! ```toml
//! description = "one line"
//! endpoints = ["ping", "faults"]  # IPC endpoints the image declares
//! notifications = ["tick"]       # notifications
//! [[region]]                     # shared memory regions
//! name = "bank"
//! size_kib = 64
//! [[task]]
//! name = "hello"     # at most 24 bytes; with count > 1: name-0, name-1, ...
//! bin = "hello"      # the [[bin]] name of a task crate
//! path = "../hello"  # the crate's folder, relative to this manifest file
//!                    # (default: a crate of Rewind's workspace, tasks/*)
//! package = "hello"  # the package holding `bin` (default: the one that does)
//! priority = 2       # 0 = most urgent (default 2)
//! stack_kib = 64     # default 64
//! arg = 0            # passed to the task in rsi (default 0)
//! count = 1          # instances (default 1)
//! caps = ["ping:send"]   # capabilities, see below
//! fault_endpoint = "faults"  # where its faults go (default below)
//! watchdog_ms = 500  # handled as a fault after 500 ms without a syscall (default: off)
//! max_restarts = 5   # restart policy for the fault server: at most 5 restarts...
//! restart_window_ms = 2000  # ...in 2 s (defaults: the fault server's)
//! max_memory_kib = 32768     # most memory it may hold: pages, page versions, page tables (default 32 MiB)
//! max_scope_records = 16384  # most page records its checkpoint scopes hold (default 16 Ki, at most 64 Ki)
//! core_dumps = 4     # core files of its faults: at most 4 a minute, or
//!                    # true (= 4) / false (= 0); default: the image's
//! cpu = 1            # runs on CPU 1 only (0 = the boot CPU; default: any CPU)
//! ```
//!
//! `path` and `package` say where a task's binary comes from; only the
//! crates a manifest names are built (`xtask/src/sources.rs`), so a task
//! that does not compile breaks only the images that use it.
//!
//! `core_dumps` at the top of a manifest (before the tables) is the default
//! of its tasks (default: false, no core files); see
//! `fault-server/server/src/coredump.rs`.
//!
//! A capability is `OBJECT:RIGHTS[@BADGE]`: an endpoint with `send`, `recv`
//! or `send+recv`; a notification with `signal`, `wait` or `signal+wait`;
//! a region with `map` (mapped into the task at the same address in every
//! holder); or the word `supervisor` (control over other tasks: the fault
//! server's).
//! A send capability's badge defaults to the task's index in the image + 1,
//! so a server can tell its callers apart. If the image declares an endpoint
//! named `faults`, every task that cannot receive on it sends its faults
//! there unless it names another `fault_endpoint`.

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
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub notifications: Vec<String>,
    #[serde(rename = "region", default)]
    pub regions: Vec<RegionEntry>,
    #[serde(rename = "task", default)]
    pub tasks: Vec<TaskEntry>,
    /// The tasks' default `core_dumps` (none if absent).
    #[serde(default)]
    pub core_dumps: Option<CoreDumps>,
    /// The manifest file, when it was read from one ([`Manifest::load`]):
    /// `path` keys are relative to its folder.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// `core_dumps`: a number of core files per task per minute, or a switch.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(untagged)]
pub enum CoreDumps {
    Switch(bool),
    PerMinute(u32),
}

/// What `core_dumps = true` means: at most 4 core files per task per minute.
pub const CORE_DUMPS_ON: u32 = 4;

impl CoreDumps {
    /// Core files per task per minute (0: none).
    pub fn per_minute(self) -> u32 {
        match self {
            CoreDumps::Switch(on) => {
                if on {
                    CORE_DUMPS_ON
                } else {
                    0
                }
            }
            CoreDumps::PerMinute(n) => n,
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RegionEntry {
    pub name: String,
    pub size_kib: u64,
}

/// The endpoint that receives faults by default.
pub const DEFAULT_FAULT_ENDPOINT: &str = "faults";

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    pub name: String,
    pub bin: String,
    /// The folder of the crate that builds `bin`, relative to the manifest
    /// file (default: Rewind's workspace).
    #[serde(default)]
    pub path: Option<String>,
    /// The package that builds `bin` (default: the one with that binary).
    #[serde(default)]
    pub package: Option<String>,
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default = "default_stack_kib")]
    pub stack_kib: u64,
    #[serde(default)]
    pub arg: u64,
    #[serde(default = "default_count")]
    pub count: u32,
    #[serde(default)]
    pub caps: Vec<String>,
    #[serde(default)]
    pub fault_endpoint: Option<String>,
    #[serde(default)]
    pub watchdog_ms: u32,
    #[serde(default)]
    pub max_restarts: u32,
    #[serde(default)]
    pub restart_window_ms: u32,
    #[serde(default)]
    pub max_memory_kib: u32,
    #[serde(default)]
    pub max_scope_records: u32,
    /// Overrides the manifest's `core_dumps` for this task.
    #[serde(default)]
    pub core_dumps: Option<CoreDumps>,
    /// The one CPU it may run on (kernel CPU index, 0 = the boot CPU);
    /// absent: any CPU.
    #[serde(default)]
    pub cpu: Option<u32>,
}

/// A parsed capability string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapString {
    pub kind: abi::ipc::CapKind,
    pub object: u32,
    pub rights: abi::ipc::Rights,
    pub badge: Option<u64>,
    pub name: String,
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
        let mut manifest: Manifest = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        manifest.file = Some(std::path::absolute(&path).unwrap_or(path.clone()));
        manifest.check().with_context(|| format!("in {}", path.display()))?;
        Ok(manifest)
    }

    /// Every rule of the format, as an error naming the task (or object)
    /// and the key; [`Manifest::load`] adds the manifest's path. Arithmetic
    /// on manifest values is checked: no value makes this panic.
    pub fn check(&self) -> Result<()> {
        use std::collections::HashSet;
        if self.tasks.is_empty() {
            bail!("the manifest lists no [[task]]");
        }
        let mut total: u64 = 0;
        let mut task_names = HashSet::new();
        for t in &self.tasks {
            if t.count == 0 {
                bail!("task {:?}: `count` must be at least 1", t.name);
            }
            if t.count as usize > abi::image::MAX_TASKS {
                bail!(
                    "task {:?}: `count` = {} exceeds {} (an image holds at most that many tasks)",
                    t.name,
                    t.count,
                    abi::image::MAX_TASKS
                );
            }
            total += t.count as u64;
            let longest = if t.count > 1 { format!("{}-{}", t.name, t.count - 1) } else { t.name.clone() };
            if t.name.is_empty() || longest.len() > NAME_LEN {
                bail!("task {:?}: `name` must be 1..={NAME_LEN} bytes (instances included)", t.name);
            }
            // Instance names too: `a` with count 2 and a task named `a-1` collide.
            let instances: Vec<String> = if t.count > 1 {
                (0..t.count).map(|i| format!("{}-{i}", t.name)).collect()
            } else {
                vec![t.name.clone()]
            };
            for n in instances {
                if !task_names.insert(n.clone()) {
                    bail!(
                        "task {:?}: duplicate task `name` {n:?} (task names, instances included, must be unique)",
                        t.name
                    );
                }
            }
            self.check_source(t)?;
            if let Some(cpu) = t.cpu
                && cpu >= abi::image::MAX_CPUS
            {
                bail!(
                    "task {:?}: `cpu` = {cpu} is out of range: CPUs are numbered 0..={} (0 = the boot CPU)",
                    t.name,
                    abi::image::MAX_CPUS - 1
                );
            }
            let max_kib = abi::layout::MAX_STACK_BYTES / 1024;
            if t.stack_kib == 0 || t.stack_kib > max_kib || t.stack_kib % 4 != 0 {
                bail!("task {:?}: `stack_kib` = {} must be a multiple of 4 in 4..={max_kib}", t.name, t.stack_kib);
            }
        }
        if total as usize > abi::image::MAX_TASKS {
            bail!("{total} tasks (`count`s included); an image holds at most {}", abi::image::MAX_TASKS);
        }
        let region_names: Vec<String> = self.regions.iter().map(|r| r.name.clone()).collect();
        let max_region_kib = abi::image::MAX_REGION_BYTES / 1024;
        for r in &self.regions {
            if r.size_kib == 0 || r.size_kib % 4 != 0 || r.size_kib > max_region_kib {
                bail!(
                    "region {:?}: `size_kib` = {} must be a multiple of 4 in 4..={max_region_kib}",
                    r.name,
                    r.size_kib
                );
            }
        }
        let mut object_names = HashSet::new();
        for (key, list) in
            [("endpoints", &self.endpoints), ("notifications", &self.notifications), ("region", &region_names)]
        {
            if list.len() > abi::image::MAX_OBJECTS {
                bail!("`{key}`: {} entries; an image holds at most {}", list.len(), abi::image::MAX_OBJECTS);
            }
            for name in list {
                if name.is_empty() || name.len() > NAME_LEN || name == "supervisor" {
                    bail!("`{key}`: object name {name:?} must be 1..={NAME_LEN} bytes and not `supervisor`");
                }
                // Capabilities name objects: one name, one object.
                if !object_names.insert(name.as_str()) {
                    bail!(
                        "`{key}`: duplicate object name {name:?} (endpoints, notifications and regions share one namespace)"
                    );
                }
            }
        }
        let mut fault_receivers = Vec::new();
        let mut caps_total = 0usize;
        for t in &self.tasks {
            if t.caps.len() > abi::ipc::MAX_CAPS {
                bail!(
                    "task {:?}: `caps` lists {} capabilities; a task holds at most {} (the kernel would drop the rest)",
                    t.name,
                    t.caps.len(),
                    abi::ipc::MAX_CAPS
                );
            }
            caps_total += t.caps.len() * t.count as usize;
            let mut seen = HashSet::new();
            for cap in &t.caps {
                let c = self.parse_cap(cap).with_context(|| format!("task {:?}: `caps`", t.name))?;
                if !seen.insert(cap.as_str()) {
                    bail!("task {:?}: `caps` lists {cap:?} twice", t.name);
                }
                if c.kind == abi::ipc::CapKind::Endpoint
                    && c.name == DEFAULT_FAULT_ENDPOINT
                    && c.rights.contains(abi::ipc::Rights::RECV)
                {
                    fault_receivers.push((t.name.clone(), t.count));
                }
            }
            if let Some(ep) = &t.fault_endpoint
                && !self.endpoints.contains(ep)
            {
                bail!("task {:?}: `fault_endpoint` {ep:?} is not declared in `endpoints`", t.name);
            }
        }
        if caps_total > abi::image::MAX_OBJECTS {
            bail!(
                "{caps_total} capabilities in all (`count`s included); an image holds at most {}",
                abi::image::MAX_OBJECTS
            );
        }
        let receivers: u64 = fault_receivers.iter().map(|(_, n)| *n as u64).sum();
        if receivers > 1 {
            let names: Vec<String> = fault_receivers.iter().map(|(n, c)| format!("{n:?} (count {c})")).collect();
            bail!(
                "tasks {}: more than one receiver on `{DEFAULT_FAULT_ENDPOINT}` (`caps` \"{DEFAULT_FAULT_ENDPOINT}:recv\"); faults need one fault server",
                names.join(", ")
            );
        }
        Ok(())
    }

    /// The folder `path` keys are relative to: the manifest file's (the
    /// current directory for a manifest not read from a file).
    pub fn base_dir(&self) -> PathBuf {
        self.file.as_deref().and_then(Path::parent).map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    /// The crate folder of task `t`'s `path` key, resolved.
    pub fn crate_dir(&self, t: &TaskEntry) -> Option<PathBuf> {
        t.path.as_ref().map(|p| self.base_dir().join(p))
    }

    /// `path` names a crate folder; `package` is not empty; one `bin` name
    /// comes from one place. (Whether the package and the binary exist is
    /// cargo's to say: `sources::build` asks it.)
    fn check_source(&self, t: &TaskEntry) -> Result<()> {
        if let Some(dir) = self.crate_dir(t) {
            let p = t.path.as_deref().unwrap_or_default();
            if p.is_empty() {
                bail!("task {:?}: `path` is empty (a crate folder, relative to the manifest)", t.name);
            }
            if !dir.is_dir() {
                bail!("task {:?}: `path` = {p:?}: no folder {}", t.name, dir.display());
            }
            if !dir.join("Cargo.toml").is_file() {
                bail!(
                    "task {:?}: `path` = {p:?}: {} has no Cargo.toml (`path` names a crate folder)",
                    t.name,
                    dir.display()
                );
            }
        }
        if t.package.as_deref() == Some("") {
            bail!("task {:?}: `package` is empty", t.name);
        }
        let source = |t: &TaskEntry| (self.crate_dir(t), t.package.clone());
        if let Some(other) = self.tasks.iter().find(|o| o.bin == t.bin && source(o) != source(t)) {
            bail!(
                "task {:?}: `bin` = {:?} comes from `path` {:?}, `package` {:?}, but task {:?} takes a `bin` of that name from `path` {:?}, `package` {:?}: an image holds one binary per name",
                t.name,
                t.bin,
                t.path,
                t.package,
                other.name,
                other.path,
                other.package
            );
        }
        Ok(())
    }

    /// Parses `OBJECT:RIGHTS[@BADGE]` or `supervisor`.
    pub fn parse_cap(&self, text: &str) -> Result<CapString> {
        use abi::ipc::{CapKind, Rights};
        if text == "supervisor" {
            return Ok(CapString {
                kind: CapKind::Supervisor,
                object: 0,
                rights: Rights::empty(),
                badge: None,
                name: text.into(),
            });
        }
        let (object, rest) =
            text.split_once(':').with_context(|| format!("capability {text:?} is not OBJECT:RIGHTS"))?;
        let (rights_text, badge) = match rest.split_once('@') {
            Some((r, b)) => {
                let badge: u64 = b.parse().with_context(|| format!("capability {text:?}: bad badge"))?;
                if badge > abi::ipc::MAX_BADGE {
                    bail!("capability {text:?}: badge too large");
                }
                (r, Some(badge))
            }
            None => (rest, None),
        };
        let (kind, index, names) = if let Some(i) = self.endpoints.iter().position(|e| e == object) {
            (CapKind::Endpoint, i, ["send", "recv"])
        } else if let Some(i) = self.notifications.iter().position(|n| n == object) {
            (CapKind::Notification, i, ["signal", "wait"])
        } else if let Some(i) = self.regions.iter().position(|r| r.name == object) {
            if rest != "map" {
                bail!("capability {text:?}: a region's only right is `map`");
            }
            return Ok(CapString {
                kind: CapKind::Region,
                object: i as u32,
                rights: Rights::empty(),
                badge: None,
                name: object.to_string(),
            });
        } else {
            bail!("capability {text:?}: no endpoint or notification named {object:?}");
        };
        let mut bits = Rights::empty();
        for r in rights_text.split('+') {
            bits |= match r {
                r if r == names[0] => Rights::SEND,
                r if r == names[1] => Rights::RECV,
                _ => bail!("capability {text:?}: unknown right {r:?} (expected {} or {})", names[0], names[1]),
            };
        }
        if badge.is_some() && (kind != CapKind::Endpoint || !bits.contains(Rights::SEND)) {
            bail!("capability {text:?}: only endpoint send rights carry a badge");
        }
        Ok(CapString { kind, object: index as u32, rights: bits, badge, name: object.to_string() })
    }

    /// The binaries the manifest needs.
    pub fn bins(&self) -> Vec<&str> {
        let mut bins: Vec<&str> = self.tasks.iter().map(|t| t.bin.as_str()).collect();
        bins.sort();
        bins.dedup();
        bins
    }

    /// Packs the image from the binaries in `bin_dir` (Rewind's tasks, as
    /// `cargo xtask test` builds them all). A task with a `path` is not
    /// there: pack those with [`Manifest::pack_bins`] and the
    /// [`crate::sources::build`] of this manifest.
    pub fn pack(&self, bin_dir: &Path) -> Result<Vec<u8>> {
        if let Some(t) = self.tasks.iter().find(|t| t.path.is_some()) {
            bail!(
                "task {:?} is built from its own crate (`path` = {:?}): build this image with `cargo xtask build --image {}`",
                t.name,
                t.path.as_deref().unwrap_or_default(),
                self.file.as_ref().map_or("MANIFEST".into(), |f| f.display().to_string())
            );
        }
        let bins: crate::sources::Binaries =
            self.bins().into_iter().map(|b| (b.to_string(), bin_dir.join(b))).collect();
        self.pack_bins(&bins)
    }

    /// Packs the image from the binaries `bins` (bin name -> ELF file).
    pub fn pack_bins(&self, bins: &crate::sources::Binaries) -> Result<Vec<u8>> {
        let mut elfs = std::collections::BTreeMap::new();
        for bin in self.bins() {
            let path = bins.get(bin).with_context(|| format!("no binary {bin:?} was built for this image"))?;
            let bytes = std::fs::read(path).with_context(|| {
                format!("reading task binary {} (is there a task crate with bin {bin:?}?)", path.display())
            })?;
            elfs.insert(bin.to_string(), bytes);
        }
        let mut names = Vec::new();
        for t in &self.tasks {
            for i in 0..t.count {
                names.push(if t.count > 1 { format!("{}-{i}", t.name) } else { t.name.clone() });
            }
        }
        let fault_ep = self.endpoints.iter().position(|e| e == DEFAULT_FAULT_ENDPOINT);
        let mut specs = Vec::new();
        let mut caps = Vec::new();
        let mut n = 0;
        for t in &self.tasks {
            if t.max_scope_records > abi::image::MAX_RECORDS_LIMIT {
                bail!("task {}: max_scope_records above {}", t.name, abi::image::MAX_RECORDS_LIMIT);
            }
            let parsed: Vec<CapString> = t.caps.iter().map(|c| self.parse_cap(c)).collect::<Result<_>>()?;
            let receives_faults = parsed.iter().any(|c| {
                Some(c.object as usize) == fault_ep
                    && c.kind == abi::ipc::CapKind::Endpoint
                    && c.rights.contains(abi::ipc::Rights::RECV)
            });
            let fault_endpoint = match &t.fault_endpoint {
                Some(ep) => self.endpoints.iter().position(|e| e == ep).map(|i| i as u16),
                None if receives_faults => None,
                None => fault_ep.map(|i| i as u16),
            };
            for instance in 0..t.count {
                specs.push(TaskSpec {
                    name: &names[n],
                    elf: &elfs[&t.bin],
                    priority: t.priority,
                    stack_bytes: t.stack_kib * 1024,
                    flags: abi::image::flags::NONE,
                    arg: t.arg,
                    fault_endpoint,
                    watchdog_ms: t.watchdog_ms,
                    max_restarts: t.max_restarts,
                    restart_window_ms: t.restart_window_ms,
                    max_frames: t.max_memory_kib.div_ceil(4),
                    max_records: t.max_scope_records,
                    core_dumps: t.core_dumps.or(self.core_dumps).map_or(0, CoreDumps::per_minute),
                    instance,
                    cpu: t.cpu.unwrap_or(abi::image::ANY_CPU),
                });
                for c in &parsed {
                    let badge = if c.kind == abi::ipc::CapKind::Endpoint && c.rights.contains(abi::ipc::Rights::SEND) {
                        c.badge.unwrap_or(n as u64 + 1)
                    } else {
                        0
                    };
                    caps.push((n as u16, c.clone(), badge));
                }
                n += 1;
            }
        }
        let cap_specs: Vec<abi::image::CapSpec> = caps
            .iter()
            .map(|(task, c, badge)| abi::image::CapSpec {
                task: *task,
                kind: c.kind,
                rights: c.rights,
                object: c.object,
                badge: *badge,
                name: &c.name,
            })
            .collect();
        let endpoints: Vec<&str> = self.endpoints.iter().map(String::as_str).collect();
        let notifications: Vec<&str> = self.notifications.iter().map(String::as_str).collect();
        let regions: Vec<abi::image::RegionSpec> =
            self.regions.iter().map(|r| abi::image::RegionSpec { name: &r.name, size: r.size_kib * 1024 }).collect();
        Ok(abi::image::write(&abi::image::ImageSpec {
            tasks: &specs,
            endpoints: &endpoints,
            notifications: &notifications,
            regions: &regions,
            caps: &cap_specs,
        }))
    }
}

/// Writes the packed image of manifest `name` to `target/rewind/images/`.
pub fn pack_to_file(name: &str, bin_dir: &Path) -> Result<PathBuf> {
    let manifest = Manifest::load(name)?;
    write_image(name, &manifest.pack(bin_dir)?)
}

/// Writes packed image `bytes` of manifest `name` (a name or a path) to
/// `target/rewind/images/STEM.img`.
pub fn write_image(name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let stem = Path::new(name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| name.into());
    let out = paths::rewind_dir().join("images").join(format!("{stem}.img"));
    std::fs::create_dir_all(out.parent().unwrap())?;
    std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Result<Manifest> {
        let m: Manifest = toml::from_str(text)?;
        m.check()?;
        Ok(m)
    }

    /// The error's whole chain, as `cargo xtask` prints it.
    fn error(text: &str) -> String {
        format!("{:#}", manifest(text).expect_err("the manifest must be refused"))
    }

    const SERVER: &str = "[[task]]\nname = \"fs\"\nbin = \"fault-server\"\ncaps = [\"faults:recv\", \"supervisor\"]\n";

    #[test]
    fn every_shipped_manifest_passes() {
        for name in list().unwrap() {
            Manifest::load(&name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn huge_values_are_errors_not_overflows() {
        let e = error("[[task]]\nname = \"big\"\nbin = \"hello\"\nstack_kib = 9223372036854775807\n");
        assert!(e.contains("\"big\"") && e.contains("stack_kib"), "{e}");
        let e = error("[[task]]\nname = \"big\"\nbin = \"hello\"\nstack_kib = 18014398509481984\n");
        assert!(e.contains("stack_kib"), "{e}");
        let e = error(
            "[[region]]\nname = \"r\"\nsize_kib = 9223372036854775804\n[[task]]\nname = \"t\"\nbin = \"hello\"\n",
        );
        assert!(e.contains("\"r\"") && e.contains("size_kib"), "{e}");
        let e = error("[[task]]\nname = \"many\"\nbin = \"hello\"\ncount = 4294967295\n");
        assert!(e.contains("\"many\"") && e.contains("count"), "{e}");
        // Sum of counts that would overflow a u32.
        let e = error(
            "[[task]]\nname = \"a\"\nbin = \"hello\"\ncount = 60\n[[task]]\nname = \"b\"\nbin = \"hello\"\ncount = 60\n",
        );
        assert!(e.contains("120 tasks"), "{e}");
    }

    #[test]
    fn a_cpu_out_of_range_is_an_error() {
        let e = error("[[task]]\nname = \"pinned\"\nbin = \"hello\"\ncpu = 16\n");
        assert!(e.contains("\"pinned\"") && e.contains("`cpu` = 16") && e.contains("0..=15"), "{e}");
        let e = error("[[task]]\nname = \"neg\"\nbin = \"hello\"\ncpu = -1\n");
        assert!(e.contains("cpu"), "{e}");
        let m = manifest(
            "[[task]]\nname = \"pinned\"\nbin = \"hello\"\ncpu = 15\n[[task]]\nname = \"any\"\nbin = \"hello\"\n",
        )
        .unwrap();
        assert_eq!((m.tasks[0].cpu, m.tasks[1].cpu), (Some(15), None));
    }

    #[test]
    fn duplicate_names_are_errors() {
        let e = error("[[task]]\nname = \"twin\"\nbin = \"hello\"\n[[task]]\nname = \"twin\"\nbin = \"spinner\"\n");
        assert!(e.contains("\"twin\"") && e.contains("duplicate"), "{e}");
        // An instance name colliding with another task's name.
        let e =
            error("[[task]]\nname = \"w\"\nbin = \"hello\"\ncount = 2\n[[task]]\nname = \"w-1\"\nbin = \"hello\"\n");
        assert!(e.contains("\"w-1\"") && e.contains("duplicate"), "{e}");
        let e = error("endpoints = [\"ping\", \"ping\"]\n[[task]]\nname = \"t\"\nbin = \"hello\"\n");
        assert!(e.contains("endpoints") && e.contains("\"ping\"") && e.contains("duplicate"), "{e}");
        let e = error("endpoints = [\"x\"]\nnotifications = [\"x\"]\n[[task]]\nname = \"t\"\nbin = \"hello\"\n");
        assert!(e.contains("notifications") && e.contains("duplicate"), "{e}");
    }

    #[test]
    fn two_fault_receivers_are_an_error() {
        let text = format!("endpoints = [\"faults\"]\n{SERVER}{}", SERVER.replace("\"fs\"", "\"fs2\""));
        let e = error(&text);
        assert!(e.contains("\"fs\"") && e.contains("\"fs2\"") && e.contains("faults"), "{e}");
        let text = format!("endpoints = [\"faults\"]\n{}count = 2\n", SERVER);
        let e = error(&text);
        assert!(e.contains("\"fs\"") && e.contains("count 2"), "{e}");
        // One receiver is the normal case.
        manifest(&format!("endpoints = [\"faults\"]\n{SERVER}")).unwrap();
    }

    #[test]
    fn more_caps_than_a_task_holds_is_an_error() {
        let notes: Vec<String> = (0..=abi::ipc::MAX_CAPS).map(|i| format!("\"n{i}\"")).collect();
        let caps: Vec<String> = (0..=abi::ipc::MAX_CAPS).map(|i| format!("\"n{i}:wait\"")).collect();
        let text = format!(
            "notifications = [{}]\n[[task]]\nname = \"greedy\"\nbin = \"hello\"\ncaps = [{}]\n",
            notes.join(", "),
            caps.join(", ")
        );
        let e = error(&text);
        assert!(e.contains("\"greedy\"") && e.contains("caps") && e.contains("17"), "{e}");
        // Exactly MAX_CAPS fit.
        let text = format!(
            "notifications = [{}]\n[[task]]\nname = \"full\"\nbin = \"hello\"\ncaps = [{}]\n",
            notes.join(", "),
            caps[..abi::ipc::MAX_CAPS].join(", ")
        );
        manifest(&text).unwrap();
        let e = error(
            "notifications = [\"n\"]\n[[task]]\nname = \"t\"\nbin = \"hello\"\ncaps = [\"n:wait\", \"n:wait\"]\n",
        );
        assert!(e.contains("\"t\"") && e.contains("twice"), "{e}");
    }

    #[test]
    fn bad_path_and_package_are_errors_naming_manifest_task_and_key() {
        let dir = std::env::temp_dir().join(format!("rewind-manifest-path-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("no-crate")).unwrap();
        let load = |text: &str| {
            let path = dir.join("app.toml");
            std::fs::write(&path, text).unwrap();
            format!("{:#}", Manifest::load(path.to_str().unwrap()).expect_err("must be refused"))
        };
        let missing = load("[[task]]\nname = \"t\"\nbin = \"app\"\npath = \"nowhere\"\n");
        let no_toml = load("[[task]]\nname = \"t\"\nbin = \"app\"\npath = \"no-crate\"\n");
        let empty = load("[[task]]\nname = \"t\"\nbin = \"app\"\npackage = \"\"\n");
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/Cargo.toml"), "").unwrap();
        let twice =
            load("[[task]]\nname = \"t\"\nbin = \"app\"\npath = \"a\"\n[[task]]\nname = \"u\"\nbin = \"app\"\n");
        std::fs::remove_dir_all(&dir).unwrap();
        for (e, key, what) in
            [(&missing, "`path`", "no folder"), (&no_toml, "`path`", "no Cargo.toml"), (&empty, "`package`", "empty")]
        {
            assert!(e.contains("app.toml") && e.contains("task \"t\"") && e.contains(key) && e.contains(what), "{e}");
        }
        // The missing folder is named as resolved: relative to the manifest.
        assert!(missing.contains(&dir.join("nowhere").display().to_string()), "{missing}");
        assert!(twice.contains("\"t\"") && twice.contains("\"u\"") && twice.contains("one binary per name"), "{twice}");
    }

    #[test]
    fn load_names_the_manifest_file() {
        let dir = std::env::temp_dir().join(format!("rewind-manifest-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[[task]]\nname = \"t\"\nbin = \"hello\"\nstack_kib = 3\n").unwrap();
        let e = format!("{:#}", Manifest::load(path.to_str().unwrap()).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("bad.toml") && e.contains("\"t\"") && e.contains("stack_kib"), "{e}");
    }
}
