// The supervising process that makes `kill -9 uprobe` harmless.
//
// A ptrace tracer that dies while a thread sits in a breakpoint stop leaves
// that thread to be killed by the SIGTRAP it was stopped for (the kernel
// detaches it with the signal still pending), and leaves int3 bytes that
// the next hit turns into a crash. So the process the user sees and signals
// is only a supervisor: the tracing happens in its child, which the kernel
// sends SIGTERM when the supervisor dies (PR_SET_PDEATHSIG) and which then
// detaches cleanly like on Ctrl-C. The tracer runs in a process group of
// its own so that signals for the whole job (a terminal's Ctrl-C, `timeout
// -s KILL`, `kill -9 -PGID`) reach only the supervisor and, through it, the
// tracer as a signal it can handle. The launched command stays in the
// user's job: see TraceRequest::process_group.
#pragma once

namespace uprobe::cli {

// Forks. Returns in the child (the tracer), which gets SIGTERM if the
// supervisor dies. The supervisor forwards SIGINT, SIGTERM, SIGHUP and
// SIGQUIT to the child, waits for it, and exits with its status; it never
// returns. If fork fails, returns in the calling process unsupervised.
void run_supervised();

}  // namespace uprobe::cli
