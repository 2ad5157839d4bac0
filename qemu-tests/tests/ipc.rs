//! IPC between tasks (`images/ipc.toml`, `tasks/ping`): 10,000 call/reply
//! round trips with checked payloads, receive timeouts, notifications.

use abi::exit::GuestExit;
use qemu_tests::boot_image;

#[test]
fn ping_pong_ten_thousand_round_trips() {
    let run = boot_image("ipc-ping-pong", "ipc");
    run.expect_exit(GuestExit::Success);
    // The pinger verified every reply (words, label, badge, and for every
    // 100th call a 64-byte buffer reversed by the ponger).
    let pp = run.checks("ping-pong");
    assert!(pp.len() == 1 && pp[0]["ok"] == true && pp[0]["value"] == 10_000, "{pp:#?}\n{}", run.console);
    let served = run.checks("pong-served");
    assert!(served.len() == 1 && served[0]["ok"] == true && served[0]["value"] == 10_001, "{served:#?}");
    let timeout = run.checks("recv-timeout");
    assert!(timeout.len() == 1 && timeout[0]["ok"] == true && timeout[0]["value"].as_u64() >= Some(20), "{timeout:#?}");
    let bell = run.checks("notification");
    assert!(bell.len() == 1 && bell[0]["ok"] == true && bell[0]["value"] == 0b101, "{bell:#?}");
    for name in ["pinger", "ponger"] {
        let exits = run.task_events("task_exit", name);
        assert!(exits.len() == 1 && exits[0]["code"] == 0, "{name}: {exits:#?}");
    }
    let rt = run.checks("ipc-round-trip");
    eprintln!("ipc round trip: {} TSC ticks (not under icount)", rt[0]["value"]);
    assert!(run.events_of("fault").is_empty());
}
