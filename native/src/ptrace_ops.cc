// ptrace requests, waits and syscall injection, run on a tracer's own thread.
// Man pages: ptrace(2), waitpid(2), proc(5) (/proc/<tid>/mem, /proc/<tid>/status),
// signal(7), sigaction(2), tgkill(2), rt_tgsigqueueinfo(2), cpuid (Intel SDM
// vol. 1 §13, leaf 0xD).
#include "ptrace_ops.h"

#include <cpuid.h>
#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace lazyrestore::ptrace_ops {

static_assert(sizeof(user_regs_struct) == 27 * 8, "user_regs_struct must match USER_REGS_SIZE");

namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

[[noreturn]] void Fail(int err, const char* syscall, std::string detail) {
  throw PtraceFailure{err, syscall, std::move(detail)};
}

std::string Req(const char* request, pid_t tid) {
  return std::string(request) + " tid " + std::to_string(tid);
}

// glibc's ptrace() returns the peeked word for PEEK requests, so -1 is only a
// failure when errno was set.
long Ptrace(__ptrace_request req, const char* name, pid_t tid, void* addr, void* data) {
  errno = 0;
  long r = ptrace(req, tid, addr, data);
  if (r == -1 && errno != 0) Fail(errno, "ptrace", Req(name, tid));
  return r;
}

void* Ul(uint64_t v) { return reinterpret_cast<void*>(static_cast<uintptr_t>(v)); }

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// --- /proc/<tid>/status ----------------------------------------------------

struct TaskStatus {
  pid_t tgid = 0;
  uint64_t sig_ign = 0;
};

std::optional<TaskStatus> ReadStatus(pid_t tid) {
  std::string path = "/proc/" + std::to_string(tid) + "/status";
  FILE* f = std::fopen(path.c_str(), "re");
  if (!f) return std::nullopt;
  TaskStatus st;
  char line[256];
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, "Tgid:", 5) == 0) st.tgid = std::atoi(line + 5);
    if (std::strncmp(line, "SigIgn:", 7) == 0) st.sig_ign = std::strtoull(line + 7, nullptr, 16);
  }
  std::fclose(f);
  return st;
}

