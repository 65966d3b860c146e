// The userfaultfd facility as flat JS functions: creating a uffd, feature
// negotiation, registration and the resolving ioctls (COPY, ZEROPAGE, WAKE).
// Man pages: userfaultfd(2), ioctl_userfaultfd(2), close(2), ioctl(2).
//
// These run synchronously on the JS thread: each is a single non-blocking
// ioctl. The fault loop that serves many uffds lives in page_service.cc.
#include "uffd.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>

#include "errors.h"
#include "facilities.h"

namespace lazyrestore {

namespace {

// Names of UFFD_FEATURE_* bits in bit order. The system headers may predate
// the running kernel, so the names are spelled out here rather than taken
// from <linux/userfaultfd.h>.
constexpr const char* kFeatureNames[] = {
    "UFFD_FEATURE_PAGEFAULT_FLAG_WP",
    "UFFD_FEATURE_EVENT_FORK",
    "UFFD_FEATURE_EVENT_REMAP",
    "UFFD_FEATURE_EVENT_REMOVE",
    "UFFD_FEATURE_MISSING_HUGETLBFS",
    "UFFD_FEATURE_MISSING_SHMEM",
    "UFFD_FEATURE_EVENT_UNMAP",
    "UFFD_FEATURE_SIGBUS",
    "UFFD_FEATURE_THREAD_ID",
    "UFFD_FEATURE_MINOR_HUGETLBFS",
    "UFFD_FEATURE_MINOR_SHMEM",
    "UFFD_FEATURE_EXACT_ADDRESS",
    "UFFD_FEATURE_WP_HUGETLBFS_SHMEM",
    "UFFD_FEATURE_WP_UNPOPULATED",
    "UFFD_FEATURE_POISON",
    "UFFD_FEATURE_WP_ASYNC",
    "UFFD_FEATURE_MOVE",
};

// Feature masks may use bits above 2^53 (the test of an unknown bit does), so
// they are accepted as a BigInt or as any integral number below 2^64.
uint64_t ToFeatures(const Napi::Value& v) {
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t bits = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(v.Env(), "features must fit in 64 bits");
    return bits;
  }
  if (!v.IsNumber()) throw Napi::TypeError::New(v.Env(), "features must be a number or bigint");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d >= 18446744073709551616.0 || std::floor(d) != d) {
    throw Napi::RangeError::New(v.Env(), "features must be a non-negative integer below 2^64");
  }
  return static_cast<uint64_t>(d);
}

// Ioctl bitmasks use bit 63 (_UFFDIO_API); a JS number cannot hold it next
// to bits 0 and 1 (_UFFDIO_REGISTER/_UNREGISTER), so bits >= 53 are left out.
Napi::Number IoctlsToJs(Napi::Env env, uint64_t ioctls) {
  return Napi::Number::New(env, static_cast<double>(ioctls & ((uint64_t{1} << 53) - 1)));
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

Napi::Value UffdCreate(const Napi::CallbackInfo& info) {
  uint64_t flags = ToU64(info[0], "flags");
  UffdVia via;
  int fd = CreateUffd(static_cast<int>(flags), &via);
  if (fd < 0) ThrowSystemError(info.Env(), -fd, "userfaultfd");
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value UffdProbe(const Napi::CallbackInfo& info) {
  uint64_t ioctls = 0;
  UffdVia via;
  int64_t features = ProbeUffdFeatures(&ioctls, &via);
  if (features < 0)
    ThrowSystemError(info.Env(), static_cast<int>(-features), "ioctl", "(UFFDIO_API probe)");
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("features", Napi::Number::New(info.Env(), static_cast<double>(features)));
  out.Set("ioctls", IoctlsToJs(info.Env(), ioctls));
  out.Set("via",
          Napi::String::New(info.Env(), via == UffdVia::kSyscall ? "syscall" : "/dev/userfaultfd"));
  return out;
}

// The kernel answers EINVAL both for unknown feature bits and for a second
// UFFDIO_API on the same uffd, and zeroes the struct either way; a probe on
// a fresh uffd tells the two apart.
[[noreturn]] void ThrowApiError(Napi::Env env, int err, uint64_t requested) {
  if (err == EPERM && (requested & UFFD_FEATURE_EVENT_FORK)) {
    ThrowSystemError(env, err, "ioctl",
                     "(UFFDIO_API: UFFD_FEATURE_EVENT_FORK needs CAP_SYS_PTRACE)");
  }
  if (err != EINVAL) ThrowSystemError(env, err, "ioctl", "(UFFDIO_API)");
  uint64_t ioctls = 0;
  UffdVia via;
  int64_t available = ProbeUffdFeatures(&ioctls, &via);
  if (available < 0)
    ThrowSystemError(env, err, "ioctl", "(UFFDIO_API; probing the available features failed too)");
  uint64_t missing = requested & ~static_cast<uint64_t>(available);
  if (missing == 0) {
    ThrowSystemError(
        env, err, "ioctl",
        "(UFFDIO_API: every requested feature exists, so this uffd was already negotiated; "
        "UFFDIO_API may be called once per uffd)");
  }
  std::vector<std::string> names = UffdFeatureNames(missing);
  Napi::Error error =
      SystemError(env, err, "ioctl", "(UFFDIO_API: the kernel lacks " + JoinNames(names) + ")");
  Napi::Array arr = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); i++) arr.Set(static_cast<uint32_t>(i), names[i]);
  error.Set("missingFeatures", arr);
  throw error;
}

