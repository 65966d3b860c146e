// Small userfaultfd helpers shared by uffd.cc (the JS-facing ioctls) and
// page_service.cc (the fault loop). See userfaultfd(2), ioctl_userfaultfd(2).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lazyrestore {

// How CreateUffd obtained its descriptor.
enum class UffdVia { kSyscall, kDevice };

// userfaultfd(2) with `flags`; when the syscall is refused (EPERM under
// vm.unprivileged_userfaultfd=0 without CAP_SYS_PTRACE, or ENOSYS) falls back
// to /dev/userfaultfd's USERFAULTFD_IOC_NEW, whose access is governed by the
// device node's permissions instead. Returns the fd, or -errno of the last
// attempt.
int CreateUffd(int flags, UffdVia* via);

// Every feature bit the kernel offers (UFFDIO_API with features = 0 on a
// throw-away uffd), or -errno.
int64_t ProbeUffdFeatures(uint64_t* ioctls, UffdVia* via);

// "UFFD_FEATURE_EVENT_FORK", ..., or "UFFD_FEATURE_BIT_<n>" for bits this
// build has no name for.
std::string UffdFeatureName(unsigned bit);
std::vector<std::string> UffdFeatureNames(uint64_t features);

}  // namespace lazyrestore
