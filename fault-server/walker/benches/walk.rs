//! Walk speed: the walker against framehop on the same recorded stacks.
//!
//! Design note: the stacks are real. `benches/fixtures/chain.c` is built with
//! `gcc -O2 -static -Wl,--eh-frame-hdr` and run under gdb until it stops in
//! `bottom` with exactly 5, 20 and 100 frames on the stack (through functions
//! with four different frame shapes: small rsp frames, callee-saved pushes, a
//! VLA with an rbp frame, a 2 KiB frame, then glibc's start-up frames down to
//! `_start`); gdb writes a core there (`gcore`). From each core the bench takes
//! the registers and a copy of the stack (from rsp to the end of its
//! mapping), and from the executable its `.eh_frame` and `.eh_frame_hdr`.
//! Both unwinders walk exactly those bytes: the walker through an
//! `Image::from_hdr` and a `SliceMemory`, framehop through an
//! `UnwinderX86_64` with one `Module` made of the same two sections and a read
//! closure over the same stack copy. Before timing, the bench checks that both
//! produce the same pcs for every frame, end normally, and produce exactly the
//! intended number of frames.
//!
//! - warm: one walker / one framehop cache reused across iterations (after the
//!   first iteration every frame is a cache hit in both);
//! - cold: every iteration builds a fresh `Image` and a fresh boxed `Walker`,
//!   resp. a fresh `UnwinderX86_64` + `add_module(Module::new(..))` +
//!   `CacheX86_64`, i.e. the first walk of an image; `cold/walker32` is the
//!   walker with the 32-slot row cache the fault server used to use;
//! - warm/table: the walker through the image's precompiled `RowTable`
//!   (built once, outside the timing; the fault server does not build it:
//!   ~445k guest instructions per image): no cache, every frame a table lookup.
//!
//! Criterion reports time per walk and, through `Throughput::Elements(frames)`,
//! frames per second; at the end the bench prints ns per frame and the
//! walker/framehop ratio for every configuration it ran.
//!
//! Run: `cargo bench -p rewind-walker --bench walk` (needs gcc, the glibc
//! static libraries and gdb). Shorter runs: append `-- --measurement-time 3`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use criterion::{BenchmarkId, Criterion, Throughput};
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};
use walker::host::{CoreFile, Executable};
use walker::{Image, Memory, Regs, RowTable, SliceMemory, Stop, Walker, dwarf};

/// Stack depths measured, in frames (the stopped function down to `_start`).
const DEPTHS: [usize; 3] = [5, 20, 100];
/// Largest stack copy taken from a core.
const MAX_STACK: u64 = 1 << 20;

fn work_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("walker-bench");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (the bench needs gcc and gdb)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the fixture program.
fn build(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/chain.c");
    let exe = dir.join("chain");
    run(Command::new("gcc").args(["-O2", "-static", "-Wl,--eh-frame-hdr", "-o"]).arg(&exe).arg(&src));
    exe
}

/// Runs `exe calls` under gdb to `bottom` and writes a core there.
fn record(exe: &Path, calls: usize, dir: &Path) -> CoreFile {
    let core = dir.join(format!("chain-{calls}.core"));
    let _ = std::fs::remove_file(&core);
    run(Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set debuginfod enabled off"])
        .args(["-ex", "break bottom", "-ex", "run"])
        .arg("-ex")
        .arg(format!("gcore {}", core.display()))
        .arg("--args")
        .arg(exe)
        .arg(calls.to_string()));
    CoreFile::open(&core).unwrap_or_else(|e| panic!("{e}"))
}

/// A recorded stack: registers at the stop and a copy of the stack.
struct Recorded {
    frames: usize,
    regs: Regs,
    base: u64,
    stack: Vec<u8>,
}

