// File-space operations Node's fs module does not offer, for the image
// store's pack files (daemon/store/packs.ts).
// Man pages: fallocate(2) (FALLOC_FL_PUNCH_HOLE, FALLOC_FL_KEEP_SIZE).
#include <fcntl.h>
#include <linux/falloc.h>

#include <cerrno>
#include <string>

#include "errors.h"
#include "facilities.h"

namespace lazyrestore {
namespace {

// Frees the blocks of [offset, offset+len) of a regular file without changing
// its size; the range then reads as zeros. Synchronous: it only changes block
// maps, and the store calls it for ranges it has already unreferenced.
Napi::Value PunchHole(const Napi::CallbackInfo& info) {
  uint64_t fd = ToU64(info[0], "fd");
  uint64_t offset = ToU64(info[1], "offset");
  uint64_t len = ToU64(info[2], "len");
  if (fd > 0x7fffffff) throw Napi::RangeError::New(info.Env(), "fd is out of range");
  if (len == 0) return info.Env().Undefined();
  int rc;
  do {
    rc = fallocate(static_cast<int>(fd), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   static_cast<off_t>(offset), static_cast<off_t>(len));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    ThrowSystemError(info.Env(), errno, "fallocate",
                     "punch hole at " + std::to_string(offset) + "+" + std::to_string(len));
  }
  return info.Env().Undefined();
}

}  // namespace

void InitFiles(Napi::Env env, Napi::Object exports) {
  exports.Set("punchHole", Napi::Function::New(env, PunchHole, "punchHole"));
}

}  // namespace lazyrestore
