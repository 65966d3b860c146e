// Mechanisms of `lazyrestore restore`: starting the restorer helper with a
// chosen pid under our tracer thread, running batches of injected syscalls in
// a restored task, the last step of a task (munmap of the gadget under
// PTRACE_SYSCALL), detaching a whole tree at once, reaping a restored root off
// the JS thread, and pipes for restored fds.
// Man pages: clone3(2) (set_tid), vfork(2), execve(2), ptrace(2)
// (PTRACE_TRACEME, PTRACE_SETOPTIONS, PTRACE_SYSCALL, PTRACE_DETACH,
// PTRACE_SETSIGMASK), pthread_sigmask(3), waitid(2) (P_PIDFD), pidfd_open(2),
// poll(2), eventfd(2), pipe(2), fcntl(2) (F_SETPIPE_SZ), munmap(2).
#include <elf.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <napi.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "errors.h"
#include "facilities.h"
#include "ptrace_ops.h"
#include "ptrace_tracer.h"

// clone3 with CLONE_VM | CLONE_VFORK, written in assembly because the child
// shares our memory and runs on a stack of its own: it must not return into
// C++ frames. The child does PTRACE_TRACEME and execve(path, argv, envp)
// with raw syscalls (exit_group(127) if execve fails); the parent gets the
// raw clone3 result (pid, or -errno) once the child has exec'd or exited.
extern "C" long lr_clone3_exec(void* args, size_t size, const char* path, char* const* argv,
                               char* const* envp);

asm(R"(
	.text
	.globl	lr_clone3_exec
	.hidden	lr_clone3_exec
	.type	lr_clone3_exec, @function
lr_clone3_exec:
	push	%r12
	push	%r13
	push	%r14
	mov	%rdx, %r12
	mov	%rcx, %r13
	mov	%r8, %r14
	mov	$435, %eax
	syscall
	test	%rax, %rax
	jz	1f
	pop	%r14
	pop	%r13
	pop	%r12
	ret
1:
	mov	$101, %eax
	xor	%edi, %edi
	xor	%esi, %esi
	xor	%edx, %edx
	xor	%r10d, %r10d
	syscall
	mov	$59, %eax
	mov	%r12, %rdi
	mov	%r13, %rsi
	mov	%r14, %rdx
	syscall
	mov	$231, %eax
	mov	$127, %edi
	syscall
	hlt
	.size	lr_clone3_exec, . - lr_clone3_exec
)");

