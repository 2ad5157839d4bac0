//! Harness for the QEMU integration tests in `tests/`.
//!
//! Each test boots the kernel built by `cargo xtask test` (passed in
//! `REWIND_KERNEL`) through the same code as `cargo xtask run`, with the
//! console and the event stream in files under
//! `target/rewind/qemu-tests/<run name>/`, and a timeout so a hung guest
//! fails the test with its console instead of hanging CI. Tests then assert
//! on what the system did: the parsed events and the exit verdict.

use abi::exit::GuestExit;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use xtask::qemu::{Boot, Console, Verdict};

/// How long a single boot may take before the test fails (TCG, loaded CI).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// The kernel ELF under test.
pub fn kernel() -> PathBuf {
    match std::env::var_os("REWIND_KERNEL") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "REWIND_KERNEL is not set: run the QEMU tests through `cargo xtask test` \
             (or set REWIND_KERNEL to the path `cargo xtask build` prints)"
        ),
    }
}

/// One finished boot.
pub struct Run {
    pub name: String,
    pub verdict: Verdict,
    pub console: String,
    /// The raw event stream.
    pub raw_events: Vec<u8>,
    pub events: Vec<Value>,
}

/// The folder of task binaries built by `cargo xtask test`.
pub fn task_bins() -> PathBuf {
    match std::env::var_os("REWIND_TASK_BINS") {
        Some(path) => PathBuf::from(path),
        None => panic!("REWIND_TASK_BINS is not set: run the QEMU tests through `cargo xtask test`"),
    }
}

