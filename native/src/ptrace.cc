// A tracer: one std::thread that issues every ptrace request for the tasks it
// seized, because ptrace(2) binds a tracee to the thread that attached it. JS
// calls enqueue work and get a Promise; the thread runs the work (see
// ptrace_ops.cc) and hands plain C++ results back through a thread-safe
// function, whose JS-thread callback settles the promise.
// Man pages: ptrace(2), pthreads(7), prctl(2); N-API: napi_threadsafe_function,
// napi_add_env_cleanup_hook.
#include <napi.h>
#include <sched.h>
#include <sys/prctl.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <variant>

#include "errors.h"
#include "facilities.h"
#include "ptrace_ops.h"
#include "ptrace_tracer.h"

namespace lazyrestore {
namespace {

using namespace ptrace_ops;
using std::chrono::microseconds;

using Value = TracerValue;

class Core;
using Work = std::function<Value(Core&)>;

// One JS call. Created on the JS thread, run on the tracer thread, settled
// back on the JS thread; the deferred is only ever touched on the JS thread.
struct Request {
  Work work;
  Napi::Promise::Deferred deferred;
  Value value;
  std::optional<PtraceFailure> failure;
};

void CallJs(Napi::Env env, Napi::Function, Core* core, Request* req);
using Tsfn = Napi::TypedThreadSafeFunction<Core, Request, CallJs>;

// Lifetime: Core keeps itself alive (self_) until the TSFN finalizer, which
// runs on the JS thread after the tracer thread released the TSFN, joins the
// thread and settles close(). The JS handle holds another reference; when it
// is garbage-collected without close() it asks the thread to stop, and the
// same finalizer path cleans up. At environment teardown our cleanup hook
// (registered after the TSFN's, so it runs first) stops and joins the thread
// before Node deletes the TSFN under it.
class Core {
 public:
  static std::shared_ptr<Core> Start(Napi::Env env);

  void Submit(Napi::Env env, std::unique_ptr<Request> req);
  void Close(Napi::Env env, Napi::Promise::Deferred done);
  void RequestStop();
  bool Sleep(microseconds d, bool cancellable);
  ptrace_ops::Pause PauseFn() {
    return [this](microseconds d, bool cancellable) { return Sleep(d, cancellable); };
  }
  void Settled(Napi::Env env);
  // Tracer thread only (see ptrace_ops::VettedTasks).
  VettedTasks& vetted() { return vetted_; }

 private:
  Core() = default;
  void Run();
  static void Execute(Core& core, Request& req);
  static void Finalize(Napi::Env env, void*, Core* core);
  static void EnvCleanup(void* arg);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Request>> queue_;  // guarded by mu_
  bool stopping_ = false;                       // guarded by mu_: no new work, waits give up
  std::thread thread_;
  Tsfn tsfn_;
  std::shared_ptr<Core> self_;
  VettedTasks vetted_;  // tracer thread only
  // JS thread only.
  size_t pending_ = 0;  // unsettled requests and closes: the TSFN is ref'd while > 0
  bool finalized_ = false;
  bool tearing_down_ = false;
  std::vector<Napi::Promise::Deferred> close_waiters_;
};

Napi::Error ClosedError(Napi::Env env) {
  Napi::Error e = Napi::Error::New(env, "tracer is closed");
  e.Set("code", Napi::String::New(env, "ERR_TRACER_CLOSED"));
  return e;
}

std::shared_ptr<Core> Core::Start(Napi::Env env) {
  std::shared_ptr<Core> core(new Core());
  core->tsfn_ = Tsfn::New(env, "lazyrestore.tracer", 0, 1, core.get(), Finalize);
  core->self_ = core;
  core->tsfn_.Unref(env);
  napi_add_env_cleanup_hook(env, EnvCleanup, core.get());
  try {
    core->thread_ = std::thread([c = core.get()] { c->Run(); });
  } catch (const std::system_error& e) {
    core->tsfn_.Release();  // the TSFN finalizer drops self_
    throw Napi::Error::New(env, std::string("cannot start the tracer thread: ") + e.what());
  }
  return core;
}

void Core::Submit(Napi::Env env, std::unique_ptr<Request> req) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) throw ClosedError(env);
    queue_.push_back(std::move(req));
  }
  cv_.notify_one();
  if (pending_++ == 0) tsfn_.Ref(env);
}

void Core::Close(Napi::Env env, Napi::Promise::Deferred done) {
  if (finalized_) {
    done.Resolve(env.Undefined());
    return;
  }
  close_waiters_.push_back(done);
  if (pending_++ == 0) tsfn_.Ref(env);
  RequestStop();
}

