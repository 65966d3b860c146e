// Turning errno into JavaScript errors shaped like Node's own system errors
// (code, errno, syscall), so callers can branch on err.code the same way they
// do for fs and net. See errno(3), strerror(3), strerrorname_np(3).
#pragma once

#include <napi.h>

#include <string>

namespace lazyrestore {

// Builds an Error whose message reads "CODE: description, syscall detail" and
// carries code ("EAGAIN"), errno (negative, as Node reports it) and syscall.
Napi::Error SystemError(Napi::Env env, int err, const char* syscall,
                        const std::string& detail = "");

// Convenience: throws SystemError as a C++ exception (NAPI_CPP_EXCEPTIONS).
[[noreturn]] void ThrowSystemError(Napi::Env env, int err, const char* syscall,
                                   const std::string& detail = "");

// Name of an errno value ("EAGAIN"), or "E<number>" when libc has none.
std::string ErrnoName(int err);

// Reads a JS number that must be a non-negative integer exactly representable
// as a double (addresses and lengths cross the boundary as numbers).
uint64_t ToU64(const Napi::Value& v, const char* what);

// The same, for a value that must fit a non-negative int (an fd, a pid, an IPC id).
int ToInt(const Napi::Value& v, const char* what);

}  // namespace lazyrestore
