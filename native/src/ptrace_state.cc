// Per-thread kernel state a dump reads with ptrace requests that have no
// wrapper elsewhere, run on the tracer's own thread (ptrace_tracer.h), and a
// non-consuming read of the data buffered in a pipe.
// Man pages: ptrace(2) (PTRACE_PEEKSIGINFO, PTRACE_GET_RSEQ_CONFIGURATION),
// rseq(2), signal(7), pipe(7), tee(2), fcntl(2) (F_GETPIPE_SZ/F_SETPIPE_SZ),
// ioctl(2) FIONREAD.
#include <fcntl.h>
#include <napi.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "errors.h"
#include "facilities.h"
#include "ptrace_tracer.h"

namespace lazyrestore {
namespace {

using ptrace_ops::PtraceFailure;

// Signals are peeked in batches of this many siginfo_t.
constexpr int kPeekBatch = 32;

pid_t Tid(const Napi::Value& v) {
  uint64_t tid = ToU64(v, "tid");
  if (tid == 0 || tid > 0x7fffffff)
    throw Napi::RangeError::New(v.Env(), "tid must be a positive pid");
  return static_cast<pid_t>(tid);
}

// PTRACE_PEEKSIGINFO copies queued siginfo without dequeuing them, from the
// thread's private queue or (PTRACE_PEEKSIGINFO_SHARED) the thread group's.
// The queue cannot change meanwhile: the tracee is stopped and signals sent
// to it now are appended, so reading in batches from increasing offsets
// until one comes back short sees each entry once.
std::vector<uint8_t> PeekSiginfo(pid_t tid, bool shared) {
  std::vector<uint8_t> out;
  for (uint64_t off = 0;; off += kPeekBatch) {
    __ptrace_peeksiginfo_args args{off, shared ? PTRACE_PEEKSIGINFO_SHARED : 0u, kPeekBatch};
    siginfo_t batch[kPeekBatch];
    long n = ptrace(PTRACE_PEEKSIGINFO, tid, &args, batch);
    if (n < 0) {
      throw PtraceFailure{errno, "ptrace", "PTRACE_PEEKSIGINFO tid " + std::to_string(tid)};
    }
    const uint8_t* bytes = reinterpret_cast<const uint8_t*>(batch);
    out.insert(out.end(), bytes, bytes + n * sizeof(siginfo_t));
    if (n < kPeekBatch) return out;
  }
}

// struct ptrace_rseq_configuration as the kernel fills it (24 bytes); a
// thread without rseq reports a zero rseq_abi_pointer.
std::vector<uint8_t> GetRseqConfiguration(pid_t tid) {
  __ptrace_rseq_configuration conf{};
  long n = ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, sizeof conf, &conf);
  if (n < 0) {
    throw PtraceFailure{errno, "ptrace",
                        "PTRACE_GET_RSEQ_CONFIGURATION tid " + std::to_string(tid)};
  }
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&conf);
  return std::vector<uint8_t>(bytes, bytes + sizeof conf);
}

Napi::Value TracerPeekSiginfo(const Napi::CallbackInfo& info) {
  return EnqueueTracerWork(info, [&]() -> TracerWork {
    pid_t tid = Tid(info[1]);
    bool shared = info[2].ToBoolean().Value();
    return [tid, shared]() -> TracerValue { return PeekSiginfo(tid, shared); };
  });
}

Napi::Value TracerGetRseqConfiguration(const Napi::CallbackInfo& info) {
  return EnqueueTracerWork(info, [&]() -> TracerWork {
    pid_t tid = Tid(info[1]);
    return [tid]() -> TracerValue { return GetRseqConfiguration(tid); };
  });
}

// Closes a descriptor on every path out of PipePeek.
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

// tee(2) duplicates the source pipe's buffers into a private pipe as
// references, without consuming them; one call copies from the start of the
// source, so it must take everything at once: the private pipe gets the
// source's capacity (root may exceed pipe-max-size), and the count is
// checked against FIONREAD. Everything is non-blocking, as the caller's
// process must never wait on the dumped tree.
Napi::Value PipePeek(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t src64 = ToU64(info[0], "fd");
  if (src64 > 0x7fffffff) throw Napi::RangeError::New(env, "fd is out of range");
  int src = static_cast<int>(src64);
  int capacity = fcntl(src, F_GETPIPE_SZ);
  if (capacity < 0)
    ThrowSystemError(env, errno, "fcntl", "F_GETPIPE_SZ of fd " + std::to_string(src));
  int queued = 0;
  if (ioctl(src, FIONREAD, &queued) < 0) ThrowSystemError(env, errno, "ioctl", "FIONREAD");
  Napi::Object out = Napi::Object::New(env);
  out.Set("capacity", Napi::Number::New(env, capacity));
  if (queued == 0) {
    out.Set("data", Napi::Buffer<uint8_t>::New(env, 0));
    return out;
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) ThrowSystemError(env, errno, "pipe2");
  Fd rd(fds[0]), wr(fds[1]);
  if (fcntl(wr.get(), F_SETPIPE_SZ, capacity) < 0)
    ThrowSystemError(env, errno, "fcntl", "F_SETPIPE_SZ " + std::to_string(capacity));
  ssize_t teed = tee(src, wr.get(), static_cast<size_t>(queued), SPLICE_F_NONBLOCK);
  if (teed < 0) ThrowSystemError(env, errno, "tee");
  if (teed != queued) {
    ThrowSystemError(env, EAGAIN, "tee",
                     "copied " + std::to_string(teed) + " of the " + std::to_string(queued) +
                         " bytes buffered in the pipe");
  }
  Napi::Buffer<uint8_t> data = Napi::Buffer<uint8_t>::New(env, static_cast<size_t>(teed));
  size_t got = 0;
  while (got < data.Length()) {
    ssize_t n = read(rd.get(), data.Data() + got, data.Length() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ThrowSystemError(env, n < 0 ? errno : EIO, "read", "private pipe after tee");
    got += static_cast<size_t>(n);
  }
  out.Set("data", data);
  return out;
}

}  // namespace

void InitPtraceState(Napi::Env env, Napi::Object exports) {
  exports.Set("tracerPeekSiginfo",
              Napi::Function::New(env, TracerPeekSiginfo, "tracerPeekSiginfo"));
  exports.Set("tracerGetRseqConfiguration",
              Napi::Function::New(env, TracerGetRseqConfiguration, "tracerGetRseqConfiguration"));
  exports.Set("pipePeek", Napi::Function::New(env, PipePeek, "pipePeek"));
}

}  // namespace lazyrestore
