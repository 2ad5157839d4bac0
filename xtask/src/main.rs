//! `cargo xtask`: everything you do with Rewind goes through here.
//!
//! - `cargo xtask run`   build, boot the default image in QEMU, console on the terminal
//! - `cargo xtask test`  host unit tests, then the QEMU integration tests
//! - `cargo xtask build` build the kernel and tasks, pack an image
//! - `cargo xtask images` list the image manifests in `images/`
//! - `cargo xtask new`   write a task crate and its manifest, anywhere (`template.rs`)
//! - `cargo xtask stack`  walk an ELF core file's stack (`--exe ELF --core CORE`)
//! - `cargo xtask bench`  boot the benchmark image under icount; figures in guest instructions
//! - `cargo xtask inject` run a fault-injection script (`faults/*.toml`); report, chart, replay, shards and merge
//! - `cargo xtask events` decode a raw COM2 capture (`events.bin`) to JSON lines
//!
//! `run` exits with the guest's verdict: 0 clean shutdown, 1..=5 the kernel's
//! exit code (`abi::exit::GuestExit`), 100 machine reset (triple fault), 101
//! timeout, 102 QEMU error.

mod stack;
mod test;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;
use xtask::bench;
use xtask::build::{self, Profile};
use xtask::qemu::{Boot, Console, Verdict};
use xtask::{images, paths};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, boot and test Rewind", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build everything and boot the default image in QEMU.
    Run(RunArgs),
    /// Run the host unit tests, then the QEMU integration tests.
    Test(test::TestArgs),
    /// Build the kernel and the tasks, pack an image; print their paths.
    Build(BuildArgs),
    /// List the image manifests (images/*.toml).
    Images,
    /// Write a new task crate and its image manifest (DIR/NAME/, NAME.toml).
    New(NewArgs),
    /// Walk the stack of an ELF core file with Rewind's CFI walker.
    Stack(stack::StackArgs),
    /// Boot the benchmark image under icount; print the figures in guest instructions.
    Bench(bench::BenchArgs),
    /// Run a fault-injection script (faults/*.toml), or replay one injection of a report.
    Inject(xtask::inject::InjectArgs),
    /// Decode a raw COM2 capture (events.bin) to JSON lines on stdout.
    Events(EventsArgs),
}

#[derive(Args)]
struct EventsArgs {
    /// The raw capture (QEMU's COM2 output, e.g. target/rewind/events.bin).
    file: std::path::PathBuf,
    /// Name task backtrace frames with the ELFs of this image: a manifest
    /// name (images/NAME.toml, packed under target/rewind/images) or a
    /// packed image file.
    #[arg(long)]
    image: Option<String>,
}

#[derive(Args)]
struct NewArgs {
    /// The crate's, binary's and task's name.
    name: String,
    /// Where to make the crate's folder (default: the current directory).
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
}

#[derive(Args)]
struct BuildArgs {
    /// Build with the release profile.
    #[arg(long)]
    release: bool,
    /// The image to pack: a name in images/, or a manifest file (path/to/app.toml).
    #[arg(long, default_value = images::DEFAULT_IMAGE)]
    image: String,
}

