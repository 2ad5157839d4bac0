//! Tasks outside the tree (issue 13, item 1): a task crate in a temporary
//! folder, outside the repository, made by the template of `cargo xtask
//! new`, built from its own manifest by the same code as `cargo xtask run
//! --image path/to/app.toml` (`xtask::sources`), and booted.
//!
//! The fault server comes from Rewind's tree, prebuilt by `cargo xtask
//! test` (`REWIND_TASK_BINS`); the outside crate is built here, into
//! `target/outside/` (its dependencies are cached there after the first
//! run: what is left is the one small crate).

use abi::exit::GuestExit;
use qemu_tests::{Options, boot_with, task_bins};
use xtask::build::Profile;
use xtask::images::Manifest;
use xtask::sources::{self, InTree};

#[test]
fn a_task_crate_outside_the_repository_builds_and_boots_from_its_own_manifest() {
    let dir = std::env::temp_dir().join(format!("rewind-outside-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let repo = xtask::paths::root().canonicalize().unwrap();
    assert!(!dir.canonicalize().unwrap().starts_with(&repo), "{} is inside the repository", dir.display());

    let krate = xtask::template::create("outside-app", &dir).expect("the template");
    let manifest = Manifest::load(krate.join("outside-app.toml").to_str().unwrap()).expect("its manifest");
    let bins = sources::build(&manifest, Profile::Debug, &InTree::Prebuilt(task_bins()))
        .unwrap_or_else(|e| panic!("building the outside crate: {e:#}"));
    assert!(
        bins["outside-app"].starts_with(sources::outside_target_dir()),
        "the outside binary is not in target/outside: {bins:?}"
    );

    // A second crate that does not compile: its image fails to build,
    // naming the crate and its task; the first crate is not affected.
    let broken = xtask::template::create("broken-app", &dir).unwrap();
    let main = broken.join("src/main.rs");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{text}\ncompile_error!(\"broken on purpose by qemu-tests/tests/outside.rs\");\n"))
        .unwrap();
    let broken_manifest = Manifest::load(broken.join("broken-app.toml").to_str().unwrap()).unwrap();
    let e = format!(
        "{:#}",
        sources::build(&broken_manifest, Profile::Debug, &InTree::Prebuilt(task_bins()))
            .expect_err("a crate that does not compile must fail its image")
    );
    assert!(e.contains("broken-app.toml") && e.contains("tasks broken-app"), "{e}");
    let again = sources::build(&manifest, Profile::Debug, &InTree::Prebuilt(task_bins()))
        .unwrap_or_else(|e| panic!("the good crate, after the broken one: {e:#}"));
    assert_eq!(again, bins);

    let img = xtask::paths::rewind_dir().join("qemu-tests/outside-app.img");
    std::fs::create_dir_all(img.parent().unwrap()).unwrap();
    std::fs::write(&img, manifest.pack_bins(&bins).expect("pack")).unwrap();
    let run = boot_with("outside-app", Options { image: Some(img), ..Options::default() });
    run.expect_exit(GuestExit::Success);

    // The template's story: five rounds, one fault in round 3 rolled back
    // (lock released), the count right, exit 0.
    let checks = run.checks("outside-app:count");
    assert!(checks.len() == 1 && checks[0]["ok"] == true && checks[0]["value"] == 5, "{checks:#?}\n{}", run.console);
    let exits = run.task_events("task_exit", "outside-app");
    assert!(exits.len() == 1 && exits[0]["code"] == 0, "{exits:#?}");
    let reports = run.task_events("fault_report", "outside-app");
    let reports: Vec<_> = if reports.is_empty() {
        // fault_report names the task by id only.
        let id = &run.task_events("task_start", "outside-app")[0]["task"];
        run.events_of("fault_report").into_iter().filter(|r| &r["task"] == id).collect()
    } else {
        reports
    };
    assert!(reports.len() == 1 && reports[0]["action"] == "rollback", "{reports:#?}");
    // The fault server named the frame with the outside crate's symbols.
    let frame = reports[0]["frame"].as_str().unwrap_or_default();
    assert!(frame.contains("outside_app::main"), "frame {frame:?}");
    assert!(run.console.contains("outside-app: round 3 again, after a fault"), "{}", run.console);

    std::fs::remove_dir_all(&dir).unwrap();
}