void Core::RequestStop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
}

bool Core::Sleep(microseconds d, bool cancellable) {
  std::unique_lock<std::mutex> lock(mu_);
  if (cancellable && stopping_) return false;
  if (d.count() == 0) {
    lock.unlock();
    sched_yield();
    return true;
  }
  if (cancellable) return !cv_.wait_for(lock, d, [this] { return stopping_; });
  lock.unlock();
  std::this_thread::sleep_for(d);
  return true;
}

void Core::Settled(Napi::Env env) {
  if (--pending_ == 0) tsfn_.Unref(env);
}

// Pending requests still run after close(); only waits are cut short. When
// the thread ends, the kernel detaches every tracee it still has (exit_ptrace):
// each resumes as after PTRACE_DETACH with no signal, except tracees seized
// with PTRACE_O_EXITKILL, which it kills.
void Core::Run() {
  // Waits poll with sleeps of tens of microseconds; the default 50 us timer
  // slack of this thread would more than double them.
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  for (;;) {
    std::unique_ptr<Request> req;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return !queue_.empty() || stopping_; });
      if (queue_.empty()) break;
      req = std::move(queue_.front());
      queue_.pop_front();
    }
    Execute(*this, *req);
    Request* raw = req.release();
    if (tsfn_.BlockingCall(raw) != napi_ok) delete raw;  // environment is going away
  }
  tsfn_.Release();
}

void Core::Execute(Core& core, Request& req) {
  try {
    req.value = req.work(core);
  } catch (const PtraceFailure& f) {
    req.failure = f;
  } catch (const std::bad_alloc&) {
    req.failure = PtraceFailure{ENOMEM, "ptrace", "tracer: out of memory"};
  } catch (const std::exception& e) {
    // Nothing may escape the thread: std::terminate would take Node down.
    req.failure = PtraceFailure{EINVAL, "ptrace", std::string("tracer: ") + e.what()};
  }
}

void Core::Finalize(Napi::Env env, void*, Core* core) {
  std::shared_ptr<Core> keep = std::move(core->self_);
  core->RequestStop();
  if (core->thread_.joinable()) core->thread_.join();
  napi_remove_env_cleanup_hook(env, EnvCleanup, core);
  core->finalized_ = true;
  if (!core->tearing_down_) {
    for (Napi::Promise::Deferred& d : core->close_waiters_) d.Resolve(env.Undefined());
  }
  core->close_waiters_.clear();
}

void Core::EnvCleanup(void* arg) {
  Core* core = static_cast<Core*>(arg);
  core->tearing_down_ = true;
  core->RequestStop();
  if (core->thread_.joinable()) core->thread_.join();
}

// --- results to JS -----------------------------------------------------------

Napi::Value WaitToJs(Napi::Env env, const WaitResult& w) {
  Napi::Object o = Napi::Object::New(env);
  switch (w.kind) {
    case WaitResult::Kind::Stopped:
      o.Set("kind", "stopped");
      o.Set("signal", w.signal);
      o.Set("event", w.event);
      break;
    case WaitResult::Kind::Exited:
      o.Set("kind", "exited");
      o.Set("status", w.status);
      break;
    case WaitResult::Kind::Signaled:
      o.Set("kind", "signaled");
      o.Set("signal", w.signal);
      o.Set("coreDumped", w.core_dumped);
      break;
  }
  return o;
}

Napi::Value ToJs(Napi::Env env, const Value& v) {
  if (auto* bytes = std::get_if<std::vector<uint8_t>>(&v))
    return Napi::Buffer<uint8_t>::Copy(env, bytes->data(), bytes->size());
  if (auto* w = std::get_if<WaitResult>(&v)) return WaitToJs(env, *w);
  if (auto* n = std::get_if<int64_t>(&v)) return Napi::BigInt::New(env, *n);
  return env.Undefined();
}

void CallJs(Napi::Env env, Napi::Function, Core* core, Request* raw) {
  std::unique_ptr<Request> req(raw);
  if (static_cast<napi_env>(env) == nullptr) return;  // teardown: the promise can no longer settle
  core->Settled(env);
  if (req->failure) {
    const PtraceFailure& f = *req->failure;
    req->deferred.Reject(SystemError(env, f.err, f.syscall.c_str(), f.detail).Value());
  } else {
    req->deferred.Resolve(ToJs(env, req->value));
  }
}

// --- argument parsing (JS thread) ---------------------------------------------

