//! Booting batches: the image with its plan appended, under icount, several
//! QEMU instances at once.
//!
//! Why our own wait loop instead of `Boot::run`: a boot ends either by
//! itself (the kernel shuts down when every task is done) or at the batch's
//! guest-time deadline, which the kernel marks with the `inject_missed`
//! event of the plan's marker (`plan.rs`). We follow COM2's raw capture
//! while QEMU runs, decoding its records as they arrive (`crate::events`),
//! and kill QEMU once the marker is decoded; the stream is then cut right
//! after the marker, so what the classifier sees does not depend on how
//! fast the host was. A wall-clock timeout remains as a backstop for a
//! guest that stops emitting anything (a kernel wedged with interrupts off).
//!
//! The machine is `xtask::qemu::Boot`'s (same arguments as `cargo xtask
//! run --icount`); each batch gets its own folder of files, and its image
//! file is deleted after the boot (images hold every task's ELF with debug
//! info: tens of MB each).

use super::plan::{Batch, MARKER_ID, MARKER_TASK};
use crate::events::{Decoder, ImageSymbols, SymbolSource};
use crate::qemu::{Boot, Console, QEMU, Verdict};
use abi::exit::GuestExit;
use anyhow::{Context, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a boot ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// QEMU exited: the guest's verdict.
    Exit(Verdict),
    /// The guest reached the batch's deadline still running.
    Deadline,
    /// No deadline marker within the wall-clock timeout.
    WallTimeout,
}

impl End {
    pub fn describe(self) -> String {
        match self {
            End::Exit(v) => v.describe(),
            End::Deadline => "still running at the deadline (killed)".into(),
            End::WallTimeout => "wall-clock timeout (killed)".into(),
        }
    }
    /// The kernel was alive at the end: clean shutdown, or running at the deadline.
    pub fn kernel_alive(self) -> bool {
        matches!(self, End::Exit(Verdict::Guest(GuestExit::Success)) | End::Deadline)
    }
}

/// One finished boot.
pub struct BatchRun {
    pub end: End,
    /// The event stream, cut after the deadline marker if there was one.
    pub events: Vec<u8>,
}

/// What every boot shares.
pub struct Machine {
    pub kernel: PathBuf,
    /// The packed image without a plan.
    pub image: Vec<u8>,
    pub wall_timeout: Duration,
    /// Virtual CPUs per boot.
    pub cpus: u32,
}

/// The image bytes with `plan` appended (`abi::image::plan` finds it).
pub fn with_plan(image: &[u8], plan: &str) -> Vec<u8> {
    let mut out = image.to_vec();
    out.resize(image.len().next_multiple_of(8), 0);
    out.extend_from_slice(&abi::image::PLAN_MAGIC);
    out.extend_from_slice(&(plan.len() as u64).to_le_bytes());
    out.extend_from_slice(plan.as_bytes());
    out
}

/// Boots one batch; its files go to `dir/batch-N.*`.
pub fn boot(machine: &Machine, batch: &Batch, dir: &Path) -> Result<BatchRun> {
    boot_plan(machine, batch.index, &batch.plan_text(), dir)
}

/// Boots batch `index` with plan text `plan`.
pub fn boot_plan(machine: &Machine, index: usize, plan: &str, dir: &Path) -> Result<BatchRun> {
    boot_named(machine, &format!("batch-{index}"), plan, dir)
}