// Whether the task is gone or a zombie. A thread-group leader that exited
// while other threads it had are traced zombies is not reported by waitpid
// until those are reaped, so an injection watches for this as well.
bool IsDead(pid_t tid) {
  std::string path = "/proc/" + std::to_string(tid) + "/stat";
  FILE* f = std::fopen(path.c_str(), "re");
  if (!f) return true;
  char buf[512];
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* paren = std::strrchr(buf, ')');  // the command name may contain anything
  return paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

// --- waiting ---------------------------------------------------------------

WaitResult Decode(int status) {
  WaitResult r{WaitResult::Kind::Stopped};
  if (WIFEXITED(status)) {
    r.kind = WaitResult::Kind::Exited;
    r.status = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    r.kind = WaitResult::Kind::Signaled;
    r.signal = WTERMSIG(status);
    r.core_dumped = WCOREDUMP(status);
  } else {
    r.signal = WSTOPSIG(status) & 0xff;
    r.event = (status >> 16) & 0xff;  // PTRACE_EVENT_*
  }
  return r;
}

// One non-blocking look: waitpid for this tid only (never -1, which would
// reap children of Node's own), consuming the stop or reaping the exit.
std::optional<WaitResult> TryWait(pid_t tid) {
  int status = 0;
  for (;;) {
    pid_t r = waitpid(tid, &status, __WALL | WNOHANG);
    if (r == tid) return Decode(status);
    if (r == 0) return std::nullopt;
    if (errno != EINTR) Fail(errno, "waitpid", "tid " + std::to_string(tid));
  }
}

// Stops are not signalled on any fd (a pidfd polls readable on exit only),
// so waits poll: yield for the first rounds, where injected syscalls finish,
// then sleep with a growing interval so an idle wait costs little.
microseconds Backoff(unsigned round, steady_clock::duration waited) {
  constexpr unsigned kYieldRounds = 64;
  if (round < kYieldRounds) return microseconds(0);
  microseconds cap = waited < std::chrono::seconds(1) ? microseconds(1000) : microseconds(10000);
  unsigned shift = std::min(round - kYieldRounds, 10u);
  return std::min(microseconds(20 << shift), cap);
}

enum class PollEnd { Ready, TimedOut, Cancelled, Dead };

// `watch_death`: also end (Dead) when the task turns into a zombie that
// waitpid cannot report yet (see IsDead); checked only once polls sleep.
PollEnd Poll(pid_t tid, int timeout_ms, const Pause& pause, bool cancellable, bool watch_death,
             WaitResult* out) {
  auto start = steady_clock::now();
  for (unsigned round = 0;; round++) {
    if (std::optional<WaitResult> r = TryWait(tid)) {
      *out = *r;
      return PollEnd::Ready;
    }
    microseconds nap = Backoff(round, steady_clock::now() - start);
    if (watch_death && nap.count() > 0 && IsDead(tid)) return PollEnd::Dead;
    auto waited = steady_clock::now() - start;
    if (timeout_ms > 0 && waited >= milliseconds(timeout_ms)) return PollEnd::TimedOut;
    if (!pause(nap, cancellable)) return PollEnd::Cancelled;
  }
}

// --- registers and signal mask ---------------------------------------------

user_regs_struct GetRegsRaw(pid_t tid) {
  user_regs_struct regs;
  iovec iov{&regs, sizeof regs};
  Ptrace(PTRACE_GETREGSET, "PTRACE_GETREGSET NT_PRSTATUS", tid, Ul(NT_PRSTATUS), &iov);
  if (iov.iov_len != sizeof regs)
    Fail(EIO, "ptrace", Req("PTRACE_GETREGSET NT_PRSTATUS (short)", tid));
  return regs;
}

void SetRegsRaw(pid_t tid, const user_regs_struct& regs) {
  iovec iov{const_cast<user_regs_struct*>(&regs), sizeof regs};
  Ptrace(PTRACE_SETREGSET, "PTRACE_SETREGSET NT_PRSTATUS", tid, Ul(NT_PRSTATUS), &iov);
}

uint64_t GetSigmaskRaw(pid_t tid) {
  uint64_t mask = 0;
  Ptrace(PTRACE_GETSIGMASK, "PTRACE_GETSIGMASK", tid, Ul(sizeof mask), &mask);
  return mask;
}

// Beware: the kernel also clears the tracee's TIF_RESTORE_SIGMASK here, so a
// task stopped inside sigsuspend/ppoll/pselect loses its saved mask.
void SetSigmaskRaw(pid_t tid, uint64_t mask) {
  Ptrace(PTRACE_SETSIGMASK, "PTRACE_SETSIGMASK", tid, Ul(sizeof mask), &mask);
}

// The XSAVE area the kernel exposes is at most CPUID.(EAX=0xD,ECX=0):ECX
// bytes (all features the CPU supports); asking for a little more lets one
// call both fetch the area and prove it was not truncated.
size_t XstateBufferSize() {
  static const size_t size = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    size_t max = __get_cpuid_count(0xd, 0, &a, &b, &c, &d) ? c : 0;
    return (std::max<size_t>(max, 4096) + 4096 + 7) & ~size_t{7};
  }();
  return size;
}

// --- syscall injection -----------------------------------------------------

constexpr uint8_t kSyscallInt3[3] = {0x0f, 0x05, 0xcc};
constexpr uint64_t kSigtrapBit = 1ULL << (SIGTRAP - 1);

bool IsRestartCode(uint64_t rax) {
  int64_t v = static_cast<int64_t>(rax);
  return v == -512 || v == -513 || v == -514 || v == -516;  // ERESTARTSYS..ERESTART_RESTARTBLOCK
}

// Syscalls that swap in a temporary signal mask and rely on
// TIF_RESTORE_SIGMASK to put the old one back.
bool SwapsSigmask(uint64_t nr) {
  switch (nr) {
    case SYS_rt_sigsuspend:
    case SYS_pselect6:
    case SYS_ppoll:
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
    case SYS_io_pgetevents:
      return true;
    default:
      return false;
  }
}