using Handle = std::shared_ptr<Core>;
constexpr napi_type_tag kTracerTag = {0x6c617a7972657374ULL, 0x7472616365720001ULL};

Core& Unwrap(const Napi::Value& v) {
  if (!v.IsExternal() || !v.As<Napi::External<Handle>>().CheckTypeTag(&kTracerTag)) {
    throw Napi::TypeError::New(v.Env(), "expected a tracer handle from tracerOpen()");
  }
  return **v.As<Napi::External<Handle>>().Data();
}

pid_t Tid(const Napi::Value& v) {
  uint64_t tid = ToU64(v, "tid");
  if (tid == 0 || tid > 0x7fffffff)
    throw Napi::RangeError::New(v.Env(), "tid must be a positive pid");
  return static_cast<pid_t>(tid);
}

int Signal(const Napi::Value& v) {
  uint64_t sig = ToU64(v, "signal");
  if (sig > 64) throw Napi::RangeError::New(v.Env(), "signal must be 0..64");
  return static_cast<int>(sig);
}

std::vector<uint8_t> Bytes(const Napi::Value& v, const char* what) {
  if (!v.IsBuffer()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a Buffer");
  Napi::Buffer<uint8_t> b = v.As<Napi::Buffer<uint8_t>>();
  return std::vector<uint8_t>(b.Data(), b.Data() + b.Length());
}

std::vector<uint8_t> SizedBytes(const Napi::Value& v, const char* what, size_t size) {
  std::vector<uint8_t> bytes = Bytes(v, what);
  if (bytes.size() != size) {
    throw Napi::RangeError::New(v.Env(),
                                std::string(what) + " must be " + std::to_string(size) + " bytes");
  }
  return bytes;
}

// BigInt → the 64-bit register value: negatives in two's complement.
uint64_t RegisterArg(const Napi::Value& v) {
  if (!v.IsBigInt()) throw Napi::TypeError::New(v.Env(), "syscall arguments must be bigints");
  bool lossless = false;
  int64_t s = v.As<Napi::BigInt>().Int64Value(&lossless);
  if (lossless) return static_cast<uint64_t>(s);
  uint64_t u = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (lossless) return u;
  throw Napi::RangeError::New(v.Env(), "syscall argument does not fit in 64 bits");
}

std::vector<uint64_t> SyscallArgs(const Napi::Value& v) {
  if (!v.IsArray()) throw Napi::TypeError::New(v.Env(), "args must be an array of bigints");
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() > 6) throw Napi::RangeError::New(v.Env(), "a syscall takes at most 6 arguments");
  std::vector<uint64_t> out;
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(RegisterArg(a.Get(i)));
  return out;
}

// Every request function: parse on the JS thread (a bad argument rejects the
// promise), then run `work` on the tracer thread.
Napi::Value Enqueue(const Napi::CallbackInfo& info, const std::function<Work()>& parse) {
  Napi::Env env = info.Env();
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  try {
    Core& core = Unwrap(info[0]);
    core.Submit(env, std::unique_ptr<Request>(new Request{parse(), deferred, {}, std::nullopt}));
  } catch (const Napi::Error& e) {
    deferred.Reject(e.Value());
  }
  return deferred.Promise();
}

// --- exported functions ----------------------------------------------------------

Napi::Value TracerOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Handle* handle = new Handle(Core::Start(env));
  auto ext = Napi::External<Handle>::New(env, handle, [](Napi::Env, Handle* h) {
    (*h)->RequestStop();
    delete h;
  });
  ext.TypeTag(&kTracerTag);
  return ext;
}

Napi::Value TracerClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  try {
    Unwrap(info[0]).Close(env, deferred);
  } catch (const Napi::Error& e) {
    deferred.Reject(e.Value());
  }
  return deferred.Promise();
}

Napi::Value TracerSeize(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    unsigned long options = ToU64(info[2], "options");
    return [tid, options](Core& core) -> Value {
      core.vetted().clear();
      Seize(tid, options);
      return {};
    };
  });
}

Napi::Value TracerInterrupt(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    return [tid](Core&) -> Value {
      Interrupt(tid);
      return {};
    };
  });
}

Napi::Value TracerWait(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    uint64_t timeout = info[2].IsUndefined() ? 0 : ToU64(info[2], "timeoutMs");
    if (timeout > 0x7fffffff) throw Napi::RangeError::New(info.Env(), "timeoutMs is too large");
    return [tid, timeout](Core& core) -> Value {
      WaitResult r = Wait(tid, static_cast<int>(timeout), core.PauseFn());
      if (r.kind != WaitResult::Kind::Stopped) core.vetted().clear();  // its tid may be reused
      return r;
    };
  });
}

