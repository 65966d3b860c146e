// For other facilities whose ptrace requests must run on a tracer's own
// thread (ptrace(2) binds a tracee to the thread that seized it), e.g. reads
// of per-thread kernel state during a dump. See ptrace.cc.
#pragma once

#include <napi.h>

#include <cstdint>
#include <functional>
#include <variant>
#include <vector>

#include "ptrace_ops.h"

namespace lazyrestore {

// What a request resolves with: undefined, a Buffer, a WaitStatus or a bigint.
using TracerValue =
    std::variant<std::monostate, std::vector<uint8_t>, ptrace_ops::WaitResult, int64_t>;
// Runs on the tracer thread: plain C++ only (no napi), failures thrown as
// ptrace_ops::PtraceFailure. It must not resume the tracee (no PTRACE_CONT,
// PTRACE_DETACH, ...): the tracer relies on seeing every resume itself.
using TracerWork = std::function<TracerValue()>;

// Takes the tracer handle from info[0], calls `parse` on the JS thread (a
// Napi::Error it throws rejects the promise) and queues the work it returns
// on that tracer's thread. Returns the promise.
Napi::Value EnqueueTracerWork(const Napi::CallbackInfo& info,
                              const std::function<TracerWork()>& parse);

}  // namespace lazyrestore
