//! `cargo xtask stack --exe ELF --core CORE [--json] [--repeat N]`
//!
//! Design note: a thin front end over the walker library's host module. It
//! loads the executable and an ELF core file (registers from `NT_PRSTATUS`,
//! memory from `PT_LOAD`), checks that they belong together (the GNU build
//! ids when both have one — Rewind's task cores do, `crate::cores` —, load
//! bias from `AT_ENTRY`, ELF header bytes), walks, and prints the frames like
//! `eu-stack` or as JSON. Like eu-stack, it shows the frame where the walk
//! stopped and why: a frame whose pc has no CFI (an FDE) is still printed,
//! marked, as the last one (gdb and eu-stack show it too), and the line
//! `walk ended at frame #N (pc 0x…): reason` follows. Addresses are always
//! hex, and every refusal names the numbers involved. `--repeat N` times N
//! further walks of the same core, warm (caches kept across walks) and cold
//! (a fresh image and walker each time), and prints the mean time per frame:
//! the numbers the walker is tuned by.

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

/// Why the walk ended, for humans: every address in hex.
fn describe(stop: Stop) -> String {
    use walker::ExprError;
    match stop {
        Stop::Outermost => "outermost frame (return address undefined)".into(),
        Stop::NoFde { pc } => format!("no unwind info (FDE) for pc {pc:#x}: its caller is unknown"),
        Stop::Unreadable { addr } => format!("memory at {addr:#x} is not in the core"),
        Stop::CfaNotIncreasing { cfa, prev } => {
            format!("CFA {cfa:#x} not above the previous {prev:#x} (corrupt stack?)")
        }
        Stop::DepthLimit => format!("depth limit reached ({} frames)", walker::DEFAULT_MAX_DEPTH),
        Stop::UnsupportedRule => "unsupported unwind rule".into(),
        Stop::UnknownRegister { reg } => {
            format!("rule needs DWARF register {reg}, unknown in this frame")
        }
        Stop::Expression(ExprError::Unreadable(addr)) => {
            format!("CFI expression read memory at {addr:#x}, which is not in the core")
        }
        Stop::Expression(ExprError::UnknownRegister(reg)) => {
            format!("CFI expression needs DWARF register {reg}, unknown in this frame")
        }
        Stop::Expression(e) => format!("CFI expression failed: {e:?}"),
        Stop::BadCfi(e) => format!("malformed CFI: {e}"),
        Stop::Visitor => "stopped by caller".into(),
    }
}

/// Refuses an executable whose GNU build id is not the core's (when both
/// have one), naming both.
fn check_build_ids(exe_path: &std::path::Path, core_path: &std::path::Path) -> Result<()> {
    let read = |p: &std::path::Path| std::fs::read(p).ok().and_then(|b| walker::host::build_id(&b));
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    if let (Some(exe), Some(core)) = (read(exe_path), read(core_path))
        && exe != core
    {
        anyhow::bail!(
            "executable {} (build id {}) is not the one core {} was made from (build id {})",
            exe_path.display(),
            hex(&exe),
            core_path.display(),
            hex(&core)
        );
    }
    Ok(())
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
    check_build_ids(&args.exe, &args.core)?;
    let bias = core.bias_for(&exe)?;
    let image = exe.image(bias);
    let mut walker: Box<Walker<'_>> = Box::default();
    let mut frames = Vec::new();
    let stop = walker.walk(&image, core.regs(), &core, |f| {
        frames.push(*f);
        true
    });

    // The frame the walk could not step past for lack of CFI: its pc is
    // known (the previous frame's return address), its CFA is not.
    let last = match (stop, frames.last()) {
        // Frame 0's pc is where the fault was; a caller's is a return
        // address (named after the call, at pc - 1), unless its callee was
        // a signal frame.
        (Stop::NoFde { pc }, prev) => Some(walker::Frame {
            pc,
            cfa: 0,
            regs: walker::Regs::default(),
            signal: false,
            exact_pc: prev.is_none_or(|f| f.signal),
        }),
        _ => None,
    };
    let mut out = String::new();
    if args.json {
        out.push('[');
        for (i, f) in frames.iter().chain(&last).enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let sym = json_str(&symbol(&exe, f, bias));
            let cfa = if f.cfa == 0 { "null".to_string() } else { format!("\"{:#x}\"", f.cfa) };
            let _ = write!(out, "{sep}{{\"pc\":\"{:#x}\",\"cfa\":{cfa},\"symbol\":{sym}}}", f.pc);
        }
        out.push_str("]\n");
    } else {
        for (i, f) in frames.iter().enumerate() {
            let _ = writeln!(out, "#{i:<2} {:#018x}  cfa={:#x}  {}", f.pc, f.cfa, symbol(&exe, f, bias));
        }
        if let Some(f) = &last {
            let i = frames.len();
            let _ = writeln!(
                out,
                "#{i:<2} {:#018x}  cfa=?  {}  (no CFI: the walk stops here)",
                f.pc,
                symbol(&exe, f, bias)
            );
        }
    }
    print!("{out}");
    if !args.json || stop != Stop::Outermost {
        let at = frames.len() + last.iter().count();
        let index = at.saturating_sub(1);
        match frames.iter().chain(&last).last() {
            Some(f) => eprintln!("walk ended at frame #{index} (pc {:#x}): {}", f.pc, describe(stop)),
            None => {
                eprintln!("walk ended before frame #0 (pc {:#x}): {}", core.regs().pc().unwrap_or(0), describe(stop))
            }
        }
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