impl Recorded {
    fn from_core(core: &CoreFile) -> Self {
        let regs = core.regs();
        let sp = regs.sp().expect("core has rsp");
        let mut stack = Vec::new();
        let mut addr = sp;
        while addr - sp < MAX_STACK {
            let Some(w) = core.read_u64(addr) else { break };
            stack.extend_from_slice(&w.to_le_bytes());
            addr += 8;
        }
        assert!(!stack.is_empty(), "the core has no stack at rsp {sp:#x}");
        Recorded { frames: 0, regs, base: sp, stack }
    }

    fn mem(&self) -> SliceMemory<'_> {
        SliceMemory { base: self.base, bytes: &self.stack }
    }

    /// framehop's memory: the same bytes, the same bounds checks.
    fn read(&self) -> impl FnMut(u64) -> Result<u64, ()> + '_ {
        let mem = self.mem();
        move |addr| mem.read_u64(addr).ok_or(())
    }

    fn framehop_regs(&self) -> (u64, UnwindRegsX86_64) {
        let get = |r| self.regs.get(r).expect("full register set");
        let pc = get(dwarf::RIP);
        (pc, UnwindRegsX86_64::new(pc, get(dwarf::RSP), get(dwarf::RBP)))
    }
}

/// The unwind sections of the fixture, borrowed by both unwinders.
struct Sections<'a> {
    eh_frame: (&'a [u8], u64),
    eh_frame_hdr: (&'a [u8], u64),
    /// Executable address range (framehop's module range).
    text: std::ops::Range<u64>,
}

impl<'a> Sections<'a> {
    fn of(exe: &'a Executable) -> Self {
        let eh_frame = exe.eh_frame();
        let eh_frame_hdr = exe.eh_frame_hdr().expect("the fixture is linked with --eh-frame-hdr");
        let (start, end) =
            exe.loads.iter().filter(|l| l.3).fold((u64::MAX, 0), |(s, e), l| (s.min(l.0), e.max(l.0 + l.2)));
        Sections { eh_frame, eh_frame_hdr, text: start..end }
    }

    fn image(&self) -> Image<'a> {
        let img = Image::from_hdr(self.eh_frame_hdr.0, self.eh_frame_hdr.1, self.eh_frame.0, self.eh_frame.1)
            .expect("valid .eh_frame_hdr");
        assert_eq!(img.index_kind(), "eh_frame_hdr");
        img
    }

    fn framehop(&self) -> UnwinderX86_64<&'a [u8]> {
        let range = |(d, a): (&[u8], u64)| a..a + d.len() as u64;
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: Some(self.text.clone()),
            eh_frame_svma: Some(range(self.eh_frame)),
            eh_frame: Some(self.eh_frame.0),
            eh_frame_hdr_svma: Some(range(self.eh_frame_hdr)),
            eh_frame_hdr: Some(self.eh_frame_hdr.0),
            ..Default::default()
        };
        let mut u = UnwinderX86_64::new();
        // A static non-PIE executable: loaded at its link addresses (bias 0).
        u.add_module(Module::new("chain".into(), self.text.clone(), 0, info));
        u
    }
}

// Not inlined, so that profilers can attribute per-walk costs (callgrind).
#[inline(never)]
fn walker_walk<'a>(w: &mut Walker<'a>, image: &Image<'a>, rec: &Recorded) -> usize {
    let mut n = 0;
    let stop = w.walk(image, rec.regs, &rec.mem(), |f| {
        black_box(f.pc);
        n += 1;
        true
    });
    black_box(stop);
    n
}

#[inline(never)]
fn framehop_walk(u: &UnwinderX86_64<&[u8]>, cache: &mut CacheX86_64, rec: &Recorded) -> usize {
    let (pc, regs) = rec.framehop_regs();
    let mut read = rec.read();
    let mut it = u.iter_frames(pc, regs, cache, &mut read);
    let mut n = 0;
    while let Ok(Some(f)) = it.next() {
        black_box(f.address());
        n += 1;
    }
    n
}

