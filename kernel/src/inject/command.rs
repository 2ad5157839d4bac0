//! The injection command language, one command per line (ASCII):
//!
//! ```text
//! seed 42 18446744073709551615
//! inject id=1 task=bank-0 at=tick:120 kind=ud
//! inject id=2 task=* at=tsc:5000000 kind=regflip reg=rax bit=3
//! inject id=3 task=bank-0 at=pc:0x401234 steps=5 kind=kill
//! list
//! stats
//! ```
//!
//! Lines come from the plan appended to the boot image (deterministic: the
//! same plan gives the same run under `-icount`) or, interactively, from the
//! host on COM2. Both are parsed here, and a bad line is an error naming the
//! problem — never a guess.
//!
//! `seed S [ENABLED]`: the generator's seed, and which of the plan's
//! `inject` lines may act (bit i: the i-th, in plan order; default all).
//! A line whose bit is clear is armed and followed exactly like the others
//! — the kernel does the same work for it tick by tick — up to the instant
//! it would act, where it is dropped without a trace. The runner writes
//! the mask as 20 digits in every plan, so the plan parses at the same cost
//! whatever it holds: that is what lets it boot a batch with only its first
//! k injections enabled and get, instruction for instruction, the full
//! run's boot up to the (k + 1)-th (`xtask/src/inject/blame.rs`).

/// What to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    InvalidOpcode,
    PageFault,
    DivideError,
    GeneralProtection,
    RegFlip,
    MemFlip,
    SharedFlip,
    Skip,
    Kill,
    Hang,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "ud" => Kind::InvalidOpcode,
            "pf" => Kind::PageFault,
            "de" => Kind::DivideError,
            "gp" => Kind::GeneralProtection,
            "regflip" => Kind::RegFlip,
            "memflip" => Kind::MemFlip,
            "sharedflip" => Kind::SharedFlip,
            "skip" => Kind::Skip,
            "kill" => Kind::Kill,
            "hang" => Kind::Hang,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Kind::InvalidOpcode => "ud",
            Kind::PageFault => "pf",
            Kind::DivideError => "de",
            Kind::GeneralProtection => "gp",
            Kind::RegFlip => "regflip",
            Kind::MemFlip => "memflip",
            Kind::SharedFlip => "sharedflip",
            Kind::Skip => "skip",
            Kind::Kill => "kill",
            Kind::Hang => "hang",
        }
    }
}

/// When to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// At the first timer tick at or after this many ms since boot.
    Tick(u64),
    /// At the first tick at or after this TSC value (guest instructions).
    Tsc(u64),
    /// When the task reaches `pc`, then after `steps` more instructions.
    Pc { pc: u64, steps: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub id: u64,
    /// Task name; `None` = a random live task (chosen when due).
    pub task: Option<heapless::String<{ abi::image::NAME_LEN }>>,
    pub at: Trigger,
    pub kind: Kind,
    /// Register index in `abi::trap::Registers::named` order (regflip).
    pub reg: u8,
    pub bit: u8,
    /// Address (pf: CR2; memflip: target; 0 = random).
    pub addr: u64,
    /// Bytes to skip (skip).
    pub len: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Inject(Spec),
    Seed { seed: u64, enabled: u64 },
    List,
    Stats,
}

fn number(s: &str) -> Result<u64, &'static str> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| "bad number")
}

pub fn parse(line: &str) -> Result<Option<Command>, &'static str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut words = line.split_ascii_whitespace();
    match words.next() {
        Some("list") => return Ok(Some(Command::List)),
        Some("stats") => return Ok(Some(Command::Stats)),
        Some("seed") => {
            let seed = number(words.next().ok_or("seed needs a number")?)?;
            let enabled = words.next().map(number).transpose()?.unwrap_or(u64::MAX);
            return Ok(Some(Command::Seed { seed, enabled }));
        }
        Some("inject") => {}
        _ => return Err("unknown command (inject, seed, list, stats)"),
    }
    let mut spec =
        Spec { id: 0, task: None, at: Trigger::Tick(0), kind: Kind::InvalidOpcode, reg: 0, bit: 0, addr: 0, len: 0 };
    let (mut have_at, mut have_kind, mut steps) = (false, false, 0);
    for word in words {
        let (key, value) = word.split_once('=').ok_or("expected key=value")?;
        match key {
            "id" => spec.id = number(value)?,
            "task" if value == "*" => spec.task = None,
            "task" => {
                let mut name = heapless::String::new();
                name.push_str(value).map_err(|_| "task name too long")?;
                spec.task = Some(name);
            }
            "at" => {
                let (unit, n) = value.split_once(':').ok_or("at=tick:N, at=tsc:N or at=pc:ADDR")?;
                spec.at = match unit {
                    "tick" => Trigger::Tick(number(n)?),
                    "tsc" => Trigger::Tsc(number(n)?),
                    "pc" => Trigger::Pc { pc: number(n)?, steps: 0 },
                    _ => return Err("at=tick:N, at=tsc:N or at=pc:ADDR"),
                };
                have_at = true;
            }
            "steps" => steps = number(value)?,
            "kind" => {
                spec.kind =
                    Kind::parse(value).ok_or("unknown kind (ud pf de gp regflip memflip sharedflip skip kill hang)")?;
                have_kind = true;
            }
            "reg" => {
                let regs = abi::trap::Registers::default().named();
                spec.reg = regs.iter().position(|(n, _)| *n == value).ok_or("unknown register")? as u8;
            }
            "bit" => {
                spec.bit = number(value)? as u8;
                if spec.bit > 63 {
                    return Err("bit must be 0..=63");
                }
            }
            "addr" => spec.addr = number(value)?,
            "len" => spec.len = number(value)?,
            _ => return Err("unknown key"),
        }
    }
    if !have_at || !have_kind {
        return Err("inject needs at= and kind=");
    }
    if let Trigger::Pc { pc, .. } = spec.at {
        if spec.task.is_none() {
            return Err("at=pc needs a named task");
        }
        spec.at = Trigger::Pc { pc, steps };
    }
    if spec.kind == Kind::Skip && (spec.len == 0 || spec.len > 15) {
        return Err("skip needs len=1..=15 (the instruction's length)");
    }
    Ok(Some(Command::Inject(spec)))
}
