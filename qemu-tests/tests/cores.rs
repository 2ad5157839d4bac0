//! Task core files: the default demo (`images/demo.toml`, `core_dumps =
//! true`) leaves one per fault in `cores/` next to its `events.jsonl`
//! (`fault-server/server/src/coredump.rs` streams them, `xtask/src/cores.rs`
//! writes them); gdb opens them and names the faulting function, and
//! `cargo xtask stack` walks them to `_start`.
//!
//! One boot serves every test. What a core must show is taken from the
//! stream's own events (the fault's registers, the backtrace the server
//! walked and the host named), never written out here.

use abi::exit::GuestExit;
use qemu_tests::{Run, boot_image, task_bins};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const RUN: &str = "cores-demo";

fn run() -> &'static Run {
    static R: OnceLock<Run> = OnceLock::new();
    R.get_or_init(|| {
        let run = boot_image(RUN, "demo");
        run.expect_exit(GuestExit::Success);
        run
    })
}

fn run_dir() -> PathBuf {
    xtask::paths::rewind_dir().join("qemu-tests").join(RUN)
}

/// The faults the fault server reported: `(task name, seq, fault event)`.
fn faults(run: &Run) -> Vec<(String, u64, &Value)> {
    let mut out: Vec<(String, u64, &Value)> = run
        .events_of("fault")
        .into_iter()
        .filter(|e| e.get("by").is_some())
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e["seq"].as_u64().unwrap(), e))
        .collect();
    out.sort_by_key(|f| f.1);
    out.dedup_by_key(|f| f.1);
    // The demo's two faults: the crasher's null read, the teller's `ud2`.
    let names: Vec<&str> = out.iter().map(|f| f.0.as_str()).collect();
    assert!(names.contains(&"crasher") && names.contains(&"teller-faulty"), "faults: {names:?}\n{}", run.console);
    out
}

/// The binary a demo task runs (`bin` in the manifest).
fn bin_of(task: &str) -> PathBuf {
    let manifest = xtask::images::Manifest::load("demo").unwrap();
    let entry = manifest.tasks.iter().find(|t| t.name == task).unwrap_or_else(|| panic!("no demo task {task}"));
    task_bins().join(&entry.bin)
}

/// The symbol of frame 0 of the `backtrace` of fault `seq`: the faulting
/// function, as the host named it from the task's ELF.
fn faulting_function(run: &Run, seq: u64) -> String {
    let bt = run.events_of("backtrace").into_iter().find(|e| e["seq"] == seq).expect("a backtrace of the fault");
    bt["frames"][0]["symbol"].as_str().unwrap().to_owned()
}

/// The core file of fault `seq` of `task`, as its `core_end` names it.
fn core_of(run: &Run, task: &str, seq: u64) -> PathBuf {
    let ends = run.events_of("core_end");
    let end = ends.iter().find(|e| e["seq"] == seq).unwrap_or_else(|| {
        panic!("no core_end for {task} fault {seq}; core events: {ends:?}\nconsole:\n{}", run.console)
    });
    assert!(end.get("error").is_none(), "core of {task} fault {seq} not written: {end}");
    let file = end["file"].as_str().expect("core_end names its file");
    assert_eq!(file, format!("cores/{task}-{seq}.core"));
    run_dir().join(file)
}

