//! Booting an image in QEMU and reading its verdict.
//!
//! The machine: `qemu-system-x86_64 -kernel KERNEL` (PVH boot), COM1 = the
//! console, COM2 = the event stream (raw records to `events.bin`, decoded
//! to `events.jsonl` when the run ends: `crate::events`), `isa-debug-exit` so the guest
//! chooses QEMU's exit status, `-no-reboot` so a triple fault ends the run
//! (QEMU status 0) instead of looping. `-icount shift=0,sleep=off` makes a
//! run deterministic: the guest TSC counts guest instructions.

use crate::install;
use abi::exit::GuestExit;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";

/// Where the console goes.
#[derive(Clone, Debug, Default)]
pub enum Console {
    /// The terminal, with QEMU's monitor multiplexed in (Ctrl-A X quits).
    #[default]
    Terminal,
    /// A file (tests and headless runs).
    File(PathBuf),
}

/// How to boot.
#[derive(Clone, Debug)]
pub struct Boot {
    pub kernel: PathBuf,
    /// Kernel command line (`-append`).
    pub cmdline: String,
    /// The packed boot image (`-initrd`), if any.
    pub image: Option<PathBuf>,
    pub console: Console,
    /// Where the decoded event stream (JSON lines) is written; COM2's raw
    /// bytes go next to it ([`Boot::raw_events`]).
    pub events: PathBuf,
    /// Deterministic mode: `-icount shift=0,sleep=off`.
    pub icount: bool,
    /// Start halted with a gdb stub on :1234.
    pub gdb: bool,
    /// Show a display window (default: none).
    pub display: bool,
    pub memory_mib: u32,
    /// Virtual CPUs (`-smp N`; 1, QEMU's default, adds no argument).
    pub cpus: u32,
    /// Kill QEMU after this long (None: wait forever).
    pub timeout: Option<Duration>,
    pub extra_args: Vec<String>,
}

impl Boot {
    pub fn new(kernel: impl Into<PathBuf>, events: impl Into<PathBuf>) -> Boot {
        Boot {
            kernel: kernel.into(),
            cmdline: String::new(),
            image: None,
            console: Console::Terminal,
            events: events.into(),
            icount: false,
            gdb: false,
            display: false,
            memory_mib: 256,
            cpus: 1,
            timeout: None,
            extra_args: Vec::new(),
        }
    }

    /// The QEMU argument list.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["-kernel".into(), self.kernel.display().to_string()];
        a.extend([
            "-machine".into(),
            "pc".into(),
            "-cpu".into(),
            "max".into(),
            "-m".into(),
            format!("{}M", self.memory_mib),
        ]);
        // One CPU is QEMU's default; say nothing then, so the command line
        // (and what the bench reproduces) is unchanged.
        if self.cpus > 1 {
            a.extend(["-smp".into(), self.cpus.to_string()]);
        }
        a.extend(["-no-reboot".into(), "-device".into(), "isa-debug-exit,iobase=0xf4,iosize=0x04".into()]);
        if !self.display {
            a.extend(["-display".into(), "none".into()]);
        }
        match &self.console {
            Console::Terminal => a.extend(["-serial".into(), "mon:stdio".into()]),
            Console::File(path) => {
                a.extend(["-serial".into(), format!("file:{}", path.display()), "-monitor".into(), "none".into()])
            }
        }
        a.extend(["-serial".into(), format!("file:{}", self.raw_events().display())]);
        if let Some(image) = &self.image {
            a.extend(["-initrd".into(), image.display().to_string()]);
        }
        if !self.cmdline.is_empty() {
            a.extend(["-append".into(), self.cmdline.clone()]);
        }
        if self.icount {
            a.extend(["-icount".into(), "shift=0,sleep=off".into()]);
        }
        if self.gdb {
            a.extend(["-s".into(), "-S".into()]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// Where QEMU writes COM2 raw: `events.jsonl` -> `events.bin`.
    pub fn raw_events(&self) -> PathBuf {
        self.events.with_extension("bin")
    }

    /// Decodes the raw capture to [`Boot::events`], naming task frames with
    /// the boot image's ELFs.
    pub fn decode_events(&self) -> Result<()> {
        crate::events::decode_file(&self.raw_events(), &self.events, self.image.as_deref())
    }

    /// Boots and waits for the verdict.
    pub fn run(&self) -> Result<Outcome> {
        ensure_qemu()?;
        for path in [
            Some(&self.events),
            match &self.console {
                Console::File(p) => Some(p),
                Console::Terminal => None,
            },
        ]
        .into_iter()
        .flatten()
        {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        let mut cmd = Command::new(QEMU);
        cmd.args(self.args());
        if matches!(self.console, Console::File(_)) {
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
        }
        let start = Instant::now();
        let child = cmd.spawn().with_context(|| format!("starting {QEMU}"))?;
        let verdict = wait(child, self.timeout)?;
        self.decode_events()?;
        Ok(Outcome { verdict, wall: start.elapsed(), events: self.events.clone() })
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The kernel chose the exit code.
    Guest(GuestExit),
    /// QEMU exited with 0: the machine reset (triple fault under -no-reboot).
    Reset,
    /// Killed after the timeout.
    Timeout(Duration),
    /// Any other QEMU status (QEMU's own error, a signal...).
    Qemu(Option<i32>),
}

impl Verdict {
    /// The exit status `cargo xtask run` returns for this verdict.
    pub fn exit_status(self) -> u8 {
        match self {
            Verdict::Guest(code) => code as u8,
            Verdict::Reset => 100,
            Verdict::Timeout(_) => 101,
            Verdict::Qemu(_) => 102,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Verdict::Guest(GuestExit::Success) => "clean shutdown".into(),
            Verdict::Guest(code) => format!("guest exit: {} ({})", code.name(), code as u8),
            Verdict::Reset => "the machine reset (triple fault?)".into(),
            Verdict::Timeout(t) => format!("timed out after {:.1} s; QEMU was killed", t.as_secs_f64()),
            Verdict::Qemu(Some(s)) => format!("QEMU exited with status {s}"),
            Verdict::Qemu(None) => "QEMU was killed by a signal".into(),
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub wall: Duration,
    pub events: PathBuf,
}

impl Outcome {
    /// The event stream as parsed lines (raw text per line).
    pub fn event_lines(&self) -> Result<Vec<String>> {
        read_lines(&self.events)
    }
}

pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(String::from_utf8_lossy(&text).lines().map(str::to_owned).collect())
}

fn wait(mut child: Child, timeout: Option<Duration>) -> Result<Verdict> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            return Ok(match status.code() {
                Some(0) => Verdict::Reset,
                Some(code) => {
                    GuestExit::from_qemu_status(code).map(Verdict::Guest).unwrap_or(Verdict::Qemu(Some(code)))
                }
                None => Verdict::Qemu(None),
            });
        }
        if let Some(limit) = timeout
            && start.elapsed() >= limit
        {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Verdict::Timeout(limit));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes sure QEMU is installed (installs Debian's package when it can).
pub fn ensure_qemu() -> Result<()> {
    install::ensure(QEMU, "qemu-system-x86", "to boot Rewind")?;
    let out = Command::new(QEMU).arg("--version").output().context("running qemu --version")?;
    if !out.status.success() {
        bail!("`{QEMU} --version` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