struct Injection {
  pid_t tid;
  pid_t tgid;
  long nr;
  user_regs_struct saved;
  uint64_t addr;                    // where `syscall; int3` sits
  std::optional<long> borrowed;     // original word at addr when we patched it
  bool regs_changed = false;        // saved must be put back
  std::optional<uint64_t> mask;     // mask to put back when SIGTRAP had to be unblocked
  std::vector<siginfo_t> deferred;  // signals that arrived meanwhile, re-sent afterwards
};

long PeekText(pid_t tid, uint64_t addr) {
  return Ptrace(PTRACE_PEEKTEXT, "PTRACE_PEEKTEXT", tid, Ul(addr), nullptr);
}

void PokeText(pid_t tid, uint64_t addr, long word) {
  Ptrace(PTRACE_POKETEXT, "PTRACE_POKETEXT", tid, Ul(addr), reinterpret_cast<void*>(word));
}

// The int3 trap is raised with force_sig(SIGTRAP), which resets the handler
// to SIG_DFL when SIGTRAP is ignored or blocked (and unblocks it). An ignored
// SIGTRAP is refused; a blocked one is unblocked for the injection with
// PTRACE_SETSIGMASK and blocked again after, which is exact unless the task is
// stopped inside a mask-swapping syscall (then refused as well).
void GuardSigtrap(Injection& inj) {
  std::string who = "tracerSyscall tid " + std::to_string(inj.tid) + ": ";
  uint64_t mask = GetSigmaskRaw(inj.tid);
  if (!(mask & kSigtrapBit)) return;
  if (SwapsSigmask(inj.saved.orig_rax)) {
    Fail(ENOTSUP, "ptrace",
         who + "SIGTRAP is blocked inside syscall " + std::to_string(inj.saved.orig_rax) +
             ", whose saved signal mask PTRACE_SETSIGMASK would discard");
  }
  SetSigmaskRaw(inj.tid, mask & ~kSigtrapBit);
  inj.mask = mask;
}

void Vet(Injection& inj, VettedTasks& vetted) {
  if (auto it = vetted.find(inj.tid); it != vetted.end()) {
    inj.tgid = it->second;
    return;
  }
  std::string who = "tracerSyscall tid " + std::to_string(inj.tid) + ": ";
  std::optional<TaskStatus> st = ReadStatus(inj.tid);
  if (!st) Fail(ESRCH, "ptrace", who + "no /proc entry");
  if (st->sig_ign & kSigtrapBit)
    Fail(ENOTSUP, "ptrace", who + "SIGTRAP is ignored; the int3 trap would reset it to SIG_DFL");
  inj.tgid = st->tgid;
  vetted[inj.tid] = st->tgid;
}

// Syscalls after which the dispositions Vet saw may differ.
bool ChangesDispositions(long nr) {
  return nr == SYS_rt_sigaction || nr == SYS_execve || nr == SYS_execveat;
}

void Prepare(Injection& inj, std::optional<uint64_t> gadget, VettedTasks& vetted) {
  Vet(inj, vetted);
  inj.saved = GetRegsRaw(inj.tid);
  inj.addr = gadget ? *gadget : inj.saved.rip;
  long word = PeekText(inj.tid, inj.addr);
  if (gadget) {
    if (std::memcmp(&word, kSyscallInt3, sizeof kSyscallInt3) != 0) {
      Fail(EINVAL, "ptrace",
           "tracerSyscall tid " + std::to_string(inj.tid) + ": no `syscall; int3` at gadget " +
               Hex(inj.addr));
    }
  } else {
    long patched = word;
    std::memcpy(&patched, kSyscallInt3, sizeof kSyscallInt3);
    PokeText(inj.tid, inj.addr, patched);
    inj.borrowed = word;
  }
  GuardSigtrap(inj);
}