Napi::Value UffdApi(const Napi::CallbackInfo& info) {
  int fd = ToInt(info[0], "fd");
  uint64_t features = ToFeatures(info[1]);
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = features;
  if (ioctl(fd, UFFDIO_API, &api) != 0) ThrowApiError(info.Env(), errno, features);
  // On success the kernel writes back every feature it *offers*, but enables
  // exactly the requested ones on this uffd: those are what was granted.
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("features", Napi::Number::New(info.Env(), static_cast<double>(features)));
  out.Set("ioctls", IoctlsToJs(info.Env(), api.ioctls));
  return out;
}

Napi::Value UffdRegister(const Napi::CallbackInfo& info) {
  uffdio_register reg{};
  int fd = ToInt(info[0], "fd");
  reg.range.start = ToU64(info[1], "start");
  reg.range.len = ToU64(info[2], "len");
  reg.mode = ToU64(info[3], "mode");
  if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0)
    ThrowSystemError(info.Env(), errno, "ioctl", "(UFFDIO_REGISTER)");
  return IoctlsToJs(info.Env(), reg.ioctls);
}

Napi::Value UffdUnregister(const Napi::CallbackInfo& info) {
  uffdio_range range{};
  int fd = ToInt(info[0], "fd");
  range.start = ToU64(info[1], "start");
  range.len = ToU64(info[2], "len");
  if (ioctl(fd, UFFDIO_UNREGISTER, &range) != 0)
    ThrowSystemError(info.Env(), errno, "ioctl", "(UFFDIO_UNREGISTER)");
  return info.Env().Undefined();
}

// The kernel reports progress in the struct (bytes done, or a negative
// errno); callers need the bytes done even when the ioctl failed, to resume a
// partial copy after EAGAIN.
[[noreturn]] void ThrowProgressError(Napi::Env env, int err, const char* what, int64_t progress) {
  Napi::Error error = SystemError(env, err, "ioctl", std::string("(") + what + ")");
  error.Set("bytesCopied",
            Napi::Number::New(env, progress > 0 ? static_cast<double>(progress) : 0));
  throw error;
}

Napi::Value UffdCopy(const Napi::CallbackInfo& info) {
  int fd = ToInt(info[0], "fd");
  uint64_t dst = ToU64(info[1], "dst");
  if (!info[2].IsBuffer()) throw Napi::TypeError::New(info.Env(), "data must be a Buffer");
  auto data = info[2].As<Napi::Buffer<uint8_t>>();
  uffdio_copy copy{};
  copy.dst = dst;
  copy.src = reinterpret_cast<uintptr_t>(data.Data());
  copy.len = data.Length();
  copy.mode = ToU64(info[3], "mode");
  if (ioctl(fd, UFFDIO_COPY, &copy) != 0)
    ThrowProgressError(info.Env(), errno, "UFFDIO_COPY", copy.copy);
  return Napi::Number::New(info.Env(), static_cast<double>(copy.copy));
}

