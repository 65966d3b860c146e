// The ptrace requests a tracer thread performs, as plain C++ with no napi:
// everything here runs on the tracer's own std::thread (ptrace is per thread)
// and reports failures by throwing PtraceFailure, which ptrace.cc turns into
// a SystemError on the JS thread. See ptrace(2), waitpid(2), proc(5).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace lazyrestore::ptrace_ops {

// errno, the failing syscall and a detail naming the request and its target.
struct PtraceFailure {
  int err;
  std::string syscall;
  std::string detail;
};

struct WaitResult {
  enum class Kind { Stopped, Exited, Signaled } kind;
  int signal = 0;  // Stopped: WSTOPSIG; Signaled: the killing signal
  int event = 0;   // Stopped: PTRACE_EVENT_* (status >> 16)
  int status = 0;  // Exited: exit status
  bool core_dumped = false;
};

// How a wait sleeps between polls. Returns false (at once) when the caller's
// tracer is being closed and `cancellable` is true; otherwise sleeps up to
// `d` (a zero duration means: yield the CPU once) and returns true.
using Pause = std::function<bool(std::chrono::microseconds d, bool cancellable)>;

std::string Hex(uint64_t v);

void Seize(pid_t tid, unsigned long options);
void Interrupt(pid_t tid);
void Cont(pid_t tid, int sig);
void Detach(pid_t tid, int sig);

// Waits for the next stop or exit of `tid` (timeout_ms <= 0: no timeout).
// Throws ETIMEDOUT, or ECANCELED when the tracer closes meanwhile.
WaitResult Wait(pid_t tid, int timeout_ms, const Pause& pause);

std::vector<uint8_t> GetRegs(pid_t tid);
void SetRegs(pid_t tid, const std::vector<uint8_t>& regs);
std::vector<uint8_t> GetXstate(pid_t tid);
void SetXstate(pid_t tid, const std::vector<uint8_t>& xstate);
std::vector<uint8_t> GetSigmask(pid_t tid);
void SetSigmask(pid_t tid, const std::vector<uint8_t>& mask);
std::vector<uint8_t> ReadMemory(pid_t tid, uint64_t addr, size_t len);
void WriteMemory(pid_t tid, uint64_t addr, const std::vector<uint8_t>& data);

// Tasks an injection already vetted (tid -> tgid; SIGTRAP is not ignored).
// Reading /proc/<tid>/status costs more than the rest of an injection, and
// what it tells stays true while no tracee runs code of its own, so the
// tracer clears this whenever it lets one run (cont, detach), seizes one or
// sees one exit; InjectSyscall clears it after syscalls that change signal
// dispositions.
using VettedTasks = std::unordered_map<pid_t, pid_t>;

// Runs syscall `nr` in the stopped tracee (see ptrace_ops.cc for the policy
// on signals and cancellation) and returns the raw rax.
int64_t InjectSyscall(pid_t tid, long nr, const std::vector<uint64_t>& args,
                      std::optional<uint64_t> gadget, const Pause& pause, VettedTasks& vetted);

}  // namespace lazyrestore::ptrace_ops