void Start(Injection& inj, const std::vector<uint64_t>& args) {
  user_regs_struct regs = inj.saved;
  regs.rax = static_cast<uint64_t>(inj.nr);
  unsigned long long* slots[6] = {&regs.rdi, &regs.rsi, &regs.rdx, &regs.r10, &regs.r8, &regs.r9};
  for (size_t i = 0; i < args.size(); i++) *slots[i] = args[i];
  // orig_rax = -1: when the stop interrupted a syscall, the kernel must not
  // apply its restart logic to our registers on the way out of the stop.
  regs.orig_rax = ~0ULL;
  regs.rip = inj.addr;
  inj.regs_changed = true;
  SetRegsRaw(inj.tid, regs);
  Cont(inj.tid, 0);
}

siginfo_t GetSiginfo(pid_t tid) {
  siginfo_t si;
  Ptrace(PTRACE_GETSIGINFO, "PTRACE_GETSIGINFO", tid, nullptr, &si);
  return si;
}

[[noreturn]] void FailExited(const Injection& inj) {
  Fail(ESRCH, "ptrace",
       "tracerSyscall tid " + std::to_string(inj.tid) + ": the tracee exited during syscall " +
           std::to_string(inj.nr));
}

// A fault raised by the injected instructions themselves: resuming would
// only repeat it.
bool IsFaultIn(const Injection& inj, const siginfo_t& si, const user_regs_struct& now) {
  bool fault = si.si_signo == SIGSEGV || si.si_signo == SIGBUS || si.si_signo == SIGILL ||
               si.si_signo == SIGFPE;
  return fault && si.si_code > 0 && now.rip >= inj.addr && now.rip < inj.addr + 3;
}

// At addr + 2 the syscall has returned and only the int3 could not be
// fetched: the syscall unmapped (or protected) its own code, as the final
// munmap of a gadget does. Its result is in rax and the fault is ours, so it
// is not re-sent. Anywhere else the syscall never ran.
int64_t FaultResult(const Injection& inj, const siginfo_t& si, const user_regs_struct& now) {
  if (now.rip == inj.addr + 2) return static_cast<int64_t>(now.rax);
  Fail(EFAULT, "ptrace",
       "tracerSyscall tid " + std::to_string(inj.tid) + ": signal " + std::to_string(si.si_signo) +
           " at " + Hex(now.rip) + " before syscall " + std::to_string(inj.nr) + " ran");
}

// Resumes the tracee until the int3 after the syscall traps. Other stops are
// passed through: signal-delivery-stops are suppressed and their siginfo kept
// for Restore to re-send; PTRACE_EVENT_* stops (clone, fork, a group-stop)
// are continued. When the tracer closes meanwhile, the tracee is interrupted
// (PTRACE_INTERRUPT also breaks a blocking syscall) so the close cannot hang.
int64_t RunToTrap(Injection& inj, const Pause& pause) {
  bool interrupted = false;
  for (;;) {
    WaitResult w;
    PollEnd end = Poll(inj.tid, 0, pause, !interrupted, true, &w);
    if (end == PollEnd::Dead) FailExited(inj);
    if (end == PollEnd::Cancelled) {
      Interrupt(inj.tid);
      interrupted = true;
      continue;
    }
    if (w.kind != WaitResult::Kind::Stopped || w.event == PTRACE_EVENT_EXIT) FailExited(inj);
    user_regs_struct now = GetRegsRaw(inj.tid);
    if (w.event == 0 && w.signal == SIGTRAP && now.rip == inj.addr + 3)
      return static_cast<int64_t>(now.rax);
    if (interrupted && w.event == PTRACE_EVENT_STOP && now.rip != inj.addr + 3) {
      if (now.rip == inj.addr + 2 && !IsRestartCode(now.rax)) return static_cast<int64_t>(now.rax);
      Fail(ECANCELED, "ptrace",
           "tracerSyscall tid " + std::to_string(inj.tid) + ": syscall " + std::to_string(inj.nr) +
               " interrupted because the tracer is closing");
    }
    if (w.event == 0) {
      siginfo_t si = GetSiginfo(inj.tid);
      if (IsFaultIn(inj, si, now)) return FaultResult(inj, si, now);
      inj.deferred.push_back(si);
    }
    Cont(inj.tid, 0);
  }
}