namespace lazyrestore {
namespace {

using ptrace_ops::PtraceFailure;
using ptrace_ops::WaitResult;
using std::chrono::microseconds;

// PTRACE_O_* for every restored task: a tracer that dies kills the
// half-restored tree; injected clone3 calls auto-attach their children;
// syscall stops are told apart from SIGTRAP.
constexpr unsigned long kRestoreOptions =
    PTRACE_O_EXITKILL | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACESYSGOOD;
constexpr int kSpawnTimeoutMs = 10000;
// Words of one encoded call of restoreInject: nr, flags, 6 args, 6 refs, 2 spare.
constexpr size_t kCallWords = 16;
constexpr uint64_t kAllowFail = 1;

[[noreturn]] void Fail(int err, const char* syscall, std::string detail) {
  throw PtraceFailure{err, syscall, std::move(detail)};
}

// Restore requests run on the tracer thread through EnqueueTracerWork, which
// does not expose the tracer's cancellable pause: waits here sleep plainly.
// They only wait for tasks we just resumed into a short syscall, or for the
// exec of the helper (bounded by kSpawnTimeoutMs).
bool PlainPause(microseconds d, bool) {
  if (d.count() == 0) {
    sched_yield();
  } else {
    std::this_thread::sleep_for(d);
  }
  return true;
}

pid_t ToPid(const Napi::Value& v, const char* what) {
  uint64_t n = ToU64(v, what);
  if (n == 0 || n > 0x3fffffff)
    throw Napi::RangeError::New(v.Env(), std::string(what) + " must be a pid");
  return static_cast<pid_t>(n);
}

void KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  int status;
  while (waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {
  }
}

// --- restoreSpawn ------------------------------------------------------------

// The child of clone3 inherits our signal mask; everything but SIGTRAP stays
// blocked until it has exec'd (the exec SIGTRAP must stop it), so none of
// Node's handlers can run in the child while it shares our memory. The
// helper's mask is cleared once it is stopped.
long Clone3Exec(const std::string& path, pid_t pid) {
  uint64_t set_tid = static_cast<uint64_t>(pid);
  // The child runs on it only until execve and pushes nothing; our frame outlives it (vfork).
  alignas(16) uint8_t child_stack[1024];
  clone_args args{};
  args.flags = CLONE_VM | CLONE_VFORK;
  args.exit_signal = SIGCHLD;
  args.stack = reinterpret_cast<uint64_t>(child_stack);
  args.stack_size = sizeof child_stack;
  args.set_tid = reinterpret_cast<uint64_t>(&set_tid);
  args.set_tid_size = 1;
  const char* argv[] = {"lazyrestore-restorer", nullptr};
  const char* envp[] = {nullptr};
  sigset_t all, old;
  sigfillset(&all);
  sigdelset(&all, SIGTRAP);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  long r = lr_clone3_exec(&args, sizeof args, path.c_str(), const_cast<char* const*>(argv),
                          const_cast<char* const*>(envp));
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return r;
}

void PrepareHelper(pid_t pid, const std::string& path) {
  WaitResult w = ptrace_ops::Wait(pid, kSpawnTimeoutMs, PlainPause);
  if (w.kind != WaitResult::Kind::Stopped) {
    Fail(ENOEXEC, "execve",
         "the restorer helper " + path + " did not start in pid " + std::to_string(pid) +
             (w.kind == WaitResult::Kind::Exited ? " (exit status " + std::to_string(w.status) + ")"
                                                 : " (signal " + std::to_string(w.signal) + ")"));
  }
  if (w.signal != SIGTRAP) {
    Fail(EPROTO, "ptrace",
         "pid " + std::to_string(pid) + ": first stop of the restorer was signal " +
             std::to_string(w.signal) + ", not the exec SIGTRAP");
  }
  if (ptrace(PTRACE_SETOPTIONS, pid, nullptr, reinterpret_cast<void*>(kRestoreOptions)) != 0)
    Fail(errno, "ptrace", "PTRACE_SETOPTIONS pid " + std::to_string(pid));
  uint64_t none = 0;
  if (ptrace(PTRACE_SETSIGMASK, pid, reinterpret_cast<void*>(sizeof none), &none) != 0)
    Fail(errno, "ptrace", "PTRACE_SETSIGMASK pid " + std::to_string(pid));
}

int64_t Spawn(const std::string& path, pid_t pid) {
  long r = Clone3Exec(path, pid);
  if (r < 0) Fail(static_cast<int>(-r), "clone3", "set_tid " + std::to_string(pid));
  try {
    PrepareHelper(pid, path);
  } catch (const PtraceFailure&) {
    KillAndReap(pid);
    throw;
  }
  return r;
}

Napi::Value RestoreSpawn(const Napi::CallbackInfo& info) {
  return EnqueueTracerWork(info, [&]() -> TracerWork {
    if (!info[1].IsString()) throw Napi::TypeError::New(info.Env(), "helperPath must be a string");
    std::string path = info[1].As<Napi::String>().Utf8Value();
    pid_t pid = ToPid(info[2], "pid");
    return [path, pid]() -> TracerValue { return Spawn(path, pid); };
  });
}

// --- restoreInject -------------------------------------------------------------

struct Call {
  long nr;
  bool allow_fail;
  uint64_t args[6];
  int64_t refs[6];
};

bool IsErrno(int64_t r) { return r < 0 && r >= -4095; }

std::vector<Call> ParseCalls(const Napi::Value& v) {
  Napi::Env env = v.Env();
  if (!v.IsBuffer()) throw Napi::TypeError::New(env, "calls must be a Buffer");
  auto buf = v.As<Napi::Buffer<uint8_t>>();
  size_t stride = kCallWords * 8;
  if (buf.Length() % stride != 0)
    throw Napi::RangeError::New(env, "calls must hold whole calls of 128 bytes");
  std::vector<Call> calls(buf.Length() / stride);
  for (size_t i = 0; i < calls.size(); i++) {
    int64_t w[kCallWords];
    std::memcpy(w, buf.Data() + i * stride, stride);
    Call& c = calls[i];
    c.nr = static_cast<long>(w[0]);
    c.allow_fail = (w[1] & kAllowFail) != 0;
    for (int a = 0; a < 6; a++) {
      c.args[a] = static_cast<uint64_t>(w[2 + a]);
      c.refs[a] = w[8 + a];
      if (c.refs[a] >= static_cast<int64_t>(i) || c.refs[a] < -1)
        throw Napi::RangeError::New(env, "call " + std::to_string(i) + " refers to a later call");
    }
  }
  return calls;
}

// Runs the calls in order through the gadget; argument a of a call may add
// the result of an earlier call (refs). Stops after the first call that
// fails unless it allows failure. Results are returned as 64-bit words, one
// per call that ran.
std::vector<uint8_t> RunBatch(pid_t tid, uint64_t gadget, const std::vector<Call>& calls) {
  ptrace_ops::VettedTasks vetted;
  std::vector<int64_t> results;
  results.reserve(calls.size());
  for (const Call& c : calls) {
    std::vector<uint64_t> args(6);
    for (int a = 0; a < 6; a++) {
      args[a] = c.args[a];
      if (c.refs[a] >= 0) args[a] += static_cast<uint64_t>(results[c.refs[a]]);
    }
    int64_t r = ptrace_ops::InjectSyscall(tid, c.nr, args, gadget, PlainPause, vetted);
    results.push_back(r);
    if (IsErrno(r) && !c.allow_fail) break;
  }
  const uint8_t* p = reinterpret_cast<const uint8_t*>(results.data());
  return std::vector<uint8_t>(p, p + results.size() * sizeof(int64_t));
}

Napi::Value RestoreInject(const Napi::CallbackInfo& info) {
  return EnqueueTracerWork(info, [&]() -> TracerWork {
    pid_t tid = ToPid(info[1], "tid");
    uint64_t gadget = ToU64(info[2], "gadget");
    std::vector<Call> calls = ParseCalls(info[3]);
    return [tid, gadget, calls]() -> TracerValue { return RunBatch(tid, gadget, calls); };
  });
}

// --- restoreUnmapGadget ----------------------------------------------------------

user_regs_struct GetRegs(pid_t tid) {
  user_regs_struct regs;
  iovec iov{&regs, sizeof regs};
  if (ptrace(PTRACE_GETREGSET, tid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) != 0)
    Fail(errno, "ptrace", "PTRACE_GETREGSET tid " + std::to_string(tid));
  return regs;
}

void SetRegs(pid_t tid, const user_regs_struct& regs) {
  iovec iov{const_cast<user_regs_struct*>(&regs), sizeof regs};
  if (ptrace(PTRACE_SETREGSET, tid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) != 0)
    Fail(errno, "ptrace", "PTRACE_SETREGSET tid " + std::to_string(tid));
}

// Resumes to the next syscall stop. Every signal but SIGKILL is blocked in
// the task at this point (the restore sets the dumped mask afterwards), so
// any other stop is a protocol error.
void NextSyscallStop(pid_t tid, const char* which) {
  if (ptrace(PTRACE_SYSCALL, tid, nullptr, nullptr) != 0)
    Fail(errno, "ptrace", "PTRACE_SYSCALL tid " + std::to_string(tid));
  WaitResult w = ptrace_ops::Wait(tid, 0, PlainPause);
  if (w.kind != WaitResult::Kind::Stopped)
    Fail(ESRCH, "ptrace", "tid " + std::to_string(tid) + " exited before its " + which);
  if (w.signal != (SIGTRAP | 0x80) || w.event != 0) {
    Fail(EPROTO, "ptrace",
         "tid " + std::to_string(tid) + ": stop with signal " + std::to_string(w.signal) +
             " event " + std::to_string(w.event) + " instead of the " + which);
  }
}

// munmap of the gadget must not return to the unmapped int3: it runs under
// PTRACE_SYSCALL and the task is left in its syscall-exit-stop, where the
// caller sets the dumped registers before detaching.
void UnmapGadget(pid_t tid, uint64_t gadget, uint64_t start, uint64_t len) {
  user_regs_struct regs = GetRegs(tid);
  regs.rip = gadget;
  regs.rax = SYS_munmap;
  regs.orig_rax = ~0ULL;
  regs.rdi = start;
  regs.rsi = len;
  SetRegs(tid, regs);
  NextSyscallStop(tid, "munmap syscall-enter-stop");
  NextSyscallStop(tid, "munmap syscall-exit-stop");
  int64_t r = static_cast<int64_t>(GetRegs(tid).rax);
  if (IsErrno(r))
    Fail(static_cast<int>(-r), "munmap", "of the gadget in tid " + std::to_string(tid));
}

Napi::Value RestoreUnmapGadget(const Napi::CallbackInfo& info) {
  return EnqueueTracerWork(info, [&]() -> TracerWork {
    pid_t tid = ToPid(info[1], "tid");
    uint64_t gadget = ToU64(info[2], "gadget");
    uint64_t start = ToU64(info[3], "start");
    uint64_t len = ToU64(info[4], "len");
    return [tid, gadget, start, len]() -> TracerValue {
      UnmapGadget(tid, gadget, start, len);
      return {};
    };
  });
}

// --- restoreDetachAll --------------------------------------------------------------

// One request for the whole tree, so every task resumes within microseconds
// of the others. A failure does not stop the loop: every task that can be
// let go is let go, and the first error is reported.
void DetachAll(const std::vector<pid_t>& tids, const std::vector<int>& signals) {
  std::optional<PtraceFailure> first;
  for (size_t i = 0; i < tids.size(); i++) {
    if (ptrace(PTRACE_DETACH, tids[i], nullptr,
               reinterpret_cast<void*>(static_cast<long>(signals[i]))) != 0 &&
        !first) {
      first = PtraceFailure{errno, "ptrace", "PTRACE_DETACH tid " + std::to_string(tids[i])};
    }
  }
  if (first) throw *first;
}

Napi::Value RestoreDetachAll(const Napi::CallbackInfo& info) {
  return EnqueueTracerWork(info, [&]() -> TracerWork {
    Napi::Env env = info.Env();
    if (!info[1].IsArray() || !info[2].IsArray())
      throw Napi::TypeError::New(env, "tids and signals must be arrays");
    Napi::Array t = info[1].As<Napi::Array>();
    Napi::Array s = info[2].As<Napi::Array>();
    if (t.Length() != s.Length()) throw Napi::RangeError::New(env, "one signal per tid");
    std::vector<pid_t> tids;
    std::vector<int> signals;
    for (uint32_t i = 0; i < t.Length(); i++) {
      tids.push_back(ToPid(t.Get(i), "tid"));
      uint64_t sig = ToU64(s.Get(i), "signal");
      if (sig > 64) throw Napi::RangeError::New(env, "signal must be 0..64");
      signals.push_back(static_cast<int>(sig));
    }
    return [tids, signals]() -> TracerValue {
      DetachAll(tids, signals);
      return {};
    };
  });
}

// --- restoreReap ---------------------------------------------------------------------

// Waits for a restored root (a child of this process) to exit and reaps it,
// on a thread of its own: poll(2) on a pidfd (readable once the process has
// exited) and an eventfd that cancels the wait at environment teardown, then
// waitid(P_PIDFD). Nothing else in the process waits for this pid: libuv
// only waits for the pids it spawned.
struct Reaper;
struct ReapResult {
  int err = 0;
  siginfo_t info{};
  bool cancelled = false;
};
void ReapCallJs(Napi::Env env, Napi::Function, Reaper* reaper, ReapResult* result);
using ReapTsfn = Napi::TypedThreadSafeFunction<Reaper, ReapResult, ReapCallJs>;

struct Reaper {
  pid_t pid = 0;
  int pidfd = -1;
  int evfd = -1;
  std::thread thread;
  ReapTsfn tsfn;
  std::unique_ptr<Napi::Promise::Deferred> deferred;