/// A walk through the image's precompiled `RowTable` (built once per image,
/// like the fault server does): no cache, no `&mut`.
#[inline(never)]
fn table_walk<'a>(t: &RowTable, image: &Image<'a>, rec: &Recorded) -> usize {
    let mut n = 0;
    let stop = t.walk(image, rec.regs, &rec.mem(), walker::DEFAULT_MAX_DEPTH, |f| {
        black_box(f.pc);
        n += 1;
        true
    });
    black_box(stop);
    n
}

/// The first walk of an image: a fresh `Image` and a fresh boxed `Walker`.
#[inline(never)]
fn walker_cold(sections: &Sections<'_>, rec: &Recorded) -> usize {
    let image = sections.image();
    let mut w: Box<Walker<'_>> = Box::default();
    walker_walk(&mut w, &image, rec)
}

/// `walker_cold` with the 32-slot row cache the fault server uses.
#[inline(never)]
fn walker32_cold(sections: &Sections<'_>, rec: &Recorded) -> usize {
    let image = sections.image();
    let mut w: Box<Walker<'_, 32>> = Box::default();
    let mut n = 0;
    let stop = w.walk(&image, rec.regs, &rec.mem(), |f| {
        black_box(f.pc);
        n += 1;
        true
    });
    black_box(stop);
    n
}

/// The first walk of an image: a fresh unwinder with the module, a fresh cache.
#[inline(never)]
fn framehop_cold(sections: &Sections<'_>, rec: &Recorded) -> usize {
    let u = sections.framehop();
    let mut cache = CacheX86_64::new();
    framehop_walk(&u, &mut cache, rec)
}

/// `WALKER_BENCH_PROFILE="warm|cold walker|framehop|walker32 FRAMES ITERATIONS"`:
/// runs exactly that many walks of one configuration instead of criterion, for
/// profilers (e.g. `valgrind --tool=callgrind --toggle-collect='walk::profile*'`).
#[inline(never)]
fn profile_loop(spec: &str, sections: &Sections<'_>, recs: &[Recorded]) {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let [mode, who, frames, iters] = parts[..] else {
        panic!("WALKER_BENCH_PROFILE: expected \"warm|cold walker|framehop FRAMES ITERATIONS\"");
    };
    let frames: usize = frames.parse().expect("FRAMES");
    let iters: usize = iters.parse().expect("ITERATIONS");
    let rec =
        recs.iter().find(|r| r.frames == frames).unwrap_or_else(|| panic!("no recorded stack of {frames} frames"));
    let image = sections.image();
    let mut w: Box<Walker<'_>> = Box::default();
    let u = sections.framehop();
    let mut cache = CacheX86_64::new();
    let table = RowTable::build(&image).expect("row table");
    let mut total = 0;
    for _ in 0..iters {
        total += match (mode, who) {
            ("warm", "table") => table_walk(&table, &image, rec),
            ("warm", "walker") => walker_walk(&mut w, &image, rec),
            ("warm", "framehop") => framehop_walk(&u, &mut cache, rec),
            ("cold", "walker") => walker_cold(sections, rec),
            ("cold", "framehop") => framehop_cold(sections, rec),
            ("cold", "walker32") => walker32_cold(sections, rec),
            _ => panic!("WALKER_BENCH_PROFILE: unknown configuration {mode} {who}"),
        };
    }
    assert_eq!(total, frames * iters);
    eprintln!("{iters} walks of {frames} frames ({mode}, {who})");
}