#[test]
fn the_demo_leaves_a_core_file_for_each_of_its_faults() {
    let run = run();
    let faults = faults(run);
    for (task, seq, fault) in &faults {
        let path = core_of(run, task, *seq);
        let core = walker::host::CoreFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The registers are the fault's, and the stack at rsp is in the core.
        let rip = u64::from_str_radix(fault["rip"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        let rsp = u64::from_str_radix(fault["regs"]["rsp"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        assert_eq!(core.regs().pc(), Some(rip), "{task} fault {seq}: rip");
        assert!(core.bytes(rsp, 8).is_some(), "{task} fault {seq}: no stack at rsp {rsp:#x} in the core");
        // It names the executable: the build id of the task's binary.
        let exe = std::fs::read(bin_of(task)).unwrap();
        let core_bytes = std::fs::read(&path).unwrap();
        let id = xtask::cores::build_id(&exe).expect("task binaries carry a build id");
        assert_eq!(xtask::cores::build_id(&core_bytes), Some(id), "{task}: build id");
    }
    let files = std::fs::read_dir(run_dir().join("cores")).unwrap().count();
    assert_eq!(files, faults.len(), "one core file per fault, no more");
}

#[test]
fn gdb_opens_a_core_and_names_the_faulting_function() {
    let run = run();
    xtask::install::ensure("gdb", "gdb", "to read task core files").unwrap();
    for (task, seq, _) in faults(run) {
        let core = core_of(run, &task, seq);
        let function = faulting_function(run, seq);
        let out = Command::new("gdb")
            .args(["-batch", "-nx", "-ex", "bt"])
            .arg(bin_of(&task))
            .arg(&core)
            .output()
            .expect("run gdb");
        let text = String::from_utf8_lossy(&out.stdout);
        // gdb prints frame #0 when it opens the core, then the backtrace.
        let mut frames: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
        frames.dedup();
        // The faulting pc's frames: #0 and the functions inlined around it,
        // up to the first caller gdb shows with a return address (`0x… in`).
        let at_fault: Vec<&str> = frames.iter().copied().take_while(|l| !l.contains(" in ")).collect();
        assert!(
            at_fault.iter().any(|l| l.contains(&function)),
            "{task} fault {seq}: gdb's frames at the faulting pc do not name {function}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(frames.last().is_some_and(|l| l.contains("_start")), "{task}: gdb's backtrace ends elsewhere:\n{text}");
        assert!(text.contains("Program terminated with signal SIG"), "{task}: no signal:\n{text}");
    }
}

#[test]
fn xtask_stack_walks_a_core_to_start() {
    let run = run();
    let (task, seq, _) = faults(run).into_iter().find(|f| f.0 == "teller-faulty").expect("the teller's fault");
    let core = core_of(run, &task, seq);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let stack = |exe: &std::path::Path| {
        Command::new(&cargo)
            .current_dir(xtask::paths::root())
            .args(["xtask", "stack", "--exe"])
            .arg(exe)
            .arg("--core")
            .arg(&core)
            .output()
            .expect("run cargo xtask stack")
    };
    let out = stack(&bin_of(&task));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "cargo xtask stack failed:\n{stdout}\n{stderr}");
    // The walker's frames are the server's: the backtrace event, frame by frame.
    let bt = run.events_of("backtrace").into_iter().find(|e| e["seq"] == seq).unwrap();
    let expected: Vec<String> =
        bt["frames"].as_array().unwrap().iter().map(|f| f["pc"].as_str().unwrap().to_owned()).collect();
    let got: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|pc| format!("{:#x}", u64::from_str_radix(pc.trim_start_matches("0x"), 16).unwrap()))
        .collect();
    assert_eq!(got, expected, "frames:\n{stdout}");
    assert!(stdout.lines().next().unwrap().contains(&faulting_function(run, seq)), "{stdout}");
    assert!(stdout.lines().last().unwrap().contains("_start"), "{stdout}");
    assert!(stderr.contains(&format!("walk ended at frame #{} (pc 0x", expected.len() - 1)), "{stderr}");
    // The wrong executable is refused, naming both build ids.
    let out = stack(&bin_of("crasher"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a core walked with another task's binary was accepted");
    let hex = |b: Vec<u8>| xtask::cores::hex(&b);
    let crasher_id = hex(xtask::cores::build_id(&std::fs::read(bin_of("crasher")).unwrap()).unwrap());
    let core_id = hex(xtask::cores::build_id(&std::fs::read(&core).unwrap()).unwrap());
    assert!(stderr.contains(&crasher_id) && stderr.contains(&core_id), "{stderr}");
}
