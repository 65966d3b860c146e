// Entry point of the lazyrestore addon. The native layer holds mechanisms
// only (syscalls, dedicated threads, memory the fault thread reads); policy
// lives in TypeScript. The typed surface is native/index.ts.
#include <napi.h>

#include "facilities.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  lazyrestore::InitUffd(env, exports);
  lazyrestore::InitPageService(env, exports);
  lazyrestore::InitPtrace(env, exports);
  lazyrestore::InitPidfd(env, exports);
  lazyrestore::InitProbe(env, exports);
  lazyrestore::InitPtraceState(env, exports);
  lazyrestore::InitRestore(env, exports);
  lazyrestore::InitCustody(env, exports);
  lazyrestore::InitMemfd(env, exports);
  lazyrestore::InitSysvShm(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(lazyrestore, Init)
