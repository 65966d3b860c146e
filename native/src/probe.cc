// Kernel capability probes behind `lazyrestore check`: each one creates a
// throw-away child and proves that one mechanism of restore works here.
// Man pages: clone3(2) (clone_args.set_tid), pid_namespaces(7), proc(5)
// (/proc/sys/kernel/ns_last_pid, pid_max), ptrace(2) (PTRACE_SEIZE,
// PTRACE_INTERRUPT, PTRACE_EVENT_STOP), waitpid(2) (__WALL), prctl(2)
// (PR_SET_PDEATHSIG), signal-safety(7) (what a child of a multi-threaded
// process may do before it exits).
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>
#include <system_error>
#include <thread>

#include "errors.h"
#include "facilities.h"

namespace lazyrestore {
namespace {

// The children created here are copies of a multi-threaded process: another
// thread may have held a libc lock at the moment of the copy, so until they
// exit they issue raw syscalls only. Returns the kernel's result (-errno on
// failure) without touching errno.
long RawSyscall(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0) {
  long ret;
  register long r10 asm("r10") = a4;
  register long r8 asm("r8") = a5;
  asm volatile("syscall"
               : "=a"(ret)
               : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8)
               : "rcx", "r11", "memory");
  return ret;
}

// Blocks every signal in the calling thread while it lives, so a child cloned
// meanwhile starts with all signals blocked and never runs one of Node's
// handlers in its copy of the process (SIGKILL still ends it).
class BlockAllSignals {
 public:
  BlockAllSignals() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved_);
  }
  ~BlockAllSignals() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  BlockAllSignals(const BlockAllSignals&) = delete;
  BlockAllSignals& operator=(const BlockAllSignals&) = delete;

 private:
  sigset_t saved_;
};

[[noreturn]] void ChildExit() {
  for (;;) RawSyscall(SYS_exit, 0);
}

// What went wrong in a probe, carried back to the JS thread so that napi
// values are only ever made there. err == 0 with a message: not a syscall error.
struct Failure {
  int err = 0;
  const char* syscall = nullptr;
  std::string message;

  bool failed() const { return err != 0 || !message.empty(); }
  [[noreturn]] void Throw(Napi::Env env) const {
    if (err != 0) ThrowSystemError(env, err, syscall, message);
    throw Napi::Error::New(env, message);
  }
};

long ReadProcLong(const char* path, long fallback) {
  std::ifstream in(path);
  long value = fallback;
  if (!(in >> value)) return fallback;
  return value;
}

bool PidVisible(long pid) {
  // Lookups of /proc/<id> succeed for every task id (threads included), even
  // those readdir does not list.
  return access(("/proc/" + std::to_string(pid)).c_str(), F_OK) == 0;
}

// Waits for `pid` only (never another child of Node's), retrying on EINTR.
int WaitPid(pid_t pid, int* status) {
  for (;;) {
    pid_t r = waitpid(pid, status, __WALL);
    if (r == pid) return 0;
    if (r < 0 && errno != EINTR) return errno;
  }
}

// Reaps a child we created, whatever state it is in (running, stopped, traced).
void KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  int status = 0;
  while (WaitPid(pid, &status) == 0 && !WIFEXITED(status) && !WIFSIGNALED(status)) {
  }
}

// One clone3 attempt with set_tid = want. Returns the new pid or -errno.
long Clone3WithTid(pid_t want) {
  pid_t tids[1] = {want};
  struct clone_args args = {};
  args.exit_signal = SIGCHLD;
  args.set_tid = reinterpret_cast<uintptr_t>(tids);
  args.set_tid_size = 1;
  BlockAllSignals blocked;
  long pid = RawSyscall(SYS_clone3, reinterpret_cast<long>(&args), sizeof(args));
  if (pid == 0) ChildExit();
  return pid;
}