/// The bytes of task binary `bin`.
pub fn task_elf(bin: &str) -> Vec<u8> {
    let path = task_bins().join(bin);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The packed image of manifest `images/NAME.toml` (packed by `cargo xtask test`).
pub fn image(name: &str) -> PathBuf {
    let path = xtask::paths::rewind_dir().join("images").join(format!("{name}.img"));
    assert!(path.exists(), "{} is missing: run the QEMU tests through `cargo xtask test`", path.display());
    path
}

/// Options for a boot.
#[derive(Clone, Default)]
pub struct Options {
    pub cmdline: String,
    pub icount: bool,
    /// The boot image file (`-initrd`).
    pub image: Option<PathBuf>,
    /// Seconds before QEMU is killed (default [`BOOT_TIMEOUT`]).
    pub timeout_secs: Option<u64>,
    /// Virtual CPUs (`-smp`); 0: [`default_cpus`].
    pub cpus: u32,
}

/// The CPUs a boot gets when its test does not say: `REWIND_TEST_CPUS` if
/// set, else 4 in a test binary whose name starts with `smp4` (the
/// representative suites run again on 4 CPUs: `tests/smp4.rs` includes
/// them as modules), else 1. Boots with more than one CPU this way put
/// `-cpusN` after their run name, so their files do not replace the
/// one-CPU runs'.
pub fn default_cpus() -> u32 {
    if let Some(n) = std::env::var("REWIND_TEST_CPUS").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    let exe = std::env::current_exe().ok();
    let stem = exe.as_ref().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("");
    if stem.starts_with("smp4") { 4 } else { 1 }
}

/// Boots image `images/IMAGE.toml`.
pub fn boot_image(name: &str, image_name: &str) -> Run {
    boot_with(name, Options { image: Some(image(image_name)), ..Options::default() })
}

/// Boots an image packed from `tasks` (for tests that build odd images).
pub fn boot_tasks(name: &str, tasks: &[abi::image::TaskSpec<'_>]) -> Run {
    let dir = xtask::paths::rewind_dir().join("qemu-tests").join(format!("{name}.img"));
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::write(&dir, abi::image::write_tasks(tasks)).expect("write the test image");
    boot_with(name, Options { image: Some(dir), ..Options::default() })
}

/// Packs `manifest` (TOML, `images/*.toml` format) into
/// `target/rewind/qemu-tests/<dir>/<name>.img`, appends the injection
/// `plan` (the injector's language; empty: none) and boots it under
/// `-icount`.
pub fn boot_plan(dir: &str, name: &str, manifest: &str, plan: &str) -> Run {
    let dir = xtask::paths::rewind_dir().join("qemu-tests").join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join(format!("{name}.toml"));
    std::fs::write(&toml, manifest).unwrap();
    let m = xtask::images::Manifest::load(toml.to_str().unwrap()).unwrap_or_else(|e| panic!("{name}: manifest: {e:#}"));
    let mut bytes = m.pack(&task_bins()).unwrap_or_else(|e| panic!("{name}: packing: {e:#}"));
    if !plan.is_empty() {
        bytes = xtask::inject::with_plan(&bytes, plan);
    }
    let img = dir.join(format!("{name}.img"));
    std::fs::write(&img, bytes).unwrap();
    boot_with(name, Options { image: Some(img), icount: true, ..Options::default() })
}

/// Boots the kernel with `cmdline` and waits for the verdict.
pub fn boot(name: &str, cmdline: &str) -> Run {
    boot_with(name, Options { cmdline: cmdline.into(), ..Options::default() })
}

pub fn boot_with(name: &str, options: Options) -> Run {
    let cpus = if options.cpus == 0 { default_cpus() } else { options.cpus };
    let owned;
    let name = if options.cpus == 0 && cpus > 1 {
        owned = format!("{name}-cpus{cpus}");
        owned.as_str()
    } else {
        name
    };
    let dir = xtask::paths::rewind_dir().join("qemu-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the run directory");
    let console_path = dir.join("console.log");
    let mut boot = Boot::new(kernel(), dir.join("events.jsonl"));
    boot.console = Console::File(console_path.clone());
    boot.cmdline = options.cmdline;
    boot.icount = options.icount;
    boot.cpus = cpus.max(1);
    boot.image = options.image;
    boot.timeout = Some(options.timeout_secs.map_or(BOOT_TIMEOUT, Duration::from_secs));
    let outcome = boot.run().unwrap_or_else(|e| panic!("{name}: could not boot QEMU: {e:#}"));
    let console = std::fs::read_to_string(&console_path).unwrap_or_default();
    let raw_events = std::fs::read(&outcome.events).unwrap_or_default();
    let mut events = Vec::new();
    for (i, line) in String::from_utf8_lossy(&raw_events).lines().enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.get("ev").and_then(Value::as_str).is_some() => events.push(v),
            _ => panic!("{name}: event line {} is not a JSON object with \"ev\": {line:?}\nconsole:\n{console}", i + 1),
        }
    }
    if let Verdict::Timeout(t) = outcome.verdict {
        panic!("{name}: QEMU timed out after {:.0} s and was killed.\nconsole:\n{console}", t.as_secs_f64());
    }
    Run { name: name.into(), verdict: outcome.verdict, console, raw_events, events }
}

impl Run {
    /// Asserts the guest exited with `code`.
    pub fn expect_exit(&self, code: GuestExit) -> &Self {
        assert_eq!(
            self.verdict,
            Verdict::Guest(code),
            "{}: expected guest exit {:?}, got {}\nconsole:\n{}",
            self.name,
            code,
            self.verdict.describe(),
            self.console
        );
        self
    }

    /// The `check` events named `name`.
    pub fn checks(&self, name: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["ev"] == "check" && e["name"] == name).collect()
    }

    /// Events of kind `ev` about task `task_name` (field `name` or `task_name`).
    pub fn task_events(&self, ev: &str, task_name: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["ev"] == ev && (e["name"] == task_name || e["task_name"] == task_name))
            .collect()
    }

    /// All events of kind `ev`.
    pub fn events_of(&self, ev: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["ev"] == ev).collect()
    }

    /// The one event of kind `ev` (panics with the stream otherwise).
    pub fn event(&self, ev: &str) -> &Value {
        let found = self.events_of(ev);
        assert_eq!(
            found.len(),
            1,
            "{}: expected exactly one {ev:?} event, got {}: {:#?}",
            self.name,
            found.len(),
            self.events
        );
        found[0]
    }
}

/// Parses a `"0x…"` field.
pub fn hex(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("expected a hex string, got {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("bad hex {s:?}"))
}

pub use xtask::symbols::Symbols;
