//! The `cargo xtask stack` command, runnable from the walker crate alone:
//! `cargo run -p rewind-walker --example stack -- --exe ELF --core CORE`.
//! It compiles xtask's own `stack.rs`, so both stay the same code.

#[path = "../../../xtask/src/stack.rs"]
mod stack;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: stack::StackArgs,
}

fn main() -> anyhow::Result<()> {
    stack::run(&Cli::parse().args)
}
