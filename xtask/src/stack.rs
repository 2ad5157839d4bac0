//! `cargo xtask stack --exe ELF --core CORE [--json] [--repeat N]`
//!
//! Design note: a thin front end over the walker library's host module. It
//! loads the executable and an ELF core file (registers from `NT_PRSTATUS`,
//! memory from `PT_LOAD`), checks that they belong together (load bias from
//! `AT_ENTRY`, ELF header bytes), walks, and prints the frames like `eu-stack`
//! or as JSON. `--repeat N` times N further walks of the same core, warm
//! (caches kept across walks) and cold (a fresh image and walker each time),
//! and prints the mean time per frame: the numbers the walker is tuned by.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use walker::host::{CoreFile, Executable};
use walker::{Frame, Stop, Walker};

/// Arguments of `cargo xtask stack`.
#[derive(clap::Args, Debug)]
pub struct StackArgs {
    /// The executable the core was dumped from.
    #[arg(long, value_name = "ELF")]
    pub exe: PathBuf,
    /// An ELF core file (e.g. from gdb's `gcore` or the kernel).
    #[arg(long, value_name = "CORE")]
    pub core: PathBuf,
    /// Print the frames as JSON: `[{"pc":"0x..","cfa":"0x..","symbol":".."}]`.
    #[arg(long)]
    pub json: bool,
    /// Walk N more times and print the mean time per frame (warm and cold).
    #[arg(long, value_name = "N")]
    pub repeat: Option<u32>,
}

/// Why the walk ended, for humans.
fn describe(stop: Stop) -> String {
    match stop {
        Stop::Outermost => "outermost frame (return address undefined)".into(),
        Stop::NoFde { pc } => format!("no unwind info (FDE) for pc {pc:#x}"),
        Stop::Unreadable { addr } => format!("memory at {addr:#x} is not in the core"),
        Stop::CfaNotIncreasing { cfa, prev } => {
            format!("CFA {cfa:#x} not above the previous {prev:#x} (corrupt stack?)")
        }
        Stop::DepthLimit => "depth limit reached".into(),
        Stop::UnsupportedRule => "unsupported unwind rule".into(),
        Stop::UnknownRegister { reg } => {
            format!("rule needs register {reg}, unknown in this frame")
        }
        Stop::Expression(e) => format!("CFI expression failed: {e:?}"),
        Stop::BadCfi(e) => format!("malformed CFI: {e}"),
        Stop::Visitor => "stopped by caller".into(),
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `symbol+0xoff` for a frame; a return address is looked up at `pc - 1`
/// (the call), so a call ending a function is named after that function.
/// Signal trampolines are looked up as is: their FDE starts one byte early
/// precisely so that `pc - 1` finds it, but the symbol does not.
fn symbol(exe: &Executable, f: &Frame, bias: u64) -> String {
    let look = if f.exact_pc || f.signal { f.pc } else { f.pc.wrapping_sub(1) };
    match exe.symbols(bias).lookup(look) {
        Some(s) => format!("{:#}+{:#x}", s.demangled(), f.pc.wrapping_sub(s.addr)),
        None => "??".into(),
    }
}

/// Runs `cargo xtask stack`.
pub fn run(args: &StackArgs) -> Result<()> {
    let exe = Executable::open(&args.exe)?;
    let core = CoreFile::open(&args.core)?;
    let bias = core.bias_for(&exe)?;
    let image = exe.image(bias);
    let mut walker: Box<Walker<'_>> = Box::default();
    let mut frames = Vec::new();
    let stop = walker.walk(&image, core.regs(), &core, |f| {
        frames.push(*f);
        true
    });

    let mut out = String::new();
    if args.json {
        out.push('[');
        for (i, f) in frames.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let sym = json_str(&symbol(&exe, f, bias));
            let _ = write!(out, "{sep}{{\"pc\":\"{:#x}\",\"cfa\":\"{:#x}\",\"symbol\":{sym}}}", f.pc, f.cfa);
        }
        out.push_str("]\n");
    } else {
        for (i, f) in frames.iter().enumerate() {
            let _ = writeln!(out, "#{i:<2} {:#018x}  cfa={:#x}  {}", f.pc, f.cfa, symbol(&exe, f, bias));
        }
    }
    print!("{out}");
    if !args.json || stop != Stop::Outermost {
        eprintln!("walk ended: {}", describe(stop));
    }

    if let Some(n) = args.repeat.filter(|&n| n > 0) {
        let nframes = frames.len().max(1) as f64;
        let t = Instant::now();
        for _ in 0..n {
            let mut k = 0usize;
            walker.walk(&image, core.regs(), &core, |_| {
                k += 1;
                true
            });
            std::hint::black_box(k);
        }
        let warm = t.elapsed().as_nanos() as f64 / f64::from(n) / nframes;
        let t = Instant::now();
        for _ in 0..n {
            let image = exe.image(bias);
            let mut cold: Box<Walker<'_>> = Box::default();
            let mut k = 0usize;
            cold.walk(&image, core.regs(), &core, |_| {
                k += 1;
                true
            });
            std::hint::black_box(k);
        }
        let cold = t.elapsed().as_nanos() as f64 / f64::from(n) / nframes;
        eprintln!(
            "{n} walks of {} frames ({} lookup): warm {warm:.1} ns/frame, cold (fresh image and caches) {cold:.1} ns/frame",
            frames.len(),
            image.index_kind()
        );
    }
    Ok(())
}