// Signals that interrupted the injection go back to the thread they stopped.
// rt_tgsigqueueinfo keeps the whole siginfo but the kernel accepts it from
// another process only for si_code < 0 (sigqueue, timers, ...); for the rest
// (kill(2), kernel-generated) tgkill re-sends the signal number, and the
// receiver sees this process as the sender.
void Resend(const Injection& inj, siginfo_t si) {
  long r;
  if (si.si_code < 0 && si.si_code != SI_TKILL) {
    r = syscall(SYS_rt_tgsigqueueinfo, inj.tgid, inj.tid, si.si_signo, &si);
  } else {
    r = syscall(SYS_tgkill, inj.tgid, inj.tid, si.si_signo);
  }
  if (r != 0)
    Fail(errno, "tgkill",
         "re-sending signal " + std::to_string(si.si_signo) + " to tid " + std::to_string(inj.tid));
}

// The code goes back last: if the syscall unmapped it, that step fails but
// the registers, mask and signals are already right.
void Restore(const Injection& inj) {
  if (inj.regs_changed) SetRegsRaw(inj.tid, inj.saved);
  if (inj.mask) SetSigmaskRaw(inj.tid, *inj.mask);
  for (const siginfo_t& si : inj.deferred) Resend(inj, si);
  if (inj.borrowed) PokeText(inj.tid, inj.addr, *inj.borrowed);
}

}  // namespace

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

void Seize(pid_t tid, unsigned long options) {
  Ptrace(PTRACE_SEIZE, "PTRACE_SEIZE", tid, nullptr, Ul(options));
}

void Interrupt(pid_t tid) { Ptrace(PTRACE_INTERRUPT, "PTRACE_INTERRUPT", tid, nullptr, nullptr); }

void Cont(pid_t tid, int sig) {
  Ptrace(PTRACE_CONT, "PTRACE_CONT", tid, nullptr, Ul(static_cast<unsigned>(sig)));
}

void Detach(pid_t tid, int sig) {
  Ptrace(PTRACE_DETACH, "PTRACE_DETACH", tid, nullptr, Ul(static_cast<unsigned>(sig)));
}

WaitResult Wait(pid_t tid, int timeout_ms, const Pause& pause) {
  WaitResult r;
  switch (Poll(tid, timeout_ms, pause, true, false, &r)) {
    case PollEnd::Ready:
      return r;
    case PollEnd::Dead:
    case PollEnd::TimedOut:
      Fail(ETIMEDOUT, "waitpid",
           "tid " + std::to_string(tid) + ": no stop or exit within " + std::to_string(timeout_ms) +
               " ms");
    case PollEnd::Cancelled:
      break;
  }
  Fail(ECANCELED, "waitpid", "tid " + std::to_string(tid) + ": the tracer was closed");
}

std::vector<uint8_t> GetRegs(pid_t tid) {
  user_regs_struct regs = GetRegsRaw(tid);
  const uint8_t* p = reinterpret_cast<const uint8_t*>(&regs);
  return std::vector<uint8_t>(p, p + sizeof regs);
}

void SetRegs(pid_t tid, const std::vector<uint8_t>& bytes) {
  user_regs_struct regs;
  if (bytes.size() != sizeof regs)
    Fail(EINVAL, "ptrace", Req("PTRACE_SETREGSET NT_PRSTATUS (needs 216 bytes)", tid));
  std::memcpy(&regs, bytes.data(), sizeof regs);
  SetRegsRaw(tid, regs);
}

std::vector<uint8_t> GetXstate(pid_t tid) {
  std::vector<uint8_t> buf(XstateBufferSize());
  for (;;) {
    iovec iov{buf.data(), buf.size()};
    Ptrace(PTRACE_GETREGSET, "PTRACE_GETREGSET NT_X86_XSTATE", tid, Ul(NT_X86_XSTATE), &iov);
    if (iov.iov_len < buf.size() || buf.size() >= (1u << 20)) {
      buf.resize(iov.iov_len);
      return buf;
    }
    buf.resize(buf.size() * 2);  // a full buffer may have been truncated
  }
}

