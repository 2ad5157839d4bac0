//! The recovery path: from a faulting instruction in ring 3 to the task
//! running again, top-down. A reader follows one fault through these files
//! in this order:
//!
//! | step | module | what happens |
//! |------|--------------|-----|
//! | 1 | `fault`      | the trap lands (`user_exception`, or the watchdog in `user_tick`): a write to a page a scope tracks is preserved (`versions`) and the task goes on; anything else becomes a fault, the task is suspended and its fault message — registers, open scopes, policy, regions, the stack the walk needs — is delivered to its fault endpoint |
//! | 1b | `window` | the message's bytes, copied between the two tasks' pages with one page-table walk per page |
//! | 2 | (fault server, ring 3) | walks the stack to the scope's frame, plans the releases from the task's recovery page (`fault-server/`) |
//! | 3 | `supervise`  | `TASK_CTL`: the server's answer — one batched `RECOVER` (releases, then rollback, restart or stop, atomically), or the single operations |
//! | 4 | `checkpoint` | scopes: open, commit, roll back the registers |
//! | 5 | `versions`   | scopes' memory: copy-on-write page versions, rollback by remapping |
//! | 6 | `restart`    | the last resort: a fresh start from the image (also of the fault server itself) |
//!
//! IPC proper (endpoints, notifications, futexes) lives in `crate::ipc`; this
//! module only uses its message delivery and its `abandon`.

pub mod checkpoint;
pub mod fault;
pub mod restart;
pub mod supervise;
pub mod versions;
pub mod window;