#[derive(Args)]
struct RunArgs {
    /// The image to boot: a name in images/ (see `cargo xtask images`), or
    /// a manifest file (path/to/app.toml) whose tasks may live anywhere.
    #[arg(long, default_value = images::DEFAULT_IMAGE)]
    image: String,
    /// Build and boot the release profile.
    #[arg(long)]
    release: bool,
    /// Don't attach the terminal: console to target/rewind/console.log,
    /// printed when the run ends (for scripts).
    #[arg(long)]
    headless: bool,
    /// Open QEMU's display window (default: no display).
    #[arg(long, conflicts_with = "headless")]
    display: bool,
    /// Start halted with a gdb stub on localhost:1234 and print the gdb command.
    #[arg(long)]
    gdb: bool,
    /// Deterministic run: `-icount shift=0,sleep=off` (guest TSC = instructions).
    #[arg(long)]
    icount: bool,
    /// Kernel command line (e.g. `test=page-fault`).
    #[arg(long, default_value = "")]
    append: String,
    /// Virtual CPUs (QEMU `-smp N`). The kernel starts them all and runs
    /// tasks on every one (`task_exit` and `fault` events say which).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    cpus: u32,
    /// Kill QEMU after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Extra arguments passed to QEMU as they are (after `--`).
    #[arg(last = true)]
    qemu_args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Test(args) => test::run(args),
        Command::Build(args) => build(args),
        Command::Images => list_images(),
        Command::New(args) => new_task(args),
        Command::Stack(args) => stack::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(args),
        Command::Inject(args) => xtask::inject::main(args),
        Command::Events(args) => decode_events(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn new_task(args: NewArgs) -> Result<ExitCode> {
    let dir = xtask::template::create(&args.name, &args.dir)?;
    let manifest = dir.join(format!("{}.toml", args.name));
    println!("{}", dir.display());
    eprintln!("xtask: wrote the crate {} and its image {}", dir.display(), manifest.display());
    eprintln!("xtask: boot it (from this checkout): cargo xtask run --image {}", manifest.display());
    Ok(ExitCode::SUCCESS)
}

fn build(args: BuildArgs) -> Result<ExitCode> {
    let profile = if args.release { Profile::Release } else { Profile::Debug };
    let (kernel, image) = build::system(profile, &args.image)?;
    println!("{}", kernel.display());
    println!("{}", image.display());
    Ok(ExitCode::SUCCESS)
}

/// A kernel fault or panic leaves `backtrace_frame` events with bare pcs:
/// name them with the kernel's symbols.
fn print_kernel_backtrace(kernel: &std::path::Path, events: &std::path::Path) {
    let Ok(lines) = xtask::qemu::read_lines(events) else { return };
    let frames: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l.contains("\"ev\":\"backtrace_frame\""))
        .filter_map(|l| {
            let field = |k: &str| l.split(&format!("\"{k}\":\"")).nth(1)?.split('"').next().map(str::to_owned);
            Some((field("pc")?, field("cfa")?))
        })
        .collect();
    if frames.is_empty() {
        return;
    }
    let Ok(symbols) = xtask::symbols::Symbols::of(kernel) else { return };
    eprintln!("xtask: kernel backtrace:");
    for (i, (pc, cfa)) in frames.iter().enumerate() {
        let name =
            u64::from_str_radix(pc.trim_start_matches("0x"), 16).ok().and_then(|pc| symbols.name(pc)).unwrap_or("?");
        eprintln!("  #{i:<2} {pc}  cfa={cfa}  {name}");
    }
}

/// `run --gdb`: how to attach, with the kernel's symbols and a task's.
/// Every task is linked at the same address (0x400000, each in its own
/// address space), so gdb holds the symbols of one task binary at a time:
/// `add-symbol-file` the one to debug; a hardware breakpoint in it stops
/// whichever task runs that code (tasks of other binaries run other code
/// at those addresses: `info symbol $pc` tells where a stop is).
fn print_gdb_help(kernel: &std::path::Path, image: &str, bins: &xtask::sources::Binaries) {
    eprintln!("xtask: QEMU waits for gdb on localhost:1234. In another terminal:");
    eprintln!("  gdb {} -ex 'target remote localhost:1234' -ex 'hbreak kmain' -ex continue", kernel.display());
    let Ok(manifest) = images::Manifest::load(image) else { return };
    eprintln!("xtask: to step into a task, load its binary's symbols (all tasks are linked at 0x400000:");
    eprintln!("       one binary at a time), e.g. `add-symbol-file BIN` then `hbreak FUNCTION`:");
    for bin in manifest.bins() {
        let tasks: Vec<&str> = manifest.tasks.iter().filter(|t| t.bin == bin).map(|t| t.name.as_str()).collect();
        let Some(path) = bins.get(bin) else { continue };
        eprintln!("  add-symbol-file {}    # {}", path.display(), tasks.join(", "));
    }
}

fn decode_events(args: EventsArgs) -> Result<ExitCode> {
    use anyhow::Context;
    use std::io::Write;
    use xtask::events::{ImageSymbols, NoSymbols, decode_all};
    let raw = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let out = match args.image {
        Some(image) => {
            let as_file = std::path::PathBuf::from(&image);
            let path = if as_file.is_file() {
                as_file
            } else {
                paths::rewind_dir().join("images").join(format!("{image}.img"))
            };
            let symbols = ImageSymbols::from_file(&path)
                .with_context(|| format!("image {image}: pack it with `cargo xtask build --image {image}`"))?;
            decode_all(&raw, symbols)
        }
        None => decode_all(&raw, NoSymbols),
    };
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn list_images() -> Result<ExitCode> {
    for name in images::list()? {
        let manifest = images::Manifest::load(&name)?;
        let tasks: u32 = manifest.tasks.iter().map(|t| t.count).sum();
        let default = if name == images::DEFAULT_IMAGE { " (default)" } else { "" };
        println!("{name:<12} {tasks:>3} tasks  {}{default}", manifest.description);
    }
    Ok(ExitCode::SUCCESS)
}

fn run(args: RunArgs) -> Result<ExitCode> {
    let profile = if args.release { Profile::Release } else { Profile::Debug };
    let (kernel, image, bins) = build::system_bins(profile, &args.image)?;
    let out = paths::rewind_dir();
    let mut boot = Boot::new(&kernel, out.join("events.jsonl"));
    boot.image = Some(image);
    boot.cmdline = args.append;
    boot.icount = args.icount;
    boot.cpus = args.cpus;
    boot.gdb = args.gdb;
    boot.display = args.display;
    boot.timeout = args.timeout.map(Duration::from_secs_f64);
    boot.extra_args = args.qemu_args;
    let console_log = out.join("console.log");
    if args.headless {
        boot.console = Console::File(console_log.clone());
    }
    if args.gdb {
        print_gdb_help(&kernel, &args.image, &bins);
    }
    let outcome = boot.run()?;
    if args.headless {
        print!("{}", std::fs::read_to_string(&console_log).unwrap_or_default());
    }
    print_kernel_backtrace(&kernel, &outcome.events);
    eprintln!(
        "xtask: {} after {:.2} s; events in {}",
        outcome.verdict.describe(),
        outcome.wall.as_secs_f64(),
        outcome.events.display()
    );
    let status = outcome.verdict.exit_status();
    if matches!(outcome.verdict, Verdict::Guest(abi::exit::GuestExit::Success)) {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(status))
    }
}
