// System V shared memory segments for dump and restore of shmat(2)
// attaches. Man pages: shmget(2), shmctl(2), shmop(2) (shmat, shmdt),
// proc(5) (/proc/<pid>/map_files, /proc/sys/kernel/shm_next_id).
//
// A segment belongs to the IPC namespace, not to a process: restore
// recreates a segment the tree had attached (same key, id, size and
// permissions) unless it still exists, and the tasks attach it themselves
// with an injected shmat(2), so that shmdt(2) and IPC_STAT see ordinary
// attaches. userfaultfd cannot register such attaches (their VMAs are not
// shmem VMAs to the kernel: UFFDIO_REGISTER fails with EINVAL), so the
// contents are written before the tree runs, through the segment's shmem
// file.
#include <fcntl.h>
#include <sys/shm.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "errors.h"
#include "facilities.h"

namespace lazyrestore {
namespace {

std::string IdDetail(int id) { return "shmid " + std::to_string(id); }

// shmGet(key, size, flags): shmget(2); key is a signed 32-bit key_t.
Napi::Value ShmGet(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "key must be a number");
  key_t key = info[0].As<Napi::Number>().Int32Value();
  size_t size = ToU64(info[1], "size");
  int flags = static_cast<int>(ToU64(info[2], "flags"));
  int id = shmget(key, size, flags);
  if (id < 0) ThrowSystemError(info.Env(), errno, "shmget", "key " + std::to_string(key));
  return Napi::Number::New(info.Env(), id);
}

// shmStat(id): IPC_STAT as a plain object, or null when no segment has this
// id (EINVAL, or EIDRM while it is being removed).
Napi::Value ShmStat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = ToInt(info[0], "shmid");
  struct shmid_ds ds = {};
  if (shmctl(id, IPC_STAT, &ds) < 0) {
    if (errno == EINVAL || errno == EIDRM) return env.Null();
    ThrowSystemError(env, errno, "shmctl", "IPC_STAT " + IdDetail(id));
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("key", Napi::Number::New(env, ds.shm_perm.__key));
  out.Set("size", Napi::Number::New(env, static_cast<double>(ds.shm_segsz)));
  out.Set("mode", Napi::Number::New(env, ds.shm_perm.mode));
  out.Set("uid", Napi::Number::New(env, ds.shm_perm.uid));
  out.Set("gid", Napi::Number::New(env, ds.shm_perm.gid));
  out.Set("nattch", Napi::Number::New(env, static_cast<double>(ds.shm_nattch)));
  return out;
}

// shmSet(id, uid, gid, mode): IPC_SET of the owner and the permission bits.
Napi::Value ShmSet(const Napi::CallbackInfo& info) {
  int id = ToInt(info[0], "shmid");
  struct shmid_ds ds = {};
  if (shmctl(id, IPC_STAT, &ds) < 0)
    ThrowSystemError(info.Env(), errno, "shmctl", "IPC_STAT " + IdDetail(id));
  ds.shm_perm.uid = static_cast<uid_t>(ToU64(info[1], "uid"));
  ds.shm_perm.gid = static_cast<gid_t>(ToU64(info[2], "gid"));
  ds.shm_perm.mode = static_cast<unsigned short>(ToU64(info[3], "mode") & 0777);
  if (shmctl(id, IPC_SET, &ds) < 0)
    ThrowSystemError(info.Env(), errno, "shmctl", "IPC_SET " + IdDetail(id));
  return info.Env().Undefined();
}

// shmRemove(id): IPC_RMID (the segment goes once its last attach does).
// Returns false when no segment has this id any more.
Napi::Value ShmRemove(const Napi::CallbackInfo& info) {
  int id = ToInt(info[0], "shmid");
  if (shmctl(id, IPC_RMID, nullptr) < 0) {
    if (errno == EINVAL || errno == EIDRM) return Napi::Boolean::New(info.Env(), false);
    ThrowSystemError(info.Env(), errno, "shmctl", "IPC_RMID " + IdDetail(id));
  }
  return Napi::Boolean::New(info.Env(), true);
}

// shmLock(id): SHM_LOCK (its pages are not swapped out).
Napi::Value ShmLock(const Napi::CallbackInfo& info) {
  int id = ToInt(info[0], "shmid");
  if (shmctl(id, SHM_LOCK, nullptr) < 0)
    ThrowSystemError(info.Env(), errno, "shmctl", "SHM_LOCK " + IdDetail(id));
  return info.Env().Undefined();
}

// shmFile(id): a read-write fd (O_CLOEXEC) of the segment's shmem file.
// There is no name to open it by: attach it here for a moment and open the
// attach through map_files, which yields the shmem file itself; the fd keeps
// the file alive after the shmdt.
Napi::Value ShmFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = ToInt(info[0], "shmid");
  struct shmid_ds ds = {};
  if (shmctl(id, IPC_STAT, &ds) < 0)
    ThrowSystemError(env, errno, "shmctl", "IPC_STAT " + IdDetail(id));
  void* at = shmat(id, nullptr, 0);
  if (at == reinterpret_cast<void*>(-1)) ThrowSystemError(env, errno, "shmat", IdDetail(id));
  size_t len = (ds.shm_segsz + 4095) & ~size_t{4095};
  char path[96];
  std::snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx",
                reinterpret_cast<unsigned long>(at), reinterpret_cast<unsigned long>(at) + len);
  int fd = open(path, O_RDWR | O_CLOEXEC);
  int err = errno;
  shmdt(at);
  if (fd < 0) ThrowSystemError(env, err, "open", path);
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitSysvShm(Napi::Env env, Napi::Object exports) {
  exports.Set("shmGet", Napi::Function::New(env, ShmGet, "shmGet"));
  exports.Set("shmStat", Napi::Function::New(env, ShmStat, "shmStat"));
  exports.Set("shmSet", Napi::Function::New(env, ShmSet, "shmSet"));
  exports.Set("shmRemove", Napi::Function::New(env, ShmRemove, "shmRemove"));
  exports.Set("shmLock", Napi::Function::New(env, ShmLock, "shmLock"));
  exports.Set("shmFile", Napi::Function::New(env, ShmFile, "shmFile"));
}

}  // namespace lazyrestore