Napi::Value UffdZeropage(const Napi::CallbackInfo& info) {
  int fd = ToInt(info[0], "fd");
  uffdio_zeropage zp{};
  zp.range.start = ToU64(info[1], "start");
  zp.range.len = ToU64(info[2], "len");
  zp.mode = ToU64(info[3], "mode");
  if (ioctl(fd, UFFDIO_ZEROPAGE, &zp) != 0)
    ThrowProgressError(info.Env(), errno, "UFFDIO_ZEROPAGE", zp.zeropage);
  return Napi::Number::New(info.Env(), static_cast<double>(zp.zeropage));
}

Napi::Value UffdWake(const Napi::CallbackInfo& info) {
  int fd = ToInt(info[0], "fd");
  uffdio_range range{};
  range.start = ToU64(info[1], "start");
  range.len = ToU64(info[2], "len");
  if (ioctl(fd, UFFDIO_WAKE, &range) != 0)
    ThrowSystemError(info.Env(), errno, "ioctl", "(UFFDIO_WAKE)");
  return info.Env().Undefined();
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd = ToInt(info[0], "fd");
  // close(2): on Linux the descriptor is released even when close reports
  // EINTR, so it is never retried.
  if (close(fd) != 0 && errno != EINTR) ThrowSystemError(info.Env(), errno, "close");
  return info.Env().Undefined();
}

}  // namespace

int CreateUffd(int flags, UffdVia* via) {
  *via = UffdVia::kSyscall;
  int fd = static_cast<int>(syscall(SYS_userfaultfd, flags));
  if (fd >= 0) return fd;
  int err = errno;
  if (err != EPERM && err != ENOSYS) return -err;
  int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev < 0) return -err;  // the syscall's refusal is the more telling error
  *via = UffdVia::kDevice;
  fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
  err = errno;
  close(dev);
  return fd >= 0 ? fd : -err;
}

int64_t ProbeUffdFeatures(uint64_t* ioctls, UffdVia* via) {
  int fd = CreateUffd(O_CLOEXEC | O_NONBLOCK, via);
  if (fd < 0) return fd;
  uffdio_api api{};
  api.api = UFFD_API;
  int rc = ioctl(fd, UFFDIO_API, &api);
  int err = errno;
  close(fd);
  if (rc != 0) return -err;
  *ioctls = api.ioctls;
  return static_cast<int64_t>(api.features & INT64_MAX);
}

std::string UffdFeatureName(unsigned bit) {
  if (bit < sizeof(kFeatureNames) / sizeof(kFeatureNames[0])) return kFeatureNames[bit];
  return "UFFD_FEATURE_BIT_" + std::to_string(bit);
}

std::vector<std::string> UffdFeatureNames(uint64_t features) {
  std::vector<std::string> names;
  for (unsigned bit = 0; bit < 64; bit++) {
    if (features & (uint64_t{1} << bit)) names.push_back(UffdFeatureName(bit));
  }
  return names;
}

void InitUffd(Napi::Env env, Napi::Object exports) {
  exports.Set("uffdCreate", Napi::Function::New(env, UffdCreate, "uffdCreate"));
  exports.Set("uffdProbe", Napi::Function::New(env, UffdProbe, "uffdProbe"));
  exports.Set("uffdApi", Napi::Function::New(env, UffdApi, "uffdApi"));
  exports.Set("uffdRegister", Napi::Function::New(env, UffdRegister, "uffdRegister"));
  exports.Set("uffdUnregister", Napi::Function::New(env, UffdUnregister, "uffdUnregister"));
  exports.Set("uffdCopy", Napi::Function::New(env, UffdCopy, "uffdCopy"));
  exports.Set("uffdZeropage", Napi::Function::New(env, UffdZeropage, "uffdZeropage"));
  exports.Set("uffdWake", Napi::Function::New(env, UffdWake, "uffdWake"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
}

}  // namespace lazyrestore
