# gdb batch driver for the walker's gdb comparison (tests/gdb_compare.rs).
#
# Design note: one gdb process per program drives every stop: it sets a
# breakpoint at each chosen instruction, and at each hit writes a core with
# `gcore` and records gdb's own backtrace — pc and CFA ("frame at" of
# `info frame`) of every non-inline frame. A breakpoint is disabled after its
# hit budget, so each point is sampled a bounded number of times. Output is a
# line format the Rust test parses without a JSON dependency:
#   STOP <index> <pc>            one per stop, followed by its frames
#   F <pc> <cfa|none> <rsp|none> <name>   innermost first
#   END <gdb's unwind stop reason for the last frame>
import os
import re

import gdb

exe = os.environ["WALKER_GDB_EXE"]
outdir = os.environ["WALKER_GDB_OUT"]
points = []
with open(os.environ["WALKER_GDB_POINTS"]) as f:
    for line in f:
        addr, budget = line.split()
        points.append((int(addr, 16), int(budget)))

for cmd in [
    "set pagination off",
    "set confirm off",
    "set width 0",
    "set backtrace past-main on",
    "set backtrace past-entry on",
    "set backtrace limit 200",
    "set startup-with-shell off",
    "set disable-randomization on",
]:
    gdb.execute(cmd)
for sig in ["SIGSEGV", "SIGUSR1", "SIGPROF", "SIGALRM", "SIGPIPE"]:
    gdb.execute("handle %s nostop noprint pass" % sig, to_string=True)
gdb.execute("file %s" % exe, to_string=True)

# Stop at the first instruction to learn the load bias (static-pie Rust
# programs are loaded at a randomized-off but non-zero base): AT_ENTRY minus
# the ELF entry point. Breakpoints are then set at relocated addresses.
gdb.execute("starti", to_string=True)
auxv = gdb.execute("info auxv", to_string=True)
m = re.search(r"AT_ENTRY\s.*?(0x[0-9a-f]+)", auxv)
bias = int(m.group(1), 16) - int(os.environ["WALKER_GDB_ENTRY"], 16) if m else 0

budget = {}
bps = {}
for addr, b in points:
    addr += bias
    bp = gdb.Breakpoint("*0x%x" % addr, internal=True)
    bps[addr] = bp
    budget[addr] = b

out = open(os.path.join(outdir, "gdb.txt"), "w")
n = 0
gdb.execute("continue", to_string=True)
while True:
    inf = gdb.selected_inferior()
    if inf.pid == 0 or gdb.selected_thread() is None:
        break
    frame = gdb.newest_frame()
    pc = frame.pc()
    gdb.execute("gcore %s" % os.path.join(outdir, "core.%d" % n), to_string=True)
    out.write("STOP %d 0x%x\n" % (n, pc))
    f = frame
    last = frame
    count = 0
    while f is not None and count < 200:
        if f.type() != gdb.INLINE_FRAME:
            f.select()
            info = gdb.execute("info frame", to_string=True)
            m = re.search(r"frame at (0x[0-9a-f]+)", info)
            try:
                sp = "0x%x" % int(f.read_register("rsp"))
            except gdb.error:
                sp = "none"
            out.write("F 0x%x %s %s %s\n" % (f.pc(), m.group(1) if m else "none", sp, f.name()))
            count += 1
        last = f
        try:
            f = f.older()
        except gdb.error as e:
            out.write("END error %s\n" % str(e).replace("\n", " "))
            f = None
            last = None
            break
    if last is not None:
        out.write("END %s\n" % gdb.frame_stop_reason_string(last.unwind_stop_reason()))
    n += 1
    if pc in budget:
        budget[pc] -= 1
        if budget[pc] <= 0:
            bps[pc].enabled = False
    gdb.execute("continue", to_string=True)
out.close()
