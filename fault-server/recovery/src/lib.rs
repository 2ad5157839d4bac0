//! `recovery`: what the fault server owes the other tasks when it rolls a
//! faulted task back — decided, not done.
//!
//! When a task faults inside a checkpoint scope, its private memory is
//! rolled back by the kernel, but what it holds in *shared* memory is not:
//! a mutex it locked stays locked, an `Arc` reference it took stays
//! counted. `libtask` records those holdings in the task's recovery page
//! (layout: `abi::checkpoint::RecoveryPage`); this crate reads that page
//! and answers one question: *which releases, in which order, does rolling
//! back to scope `depth` require?*
//!
//! ## Why a separate crate, and why no I/O
//!
//! The answer is the most safety-critical decision of the recovery path: a
//! missed release is a deadlock or a leak, a wrong one unlocks somebody
//! else's mutex or frees a live buffer. So the decision is a pure function
//! of bytes — the page as read from the task, the task's shared regions as
//! the kernel reports them (`TASK_CTL REGIONS`), the faulting registers
//! and the rollback depth (the page itself locates libtask's Arc asm
//! blocks, so no symbol table is needed) — and it is tested on the
//! host against hostile pages ([`plan`]'s tests). The fault server only
//! carries the actions out, through [`execute`] and its [`SharedOps`]
//! trait, which it implements with `TASK_CTL CAS64 / FETCH_ADD32 /
//! FUTEX_WAKE`.
//!
//! ## Trust
//!
//! The page is private memory of the faulted task: anything may be in it
//! (the fault may be the very bug that scribbled on it). [`plan`] checks
//! every count, every address (8-aligned, inside one of the task's shared
//! regions, past the region's header, and where the region's validated
//! layout — [`layout::RegionLayout`] — puts objects of the entry's kind: a
//! mutex in the statics area or an Arc slot's payload, an Arc at a slot
//! start), every scope number,
//! the intent slot
//! and its consistency with the registries; any violation is an
//! [`Invalid`] error, which means "escalate to a fresh start" — never a
//! guessed list of releases. The two exceptions leave out only what
//! provably names nothing shared — an entry whose address holds no object
//! of its kind, and the slots past a corrupt mutex count, read as stale
//! listings — and say so ([`plan::Salvage`]). The objects' own words (mutex
//! owner, Arc count) are read at execution time with atomic operations
//! whose outcome depends only on what is there, so a stale or racing value
//! cannot turn into a wrong release either (see [`execute`]).
//!
//! [`layout`] is the other half of the contract: the word offsets of a
//! shared region's header, of a mutex and of an Arc slot, shared with
//! `libtask::sync`, which depends on this crate for exactly that.
#![no_std]

pub mod execute;
#[cfg(test)]
mod fake;
pub mod layout;
pub mod plan;

pub use execute::{Outcome, SharedOps, execute};
pub use layout::RegionLayout;
pub use plan::{Action, Invalid, MAX_ARC_BLOCK, Origin, Plan, Release, Salvage, plan, plan_into};