/// Both unwinders' pcs must agree frame for frame, and both must end normally.
fn check(sections: &Sections<'_>, rec: &Recorded) {
    let image = sections.image();
    let mut w: Box<Walker<'_>> = Box::default();
    let mut ours = Vec::new();
    let stop = w.walk(&image, rec.regs, &rec.mem(), |f| {
        ours.push(f.pc);
        true
    });
    assert_eq!(stop, Stop::Outermost, "walker did not reach _start: {ours:#x?}");

    let u = sections.framehop();
    let mut cache = CacheX86_64::new();
    let (pc, regs) = rec.framehop_regs();
    let mut read = rec.read();
    let mut it = u.iter_frames(pc, regs, &mut cache, &mut read);
    let mut theirs = Vec::new();
    let end = loop {
        match it.next() {
            Ok(Some(f)) => {
                if let FrameAddress::ReturnAddress(_) = f {
                    assert!(!theirs.is_empty());
                }
                theirs.push(f.address());
            }
            other => break other,
        }
    };
    assert!(end.is_ok(), "framehop did not end normally: {end:?}");
    assert_eq!(ours, theirs, "the walker and framehop disagree on the pcs of the {}-frame stack", rec.frames);
    assert_eq!(ours.len(), rec.frames, "the recorded stack does not have the intended depth");
    // The timed walks must produce the same counts, and the row table the
    // same frames as the walker.
    assert_eq!(walker_walk(&mut w, &image, rec), rec.frames);
    let table = RowTable::build(&image).expect("row table");
    let mut want = Vec::new();
    w.walk(&image, rec.regs, &rec.mem(), |f| {
        want.push(*f);
        true
    });
    let mut got = Vec::new();
    table.walk(&image, rec.regs, &rec.mem(), walker::DEFAULT_MAX_DEPTH, |f| {
        got.push(*f);
        true
    });
    assert_eq!(got, want, "the row table walks differently");
    assert_eq!(table_walk(&table, &image, rec), rec.frames);
    assert_eq!(framehop_walk(&u, &mut cache, rec), rec.frames);
}

