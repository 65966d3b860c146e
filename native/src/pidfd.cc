// Process handles and cross-process memory access for the daemon.
// Man pages: pidfd_open(2), pidfd_getfd(2), pidfd_send_signal(2),
// process_vm_readv(2), process_vm_writev(2), kcmp(2).
//
// The pidfd calls go through syscall(2) directly so the addon does not depend
// on the glibc version that added the wrappers.
#include <linux/kcmp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "errors.h"
#include "facilities.h"

namespace lazyrestore {
namespace {

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  int pid = ToInt(info[0], "pid");
  unsigned flags = static_cast<unsigned>(ToU64(info[1], "flags"));
  long fd = syscall(SYS_pidfd_open, pid, flags);
  if (fd < 0) ThrowSystemError(info.Env(), errno, "pidfd_open", "pid " + std::to_string(pid));
  return Napi::Number::New(info.Env(), static_cast<double>(fd));
}

Napi::Value PidfdGetfd(const Napi::CallbackInfo& info) {
  int pidfd = ToInt(info[0], "pidfd");
  int target = ToInt(info[1], "targetFd");
  // flags must be 0 (reserved by the kernel); the new fd is O_CLOEXEC already.
  long fd = syscall(SYS_pidfd_getfd, pidfd, target, 0u);
  if (fd < 0)
    ThrowSystemError(info.Env(), errno, "pidfd_getfd", "target fd " + std::to_string(target));
  return Napi::Number::New(info.Env(), static_cast<double>(fd));
}

Napi::Value PidfdSendSignal(const Napi::CallbackInfo& info) {
  int pidfd = ToInt(info[0], "pidfd");
  int sig = ToInt(info[1], "signal");
  if (syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0u) < 0) {
    ThrowSystemError(info.Env(), errno, "pidfd_send_signal", "signal " + std::to_string(sig));
  }
  return info.Env().Undefined();
}

// process_vm_readv/writev may stop early at the first remote page that is not
// mapped (or not accessible). We retry from where the kernel stopped, because
// a short count can also come from a transfer that was merely split; a call
// that moves nothing ends the loop. The caller asked for a whole range, and a
// silently shortened Buffer would be mistaken for data, so an incomplete
// transfer throws EFAULT naming the first address that could not be moved.
template <typename Transfer>
void TransferAll(Napi::Env env, const char* name, uint64_t addr, char* local, size_t len,
                 Transfer transfer) {
  size_t done = 0;
  while (done < len) {
    iovec l{local + done, len - done};
    iovec r{reinterpret_cast<void*>(addr + done), len - done};
    ssize_t n = transfer(&l, &r);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ThrowSystemError(env, errno, name,
                       "at " + Hex(addr + done) + " (" + std::to_string(len - done) + " bytes)");
    }
    if (n == 0) {
      ThrowSystemError(
          env, EFAULT, name,
          "could not transfer " + std::to_string(len - done) + " bytes at " + Hex(addr + done));
    }
    done += static_cast<size_t>(n);
  }
}

Napi::Value ProcessVmRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = ToInt(info[0], "pid");
  uint64_t addr = ToU64(info[1], "address");
  size_t len = ToU64(info[2], "length");
  Napi::Buffer<char> out = Napi::Buffer<char>::New(env, len);
  TransferAll(env, "process_vm_readv", addr, out.Data(), len,
              [pid](iovec* l, iovec* r) { return process_vm_readv(pid, l, 1, r, 1, 0); });
  return out;
}

Napi::Value ProcessVmWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = ToInt(info[0], "pid");
  uint64_t addr = ToU64(info[1], "address");
  if (!info[2].IsBuffer()) throw Napi::TypeError::New(env, "data must be a Buffer");
  Napi::Buffer<char> data = info[2].As<Napi::Buffer<char>>();
  TransferAll(env, "process_vm_writev", addr, data.Data(), data.Length(),
              [pid](iovec* l, iovec* r) { return process_vm_writev(pid, l, 1, r, 1, 0); });
  return Napi::Number::New(env, static_cast<double>(data.Length()));
}

// kcmp(KCMP_FILE) is the only way to tell whether two fds (in one process or
// two) refer to the same open file description, i.e. share offset and status
// flags after dup(2) or fork(2). The result orders descriptions (0 equal, 1
// less, 2 greater, 3 not comparable), which lets callers sort them.
Napi::Value KcmpFiles(const Napi::CallbackInfo& info) {
  pid_t pid1 = ToInt(info[0], "pid1");
  int fd1 = ToInt(info[1], "fd1");
  pid_t pid2 = ToInt(info[2], "pid2");
  int fd2 = ToInt(info[3], "fd2");
  long r = syscall(SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2);
  if (r < 0) {
    ThrowSystemError(info.Env(), errno, "kcmp",
                     "KCMP_FILE of " + std::to_string(pid1) + ":" + std::to_string(fd1) + " and " +
                         std::to_string(pid2) + ":" + std::to_string(fd2));
  }
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

}  // namespace

void InitPidfd(Napi::Env env, Napi::Object exports) {
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpen, "pidfdOpen"));
  exports.Set("pidfdGetfd", Napi::Function::New(env, PidfdGetfd, "pidfdGetfd"));
  exports.Set("pidfdSendSignal", Napi::Function::New(env, PidfdSendSignal, "pidfdSendSignal"));
  exports.Set("processVmRead", Napi::Function::New(env, ProcessVmRead, "processVmRead"));
  exports.Set("processVmWrite", Napi::Function::New(env, ProcessVmWrite, "processVmWrite"));
  exports.Set("kcmpFiles", Napi::Function::New(env, KcmpFiles, "kcmpFiles"));
}

}  // namespace lazyrestore
