// Each kernel facility lives in its own translation unit and adds its flat
// functions to the addon's exports through one of these initialisers.
#pragma once

#include <napi.h>

namespace lazyrestore {

void InitUffd(Napi::Env env, Napi::Object exports);         // uffd.cc
void InitPageService(Napi::Env env, Napi::Object exports);  // page_service.cc
void InitPtrace(Napi::Env env, Napi::Object exports);       // ptrace.cc
void InitPidfd(Napi::Env env, Napi::Object exports);        // pidfd.cc
void InitProbe(Napi::Env env, Napi::Object exports);        // probe.cc
void InitPtraceState(Napi::Env env, Napi::Object exports);  // ptrace_state.cc
void InitRestore(Napi::Env env, Napi::Object exports);      // restore.cc
void InitCustody(Napi::Env env, Napi::Object exports);      // custody.cc
void InitMemfd(Napi::Env env, Napi::Object exports);        // memfd.cc
void InitSysvShm(Napi::Env env, Napi::Object exports);      // sysv_shm.cc

}  // namespace lazyrestore