/// Boots plan text `plan`; its files go to `dir/NAME.*`.
pub fn boot_named(machine: &Machine, name: &str, plan: &str, dir: &Path) -> Result<BatchRun> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = dir.join(name);
    let image_path = stem.with_extension("img");
    let events_path = stem.with_extension("jsonl");
    std::fs::write(&image_path, with_plan(&machine.image, plan))
        .with_context(|| format!("writing {}", image_path.display()))?;
    let mut qemu = Boot::new(&machine.kernel, &events_path);
    let raw_path = qemu.raw_events();
    std::fs::write(&raw_path, b"").with_context(|| format!("creating {}", raw_path.display()))?;
    qemu.image = Some(image_path.clone());
    qemu.console = Console::File(stem.with_extension("console.log"));
    qemu.icount = true;
    qemu.cpus = machine.cpus;
    let stderr = std::fs::File::create(stem.with_extension("qemu.log")).context("creating the QEMU log")?;
    let mut child = Command::new(QEMU)
        .args(qemu.args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {QEMU}"))?;

    let start = Instant::now();
    let mut watch = Watch::new(ImageSymbols::new(machine.image.clone()));
    let end = loop {
        let exited = child.try_wait().context("waiting for QEMU")?;
        watch.read(&raw_path)?;
        if let Some(status) = exited {
            watch.read(&raw_path)?;
            break match watch.marker_end {
                Some(_) => End::Deadline,
                None => End::Exit(match status.code() {
                    Some(0) => Verdict::Reset,
                    Some(code) => {
                        GuestExit::from_qemu_status(code).map(Verdict::Guest).unwrap_or(Verdict::Qemu(Some(code)))
                    }
                    None => Verdict::Qemu(None),
                }),
            };
        }
        if watch.marker_end.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            break End::Deadline;
        }
        if start.elapsed() >= machine.wall_timeout {
            let _ = child.kill();
            let _ = child.wait();
            watch.read(&raw_path)?;
            break if watch.marker_end.is_some() { End::Deadline } else { End::WallTimeout };
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_file(&image_path);
    let events = watch.finish();
    std::fs::write(&events_path, &events).with_context(|| format!("writing {}", events_path.display()))?;
    let _ = std::fs::remove_file(&raw_path);
    Ok(BatchRun { end, events })
}

/// Follows the growing raw capture, decoding it, looking for the deadline marker.
struct Watch<S: SymbolSource> {
    /// Raw bytes read so far.
    offset: u64,
    decoder: Decoder<S>,
    /// The decoded JSON lines so far.
    out: Vec<u8>,
    /// How far `out` has been searched for the marker.
    scanned: usize,
    /// Byte offset in `out` just after the marker's line, once seen.
    marker_end: Option<usize>,
}

impl<S: SymbolSource> Watch<S> {
    fn new(symbols: S) -> Watch<S> {
        Watch { offset: 0, decoder: Decoder::new(symbols), out: Vec::new(), scanned: 0, marker_end: None }
    }

    fn read(&mut self, path: &Path) -> Result<()> {
        if self.marker_end.is_some() {
            return Ok(());
        }
        let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.decoder.feed(&buf, &mut self.out);
        while let Some(nl) = self.out[self.scanned..].iter().position(|b| *b == b'\n') {
            let line = &self.out[self.scanned..self.scanned + nl];
            self.scanned += nl + 1;
            if is_marker(line) {
                self.marker_end = Some(self.scanned);
                return Ok(());
            }
        }
        Ok(())
    }

    /// The decoded stream: cut after the marker, or whole (a frame cut
    /// short at the end is reported as a `decode_error` line).
    fn finish(mut self) -> Vec<u8> {
        match self.marker_end {
            Some(cut) => self.out.truncate(cut),
            None => self.decoder.finish(&mut self.out),
        }
        self.out
    }
}

/// Whether an event line is the deadline marker's `inject_missed`.
pub fn is_marker(line: &[u8]) -> bool {
    if !line.starts_with(b"{\"ev\":\"inject_missed\"") {
        return false;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { return false };
    v["id"].as_u64() == Some(MARKER_ID) && v["reason"] == "no such task"
}

/// Whether the plan's marker task name could collide with the image.
pub fn marker_collides(task_names: impl IntoIterator<Item = impl AsRef<str>>) -> bool {
    task_names.into_iter().any(|n| n.as_ref() == MARKER_TASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_follows_the_image_where_the_kernel_looks() {
        let image = vec![7u8; 13];
        let module = with_plan(&image, "seed 1\n");
        assert_eq!(abi::image::plan(&module, image.len()), Some("seed 1\n"));
    }

    #[test]
    fn recognises_the_marker() {
        assert!(is_marker(br#"{"ev":"inject_missed","tsc":5,"id":0,"reason":"no such task"}"#));
        assert!(!is_marker(br#"{"ev":"inject_missed","tsc":5,"id":3,"reason":"no such task"}"#));
        assert!(!is_marker(br#"{"ev":"inject","tsc":5,"id":0}"#));
    }
}