Napi::Value TracerCont(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    int sig = Signal(info[2]);
    return [tid, sig](Core& core) -> Value {
      core.vetted().clear();  // the tracee runs its own code again
      Cont(tid, sig);
      return {};
    };
  });
}

Napi::Value TracerDetach(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    int sig = Signal(info[2]);
    return [tid, sig](Core& core) -> Value {
      core.vetted().clear();
      Detach(tid, sig);
      return {};
    };
  });
}

Napi::Value TracerGetRegs(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    return [tid](Core&) -> Value { return GetRegs(tid); };
  });
}

Napi::Value TracerSetRegs(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    std::vector<uint8_t> regs = SizedBytes(info[2], "regs", 27 * 8);
    return [tid, regs](Core&) -> Value {
      SetRegs(tid, regs);
      return {};
    };
  });
}

Napi::Value TracerGetXstate(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    return [tid](Core&) -> Value { return GetXstate(tid); };
  });
}

Napi::Value TracerSetXstate(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    std::vector<uint8_t> xstate = Bytes(info[2], "xstate");
    return [tid, xstate](Core&) -> Value {
      SetXstate(tid, xstate);
      return {};
    };
  });
}

Napi::Value TracerGetSigmask(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    return [tid](Core&) -> Value { return GetSigmask(tid); };
  });
}

Napi::Value TracerSetSigmask(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    std::vector<uint8_t> mask = SizedBytes(info[2], "mask", 8);
    return [tid, mask](Core&) -> Value {
      SetSigmask(tid, mask);
      return {};
    };
  });
}

Napi::Value TracerReadMemory(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    uint64_t addr = ToU64(info[2], "address");
    uint64_t len = ToU64(info[3], "length");
    if (len > 0xffffffffULL) throw Napi::RangeError::New(info.Env(), "length must fit in a Buffer");
    return [tid, addr, len](Core&) -> Value { return ReadMemory(tid, addr, len); };
  });
}

Napi::Value TracerWriteMemory(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    uint64_t addr = ToU64(info[2], "address");
    std::vector<uint8_t> data = Bytes(info[3], "data");
    return [tid, addr, data](Core&) -> Value {
      WriteMemory(tid, addr, data);
      return {};
    };
  });
}

Napi::Value TracerSyscall(const Napi::CallbackInfo& info) {
  return Enqueue(info, [&]() -> Work {
    pid_t tid = Tid(info[1]);
    long nr = static_cast<long>(ToU64(info[2], "nr"));
    std::vector<uint64_t> args = SyscallArgs(info[3]);
    std::optional<uint64_t> gadget;
    if (!info[4].IsUndefined()) gadget = ToU64(info[4], "gadget");
    return [tid, nr, args, gadget](Core& core) -> Value {
      return InjectSyscall(tid, nr, args, gadget, core.PauseFn(), core.vetted());
    };
  });
}

}  // namespace

Napi::Value EnqueueTracerWork(const Napi::CallbackInfo& info,
                              const std::function<TracerWork()>& parse) {
  return Enqueue(info, [&]() -> Work {
    TracerWork work = parse();
    return [work](Core&) -> Value { return work(); };
  });
}

void InitPtrace(Napi::Env env, Napi::Object exports) {
  struct Entry {
    const char* name;
    Napi::Value (*fn)(const Napi::CallbackInfo&);
  };
  const Entry entries[] = {
      {"tracerOpen", TracerOpen},
      {"tracerClose", TracerClose},
      {"tracerSeize", TracerSeize},
      {"tracerInterrupt", TracerInterrupt},
      {"tracerWait", TracerWait},
      {"tracerCont", TracerCont},
      {"tracerDetach", TracerDetach},
      {"tracerGetRegs", TracerGetRegs},
      {"tracerSetRegs", TracerSetRegs},
      {"tracerGetXstate", TracerGetXstate},
      {"tracerSetXstate", TracerSetXstate},
      {"tracerGetSigmask", TracerGetSigmask},
      {"tracerSetSigmask", TracerSetSigmask},
      {"tracerReadMemory", TracerReadMemory},
      {"tracerWriteMemory", TracerWriteMemory},
      {"tracerSyscall", TracerSyscall},
  };
  for (const Entry& e : entries) exports.Set(e.name, Napi::Function::New(env, e.fn, e.name));
}

}  // namespace lazyrestore
