#include "cli/supervisor.hpp"

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>

namespace uprobe::cli {
namespace {

volatile sig_atomic_t g_child = 0;

void forward(int sig) {
    if (g_child > 0) ::kill(g_child, sig);
}

}  // namespace

void run_supervised() {
    pid_t parent = ::getpid();
    // Block the forwarded signals across fork so none is lost in between.
    sigset_t forwarded, old;
    sigemptyset(&forwarded);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&forwarded, s);
    sigprocmask(SIG_BLOCK, &forwarded, &old);

    pid_t child = ::fork();
    if (child < 0) {
        sigprocmask(SIG_SETMASK, &old, nullptr);
        return;
    }
    if (child == 0) {
        // A group of its own, so that a signal for the user's job (a
        // terminal's, or `timeout -s KILL`'s) reaches the supervisor, which
        // forwards what can be handled, and never SIGKILLs the tracer.
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        // The supervisor may have died before prctl took effect.
        if (::getppid() != parent) ::raise(SIGTERM);
        ::prctl(PR_SET_NAME, "uprobe-tracer");
        sigprocmask(SIG_SETMASK, &old, nullptr);
        return;
    }

    ::setpgid(child, child);  // also here: whichever runs first wins the race
    g_child = child;
    struct sigaction sa {};
    sa.sa_handler = forward;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaction(s, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    sigprocmask(SIG_SETMASK, &old, nullptr);

    int status = 0;
    while (::waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) std::_Exit(1);
    }
    if (WIFEXITED(status)) std::_Exit(WEXITSTATUS(status));
    std::_Exit(128 + WTERMSIG(status));
}

}  // namespace uprobe::cli