// Candidate pids: well above the last one handed out, so that ordinary forks
// racing with us are unlikely to take it, and never in the reserved low range.
long Candidate(long last, long pidMax, int attempt) {
  constexpr long kReserved = 300;
  long span = pidMax - kReserved;
  long offset = (last + 64 + attempt * 37L - kReserved) % span;
  return kReserved + (offset < 0 ? offset + span : offset);
}

Napi::Value ProbeClone3SetTid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long last = ReadProcLong("/proc/sys/kernel/ns_last_pid", 1000);
  long pidMax = ReadProcLong("/proc/sys/kernel/pid_max", 32768);
  constexpr int kAttempts = 16;
  for (int attempt = 0; attempt < kAttempts; attempt++) {
    long want = Candidate(last, pidMax, attempt);
    if (PidVisible(want)) continue;
    long pid = Clone3WithTid(static_cast<pid_t>(want));
    if (pid == -EEXIST) continue;  // taken between our look and the clone
    if (pid < 0) ThrowSystemError(env, static_cast<int>(-pid), "clone3", "with set_tid");
    int status = 0;
    WaitPid(static_cast<pid_t>(pid), &status);
    if (pid != want) {
      throw Napi::Error::New(env, "clone3 with set_tid=" + std::to_string(want) + " created pid " +
                                      std::to_string(pid) + " instead");
    }
    return Napi::Number::New(env, static_cast<double>(pid));
  }
  ThrowSystemError(env, EEXIST, "clone3",
                   "with set_tid: no free pid found in " + std::to_string(kAttempts) + " tries");
}

// Seizes and interrupts `pid`; the caller kills and reaps it.
Failure SeizeAndInterrupt(pid_t pid) {
  if (ptrace(PTRACE_SEIZE, pid, nullptr, nullptr) != 0) return {errno, "ptrace", "PTRACE_SEIZE"};
  if (ptrace(PTRACE_INTERRUPT, pid, nullptr, nullptr) != 0)
    return {errno, "ptrace", "PTRACE_INTERRUPT"};
  int status = 0;
  if (int err = WaitPid(pid, &status); err != 0) return {err, "waitpid", ""};
  if (!WIFSTOPPED(status) || (status >> 16) != PTRACE_EVENT_STOP) {
    return {0, nullptr,
            "ptrace probe: expected a PTRACE_EVENT_STOP after PTRACE_INTERRUPT, got wait status " +
                std::to_string(status)};
  }
  return {};
}

// Runs on its own thread: ptrace ties a tracee to the thread that attached it,
// and that thread must be one that ends with the probe, never the JS thread.
Failure PtraceProbeThread() {
  BlockAllSignals blocked;  // this thread is ours; its only child waits in pause()
  long pid = RawSyscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
  if (pid < 0) return {static_cast<int>(-pid), "clone", ""};
  if (pid == 0) {
    // Dies with the probe thread if Node goes away before the kill below.
    RawSyscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
    for (;;) RawSyscall(SYS_pause);
  }
  Failure failure = SeizeAndInterrupt(static_cast<pid_t>(pid));
  KillAndReap(static_cast<pid_t>(pid));
  return failure;
}

Napi::Value ProbePtrace(const Napi::CallbackInfo& info) {
  Failure failure;
  try {
    std::thread probe([&failure] { failure = PtraceProbeThread(); });
    probe.join();
  } catch (const std::system_error& e) {
    ThrowSystemError(info.Env(), e.code().value(), "pthread_create", "(ptrace probe thread)");
  }
  if (failure.failed()) failure.Throw(info.Env());
  return Napi::Boolean::New(info.Env(), true);
}

}  // namespace

void InitProbe(Napi::Env env, Napi::Object exports) {
  exports.Set("probeClone3SetTid",
              Napi::Function::New(env, ProbeClone3SetTid, "probeClone3SetTid"));
  exports.Set("probePtrace", Napi::Function::New(env, ProbePtrace, "probePtrace"));
}

}  // namespace lazyrestore