  void Run() {
    auto* result = new ReapResult();
    pollfd fds[2] = {{pidfd, POLLIN, 0}, {evfd, POLLIN, 0}};
    for (;;) {
      int n = poll(fds, 2, -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        result->err = errno;
      } else if (fds[1].revents != 0) {
        result->cancelled = true;
      } else if (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &result->info,
                        WEXITED) != 0) {
        if (errno == EINTR) continue;
        result->err = errno;
      }
      break;
    }
    if (tsfn.BlockingCall(result) != napi_ok) delete result;
    tsfn.Release();
  }

  void Cancel() {
    uint64_t one = 1;
    (void)!write(evfd, &one, sizeof one);
    if (thread.joinable()) thread.join();
  }

  static void EnvCleanup(void* arg) { static_cast<Reaper*>(arg)->Cancel(); }

  // JS thread, after the thread released the TSFN.
  static void Finalize(Napi::Env env, void*, Reaper* r) {
    r->Cancel();
    napi_remove_env_cleanup_hook(env, EnvCleanup, r);
    close(r->pidfd);
    close(r->evfd);
    delete r;
  }
};

void ReapCallJs(Napi::Env env, Napi::Function, Reaper* reaper, ReapResult* raw) {
  std::unique_ptr<ReapResult> result(raw);
  if (env == nullptr || reaper == nullptr || result->cancelled || !reaper->deferred) return;
  std::unique_ptr<Napi::Promise::Deferred> d = std::move(reaper->deferred);
  if (result->err != 0) {
    d->Reject(
        SystemError(env, result->err, "waitid", "pid " + std::to_string(reaper->pid)).Value());
    return;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", reaper->pid);
  const siginfo_t& si = result->info;
  if (si.si_code == CLD_EXITED) {
    o.Set("kind", "exited");
    o.Set("status", si.si_status);
  } else {
    o.Set("kind", "signaled");
    o.Set("signal", si.si_status);
    o.Set("coreDumped", si.si_code == CLD_DUMPED);
  }
  d->Resolve(o);
}

Napi::Value RestoreReap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = ToPid(info[0], "pid");
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) ThrowSystemError(env, errno, "pidfd_open", "pid " + std::to_string(pid));
  int evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (evfd < 0) {
    int err = errno;
    close(pidfd);
    ThrowSystemError(env, err, "eventfd");
  }
  auto* r = new Reaper();
  r->pid = pid;
  r->pidfd = pidfd;
  r->evfd = evfd;
  r->deferred = std::make_unique<Napi::Promise::Deferred>(env);
  Napi::Promise promise = r->deferred->Promise();
  r->tsfn = ReapTsfn::New(env, "lazyrestore.reap", 0, 1, r, Reaper::Finalize);
  // A restored tree may outlive everything else the program waits for.
  r->tsfn.Unref(env);
  napi_add_env_cleanup_hook(env, Reaper::EnvCleanup, r);
  r->thread = std::thread([r] { r->Run(); });
  return promise;
}

