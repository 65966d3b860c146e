// memfd objects for dump and restore of memfd mappings. Man pages:
// memfd_create(2), fcntl(2) (F_GET_SEALS, "File Sealing").
//
// A memfd that a dumped process maps (its fd closed) is recreated by the
// restoring process with the same name and sealing mode, filled lazily
// through the tasks' uffds, and handed to the tasks with pidfd_getfd(2) like
// any mapped file.
#include <fcntl.h>
#include <sys/mman.h>

#include <cerrno>
#include <string>

#include "errors.h"
#include "facilities.h"

namespace lazyrestore {
namespace {

// memfdCreate(name, flags): memfd_create(2) with MFD_CLOEXEC added.
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), "name must be a string");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  unsigned flags = static_cast<unsigned>(ToU64(info[1], "flags"));
  int fd = memfd_create(name.c_str(), flags | MFD_CLOEXEC);
  if (fd < 0) ThrowSystemError(info.Env(), errno, "memfd_create", name);
  return Napi::Number::New(info.Env(), fd);
}

// fileSeals(fd): F_GET_SEALS; -1 for a file that cannot be sealed (EINVAL:
// not a memfd / shmem file).
Napi::Value FileSeals(const Napi::CallbackInfo& info) {
  int fd = ToInt(info[0], "fd");
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) {
    if (errno == EINVAL) return Napi::Number::New(info.Env(), -1);
    ThrowSystemError(info.Env(), errno, "fcntl", "F_GET_SEALS");
  }
  return Napi::Number::New(info.Env(), seals);
}

}  // namespace

void InitMemfd(Napi::Env env, Napi::Object exports) {
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("fileSeals", Napi::Function::New(env, FileSeals, "fileSeals"));
}

}  // namespace lazyrestore