fn bench(c: &mut Criterion, sections: &Sections<'_>, recs: &[Recorded]) {
    let mut g = c.benchmark_group("warm");
    for rec in recs {
        g.throughput(Throughput::Elements(rec.frames as u64));
        let image = sections.image();
        let mut w: Box<Walker<'_>> = Box::default();
        g.bench_with_input(BenchmarkId::new("walker", rec.frames), rec, |b, rec| {
            b.iter(|| walker_walk(&mut w, &image, rec))
        });
        let stats = w.stats;
        assert!(stats.misses <= rec.frames as u64, "warm walks missed the row cache: {stats:?}");
        let u = sections.framehop();
        let mut cache = CacheX86_64::new();
        g.bench_with_input(BenchmarkId::new("framehop", rec.frames), rec, |b, rec| {
            b.iter(|| framehop_walk(&u, &mut cache, rec))
        });
        let table = RowTable::build(&image).expect("row table");
        g.bench_with_input(BenchmarkId::new("table", rec.frames), rec, |b, rec| {
            b.iter(|| table_walk(&table, &image, rec))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("cold");
    for rec in recs {
        g.throughput(Throughput::Elements(rec.frames as u64));
        g.bench_with_input(BenchmarkId::new("walker", rec.frames), rec, |b, rec| b.iter(|| walker_cold(sections, rec)));
        g.bench_with_input(BenchmarkId::new("framehop", rec.frames), rec, |b, rec| {
            b.iter(|| framehop_cold(sections, rec))
        });
        g.bench_with_input(BenchmarkId::new("walker32", rec.frames), rec, |b, rec| {
            b.iter(|| walker32_cold(sections, rec))
        });
    }
    g.finish();
}

/// (lower, estimate, upper) of criterion's time per iteration, in ns, from
/// `<criterion dir>/<group>/<unwinder>/<frames>/new/estimates.json`, if
/// written by this run. The slope (what criterion prints as `time`) when
/// present, else the mean.
fn estimate(group: &str, who: &str, frames: usize, since: SystemTime) -> Option<(f64, f64, f64)> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join(".."));
    let path = dir.join("criterion").join(group).join(who).join(frames.to_string()).join("new/estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let json = std::fs::read_to_string(path).ok()?;
    let num = |s: &str, key: &str| -> Option<f64> {
        let at = s.find(key)? + key.len();
        let rest = &s[at..];
        let end = rest.find([',', '}'])?;
        rest[..end].trim().parse().ok()
    };
    let part = |key: &str| -> Option<(f64, f64, f64)> {
        let s = &json[json.find(key)? + key.len()..];
        Some((num(s, "\"lower_bound\":")?, num(s, "\"point_estimate\":")?, num(s, "\"upper_bound\":")?))
    };
    part("\"slope\":{").or_else(|| part("\"mean\":{"))
}

fn summary(since: SystemTime) {
    println!("\nns per frame (95% CI), walker vs framehop; ratio = walker / framehop:");
    println!("{:<5} {:>6}  {:>24}  {:>24}  {:>6}", "", "frames", "walker", "framehop", "ratio");
    for group in ["warm", "cold"] {
        for n in DEPTHS {
            let (Some(w), Some(f)) = (estimate(group, "walker", n, since), estimate(group, "framehop", n, since))
            else {
                continue;
            };
            let per = |(lo, est, hi): (f64, f64, f64)| {
                let n = n as f64;
                format!("{:.1} [{:.1} {:.1}]", est / n, lo / n, hi / n)
            };
            println!("{group:<5} {n:>6}  {:>24}  {:>24}  {:>6.2}", per(w), per(f), w.1 / f.1);
            if let Some(t) = estimate(group, "table", n, since) {
                println!("{:<12}  {:>24}  {:>24}  {:>6.2}   (RowTable, precompiled rows)", "", per(t), "", t.1 / f.1);
            }
            if let Some(w32) = estimate(group, "walker32", n, since) {
                println!("{:<12}  {:>24}  {:>24}  {:>6.2}   (Walker<32>, a small memo)", "", per(w32), "", w32.1 / f.1);
            }
        }
    }
}

fn main() {
    let start = SystemTime::now();
    let dir = work_dir();
    let exe_path = build(&dir);
    let exe = Executable::open(&exe_path).unwrap_or_else(|e| panic!("{e}"));
    let sections = Sections::of(&exe);

    // Frames below `bottom` when main calls it directly (main, glibc's
    // start-up, _start): the chain adds one frame per call.
    let base = {
        let mut rec = Recorded::from_core(&record(&exe_path, 0, &dir));
        let image = sections.image();
        let mut w: Box<Walker<'_>> = Box::default();
        rec.frames = walker_walk(&mut w, &image, &rec);
        check(&sections, &rec);
        rec.frames
    };
    let recs: Vec<Recorded> = DEPTHS
        .iter()
        .map(|&frames| {
            let calls = frames
                .checked_sub(base)
                .unwrap_or_else(|| panic!("{frames} frames: fewer than the {base} base frames"));
            let mut rec = Recorded::from_core(&record(&exe_path, calls, &dir));
            rec.frames = frames;
            check(&sections, &rec);
            rec
        })
        .collect();
    eprintln!(
        "recorded stacks of {:?} frames ({:?} bytes); walker and framehop agree on every pc",
        DEPTHS,
        recs.iter().map(|r| r.stack.len()).collect::<Vec<_>>()
    );
    let table = RowTable::build(&sections.image()).expect("row table");
    eprintln!("row table of the fixture: {:?}, {} bytes of heap", table.stats(), table.heap_bytes());
    eprintln!(
        "sizes: Walker {} B, Row {} B, Frame {} B; framehop CacheX86_64 {} B (+ boxed rule cache)",
        size_of::<Walker<'_>>(),
        size_of::<walker::row::Row>(),
        size_of::<walker::Frame>(),
        size_of::<CacheX86_64>()
    );

    if let Ok(spec) = std::env::var("WALKER_BENCH_PROFILE") {
        profile_loop(&spec, &sections, &recs);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &sections, &recs);
    c.final_summary();
    summary(start);
}