// --- restorePipe ----------------------------------------------------------------------

Napi::Value RestorePipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t capacity = ToU64(info[0], "capacity");
  if (capacity > 0x7fffffff) throw Napi::RangeError::New(env, "capacity is too large");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) ThrowSystemError(env, errno, "pipe2");
  if (capacity > 0 && fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(capacity)) < 0) {
    int err = errno;
    close(fds[0]);
    close(fds[1]);
    ThrowSystemError(env, err, "fcntl", "F_SETPIPE_SZ " + std::to_string(capacity));
  }
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, fds[0]));
  out.Set(1u, Napi::Number::New(env, fds[1]));
  return out;
}

}  // namespace

void InitRestore(Napi::Env env, Napi::Object exports) {
  exports.Set("restoreSpawn", Napi::Function::New(env, RestoreSpawn, "restoreSpawn"));
  exports.Set("restoreInject", Napi::Function::New(env, RestoreInject, "restoreInject"));
  exports.Set("restoreUnmapGadget",
              Napi::Function::New(env, RestoreUnmapGadget, "restoreUnmapGadget"));
  exports.Set("restoreDetachAll", Napi::Function::New(env, RestoreDetachAll, "restoreDetachAll"));
  exports.Set("restoreReap", Napi::Function::New(env, RestoreReap, "restoreReap"));
  exports.Set("restorePipe", Napi::Function::New(env, RestorePipe, "restorePipe"));
}

}  // namespace lazyrestore