void SetXstate(pid_t tid, const std::vector<uint8_t>& xstate) {
  size_t expected = GetXstate(tid).size();
  if (xstate.size() != expected) {
    Fail(EINVAL, "ptrace",
         Req("PTRACE_SETREGSET NT_X86_XSTATE", tid) + ": " + std::to_string(xstate.size()) +
             " bytes given, the kernel's XSAVE area is " + std::to_string(expected) + " bytes");
  }
  iovec iov{const_cast<uint8_t*>(xstate.data()), xstate.size()};
  Ptrace(PTRACE_SETREGSET, "PTRACE_SETREGSET NT_X86_XSTATE", tid, Ul(NT_X86_XSTATE), &iov);
}

std::vector<uint8_t> GetSigmask(pid_t tid) {
  uint64_t mask = GetSigmaskRaw(tid);
  const uint8_t* p = reinterpret_cast<const uint8_t*>(&mask);
  return std::vector<uint8_t>(p, p + sizeof mask);
}

void SetSigmask(pid_t tid, const std::vector<uint8_t>& bytes) {
  uint64_t mask;
  if (bytes.size() != sizeof mask)
    Fail(EINVAL, "ptrace", Req("PTRACE_SETSIGMASK (needs 8 bytes)", tid));
  std::memcpy(&mask, bytes.data(), sizeof mask);
  SetSigmaskRaw(tid, mask);
}

// /proc/<tid>/mem writes with FOLL_FORCE, so read-only mappings of the tracee
// can be read and written (private pages get their own copy).
namespace {
template <typename Io>
void MemTransfer(pid_t tid, int flags, const char* syscall, uint64_t addr, size_t len, Io io) {
  std::string path = "/proc/" + std::to_string(tid) + "/mem";
  Fd fd(open(path.c_str(), flags | O_CLOEXEC));
  if (fd.get() < 0) Fail(errno, "open", path);
  size_t done = 0;
  while (done < len) {
    ssize_t n = io(fd.get(), done, static_cast<off_t>(addr + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Fail(n < 0 ? errno : EIO, syscall,
           path + " at " + Hex(addr + done) + " (" + std::to_string(len - done) + " of " +
               std::to_string(len) + " bytes left)");
    }
    done += static_cast<size_t>(n);
  }
}
}  // namespace

std::vector<uint8_t> ReadMemory(pid_t tid, uint64_t addr, size_t len) {
  std::vector<uint8_t> buf(len);
  MemTransfer(tid, O_RDONLY, "pread", addr, len, [&](int fd, size_t done, off_t off) {
    return pread(fd, buf.data() + done, len - done, off);
  });
  return buf;
}

void WriteMemory(pid_t tid, uint64_t addr, const std::vector<uint8_t>& data) {
  size_t len = data.size();
  MemTransfer(tid, O_WRONLY, "pwrite", addr, len, [&](int fd, size_t done, off_t off) {
    return pwrite(fd, data.data() + done, len - done, off);
  });
}

int64_t InjectSyscall(pid_t tid, long nr, const std::vector<uint64_t>& args,
                      std::optional<uint64_t> gadget, const Pause& pause, VettedTasks& vetted) {
  if (args.size() > 6) Fail(EINVAL, "ptrace", "tracerSyscall: at most 6 arguments");
  Injection inj{tid, 0, nr, {}, 0, std::nullopt, false, std::nullopt, {}};
  int64_t result;
  try {
    if (ChangesDispositions(nr)) vetted.clear();
    Prepare(inj, gadget, vetted);
    Start(inj, args);
    result = RunToTrap(inj, pause);
  } catch (const PtraceFailure&) {
    // Best effort: put back whatever was changed; the tracee may be gone.
    try {
      Restore(inj);
    } catch (const PtraceFailure&) {
    }
    throw;
  }
  Restore(inj);
  if (ChangesDispositions(nr)) vetted.clear();
  return result;
}

}  // namespace lazyrestore::ptrace_ops
