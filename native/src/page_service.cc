// The page service and page sources as flat JS functions (the N-API side of
// page_service_loop.cc). Man pages: userfaultfd(2), ioctl_userfaultfd(2),
// fcntl(2), readlink(2), proc(5) for /proc/self/fd.
//
// Ownership: a ServiceBinding holds the Service and its ThreadSafeFunction.
// It is shared by the JS handle (External finalizer), the TSFN (its context,
// freed by the TSFN finalizer) and the environment cleanup hook (until it is
// removed). All of its fields are touched on the JS thread only; the
// service thread talks to it solely through TSFN calls.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <memory>
#include <system_error>

#include "errors.h"
#include "facilities.h"
#include "page_service_loop.h"
#include "page_service_source.h"

namespace lazyrestore {

namespace {

constexpr napi_type_tag kServiceTag = {0x6c617a7972657374ULL, 0x7061676573766331ULL};
constexpr napi_type_tag kSourceTag = {0x6c617a7972657374ULL, 0x70616765737263a1ULL};

struct ServiceBinding;
using BindingRef = std::shared_ptr<ServiceBinding>;
void CallJs(Napi::Env env, Napi::Function callback, BindingRef* context, Batch* batch);
using Tsfn = Napi::TypedThreadSafeFunction<BindingRef, Batch, CallJs>;

struct ServiceBinding {
  napi_env env = nullptr;
  std::shared_ptr<Service> service;
  Tsfn tsfn;
  Napi::Env::CleanupHook<std::function<void()>> hook;
  bool hook_live = false;
  bool closing = false;  // close() was called; its promise is pending
  bool joined = false;
  bool released = false;
  bool refed = false;
  uint64_t adds_issued = 0;
  std::unique_ptr<Napi::Promise::Deferred> deferred;

  bool Open() const { return !closing && !joined; }

  void Ref() {
    if (refed || released) return;
    tsfn.Ref(env);
    refed = true;
  }
  void Unref() {
    if (!refed || released) return;
    tsfn.Unref(env);
    refed = false;
  }

  // Stops and joins the thread, then lets the TSFN go. Safe to call more than
  // once; `from_hook` when the environment is being torn down (the hook is
  // then running and must not be removed).
  void Shutdown(bool from_hook) {
    if (!joined) {
      service->RequestStop(false);
      service->Join();
      joined = true;
    }
    Unref();
    if (!released) {
      released = true;
      tsfn.Release();
    }
    if (hook_live && !from_hook) hook.Remove(env);
    hook_live = false;
  }

  // The service thread's last batch arrived: the thread has left its loop.
  void FinishClose() {
    if (!joined) {
      service->Join();
      joined = true;
    }
    if (deferred) {
      deferred->Resolve(Napi::Env(env).Undefined());
      deferred.reset();
    }
    Shutdown(false);
  }

  // Keep Node alive only while the service holds tasks. A batch built before
  // the thread saw the latest AddTask must not unref.
  void UpdateRef(const Batch& batch) {
    if (closing || joined) return;
    if (batch.active) {
      Ref();
    } else if (batch.adds_seen == adds_issued) {
      Unref();
    }
  }
};

Napi::Object StatsToJs(Napi::Env env, const TaskStats& s) {
  auto num = [&](uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); };
  Napi::Object o = Napi::Object::New(env);
  o.Set("task", num(s.task));
  o.Set("parent", s.parent != 0 ? Napi::Value(num(s.parent)) : env.Null());
  o.Set("pid", s.pid > 0 ? Napi::Value(num(static_cast<uint64_t>(s.pid))) : env.Null());
  o.Set("lazyPages", num(s.lazy_pages));
  o.Set("faults", num(s.faults));
  o.Set("pagesCopied", num(s.pages_copied));
  o.Set("pagesZeroed", num(s.pages_zeroed));
  Napi::Object ev = Napi::Object::New(env);
  ev.Set("fork", num(s.fork));
  ev.Set("remap", num(s.remap));
  ev.Set("remove", num(s.remove));
  ev.Set("unmap", num(s.unmap));
  o.Set("events", ev);
  return o;
}

Napi::Object ToJs(Napi::Env env, const ServiceEvent& e) {
  static const char* const kTypes[] = {"need",     "fork", "remap", "remove", "unmap",
                                       "complete", "exit", "error", "synced"};
  Napi::Object o = Napi::Object::New(env);
  o.Set("type", kTypes[static_cast<int>(e.type)]);
  o.Set("task", Napi::Number::New(env, e.task));
  auto num = [&](uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); };
  switch (e.type) {
    case EventType::kNeed:
      o.Set("address", num(e.a));
      o.Set("origin", num(e.b));
      o.Set("source", num(e.c));
      o.Set("len", num(e.len != 0 ? e.len : kPageSize));
      o.Set("write", Napi::Boolean::New(env, e.write));
      break;
    case EventType::kFork:
      o.Set("child", Napi::Number::New(env, e.child));
      break;
    case EventType::kRemap:
      o.Set("from", num(e.a));
      o.Set("to", num(e.b));
      o.Set("len", num(e.c));
      break;
    case EventType::kRemove:
    case EventType::kUnmap:
      o.Set("start", num(e.a));
      o.Set("end", num(e.b));
      break;
    case EventType::kSynced:
      o.Set("token", num(e.a));
      break;
    case EventType::kComplete:
    case EventType::kExit:
      if (e.has_stats) o.Set("stats", StatsToJs(env, e.stats));
      break;
    case EventType::kError: {
      std::string code = ErrnoName(e.err);
      o.Set("code", code);
      o.Set("errno", Napi::Number::New(env, -e.err));
      o.Set("syscall", e.syscall);
      o.Set("fatal", Napi::Boolean::New(env, e.fatal));
      o.Set("message", code + ": " + strerror(e.err) + ", " + e.syscall + " " + e.message);
      break;
    }
    default:
      break;
  }
  return o;
}

void CallJs(Napi::Env env, Napi::Function callback, BindingRef* context, Batch* batch) {
  std::unique_ptr<Batch> owned(batch);
  if (env == nullptr || context == nullptr || batch == nullptr) return;  // TSFN torn down
  ServiceBinding& b = **context;
  // Bookkeeping first: if the JS callback throws, the close still completes.
  if (batch->closed) {
    b.FinishClose();
  } else {
    b.UpdateRef(*batch);
  }
  if (batch->events.empty() || callback.IsEmpty()) return;
  Napi::Array arr = Napi::Array::New(env, batch->events.size());
  for (size_t i = 0; i < batch->events.size(); i++)
    arr.Set(static_cast<uint32_t>(i), ToJs(env, batch->events[i]));
  callback.Call({arr});
}

BindingRef& UnwrapService(const Napi::Value& v) {
  if (!v.IsExternal() || !v.As<Napi::External<BindingRef>>().CheckTypeTag(&kServiceTag)) {
    throw Napi::TypeError::New(v.Env(), "expected a PageServiceHandle");
  }
  return *v.As<Napi::External<BindingRef>>().Data();
}

ServiceBinding& OpenService(const Napi::Value& v) {
  ServiceBinding& b = *UnwrapService(v);
  if (!b.Open()) throw Napi::Error::New(v.Env(), "page service is closed");
  return b;
}

std::shared_ptr<PageSource>& UnwrapSource(const Napi::Value& v) {
  if (!v.IsExternal() ||
      !v.As<Napi::External<std::shared_ptr<PageSource>>>().CheckTypeTag(&kSourceTag)) {
    throw Napi::TypeError::New(v.Env(), "expected a PageSourceHandle");
  }
  return *v.As<Napi::External<std::shared_ptr<PageSource>>>().Data();
}

uint64_t ToPageAligned(const Napi::Value& v, const char* what) {
  uint64_t x = ToU64(v, what);
  if (x % kPageSize != 0)
    throw Napi::RangeError::New(v.Env(), std::string(what) + " must be a multiple of 4096");
  return x;
}

uint32_t ToTask(const Service& s, const Napi::Value& v) {
  uint64_t id = ToU64(v, "task");
  if (id > UINT32_MAX || !s.IssuedTask(static_cast<uint32_t>(id))) {
    throw Napi::RangeError::New(v.Env(), "unknown task id " + std::to_string(id));
  }
  return static_cast<uint32_t>(id);
}

int FdField(const Napi::Object& o, const char* name) {
  uint64_t fd = ToU64(o.Get(name), name);
  if (fd > INT32_MAX) throw Napi::RangeError::New(o.Env(), std::string(name) + " out of range");
  return static_cast<int>(fd);
}

// { journalFd, markerFd, sinkFd, mode: 'keeper' | 'systemd', prefix }; the
// fds pass to the service (closed by it, also when this throws later on).
std::unique_ptr<Custody> CustodyFromJs(const Napi::Value& v) {
  Napi::Env env = v.Env();
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  if (!v.IsObject()) throw Napi::TypeError::New(env, "custody must be an object");
  Napi::Object o = v.As<Napi::Object>();
  CustodyConfig c;
  std::string mode = o.Get("mode").IsString() ? o.Get("mode").As<Napi::String>().Utf8Value() : "";
  if (mode != "keeper" && mode != "systemd") {
    throw Napi::TypeError::New(env, "custody.mode must be 'keeper' or 'systemd'");
  }
  c.mode = mode == "systemd" ? CustodyMode::kSystemd : CustodyMode::kKeeper;
  if (!o.Get("prefix").IsString())
    throw Napi::TypeError::New(env, "custody.prefix must be a string");
  c.prefix = o.Get("prefix").As<Napi::String>().Utf8Value();
  c.journal_fd = FdField(o, "journalFd");
  c.marker_fd = FdField(o, "markerFd");
  c.sink_fd = FdField(o, "sinkFd");
  try {
    return std::make_unique<Custody>(c);
  } catch (const std::system_error& e) {
    ThrowSystemError(env, e.code().value(), "mmap", "(custody marker)");
  }
}

Napi::Value PageServiceOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "onEvents must be a function");
  std::unique_ptr<Custody> custody = CustodyFromJs(info[1]);
  auto b = std::make_shared<ServiceBinding>();
  b->env = env;
  b->tsfn = Tsfn::New(
      env, info[0].As<Napi::Function>(), "lazyrestore.pageService", 0, 1, new BindingRef(b),
      [](Napi::Env, void*, BindingRef* ctx) { delete ctx; }, static_cast<void*>(nullptr));
  b->tsfn.Unref(env);  // idle until the first task
  Tsfn tsfn = b->tsfn;
  try {
    b->service = std::make_shared<Service>(
        [tsfn](Batch* batch) {
          // Unbounded queue: NonBlockingCall fails only once the TSFN is closing.
          if (tsfn.NonBlockingCall(batch) != napi_ok) delete batch;
        },
        std::move(custody));
  } catch (const std::system_error& e) {
    b->released = true;
    b->tsfn.Release();
    // what() is "<syscall>: <description>".
    std::string syscall(e.what());
    ThrowSystemError(env, e.code().value(), syscall.substr(0, syscall.find(':')).c_str());
  }
  b->service->Start();
  // Environment teardown (worker exit, process exit) must not leave the
  // thread running against a dead env; the hook keeps the binding alive.
  b->hook = env.AddCleanupHook(std::function<void()>([b]() { b->Shutdown(true); }));
  b->hook_live = true;
  auto handle =
      Napi::External<BindingRef>::New(env, new BindingRef(b), [](Napi::Env, BindingRef* ref) {
        // Collected without close(): stop the thread now. The uffds stay open
        // (closing them would turn lazy pages into zero pages).
        if ((*ref)->Open()) (*ref)->Shutdown(false);
        delete ref;
      });
  handle.TypeTag(&kServiceTag);
  return handle;
}

// The service must be able to poll and own the fd: it has to be a uffd,
// non-blocking (a blocking uffd reports EPOLLERR) and close-on-exec.
void PrepareUffd(Napi::Env env, int fd) {
  char link[64] = {0};
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = readlink(path.c_str(), link, sizeof link - 1);
  if (n < 0) ThrowSystemError(env, errno == ENOENT ? EBADF : errno, "readlink", path);
  if (strcmp(link, "anon_inode:[userfaultfd]") != 0) {
    ThrowSystemError(env, EINVAL, "pageServiceAddTask",
                     "(fd " + std::to_string(fd) + " is not a userfaultfd)");
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    ThrowSystemError(env, errno, "fcntl");
  }
}

// A journal tag: one line of text, or empty when not given.
std::string ToTag(const Napi::Value& v) {
  if (!v.IsString()) return "";
  std::string tag = v.As<Napi::String>().Utf8Value();
  if (tag.find('\n') != std::string::npos) {
    throw Napi::RangeError::New(v.Env(), "tag must not contain a newline");
  }
  return tag;
}

Napi::Value PageServiceAddTask(const Napi::CallbackInfo& info) {
  ServiceBinding& b = OpenService(info[0]);
  uint64_t fd = ToU64(info[1], "uffd");
  if (fd > INT32_MAX) throw Napi::RangeError::New(info.Env(), "uffd out of range");
  std::shared_ptr<PageSource> source = UnwrapSource(info[2]);
  uint64_t pid = info[3].IsUndefined() ? 0 : ToU64(info[3], "pid");
  if (pid > INT32_MAX) throw Napi::RangeError::New(info.Env(), "pid out of range");
  std::string tag = ToTag(info[4]);
  if (!info[5].IsUndefined() && !info[5].IsBoolean()) {
    throw Napi::TypeError::New(info.Env(), "paused must be a boolean");
  }
  bool paused = info[5].IsBoolean() && info[5].As<Napi::Boolean>().Value();
  PrepareUffd(info.Env(), static_cast<int>(fd));
  b.adds_issued++;
  b.Ref();
  return Napi::Number::New(info.Env(), b.service->AddTask(static_cast<int>(fd), std::move(source),
                                                          static_cast<int>(pid), tag, paused));
}

Napi::Value PageServiceAddSharedObject(const Napi::CallbackInfo& info) {
  ServiceBinding& b = OpenService(info[0]);
  std::shared_ptr<PageSource> source = UnwrapSource(info[1]);
  uint64_t size = ToPageAligned(info[2], "size");
  if (size == 0) throw Napi::RangeError::New(info.Env(), "size must not be 0");
  return Napi::Number::New(info.Env(),
                           b.service->AddSharedObject(std::move(source), size, ToTag(info[3])));
}

Napi::Value PageServiceApplyChange(const Napi::CallbackInfo& info) {
  ServiceBinding& b = OpenService(info[0]);
  uint32_t task = ToTask(*b.service, info[1]);
  std::string kind = info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
  Change change;
  if (kind == "remap") {
    change = Change::kRemap;
  } else if (kind == "remove") {
    change = Change::kRemove;
  } else if (kind == "unmap") {
    change = Change::kUnmap;
  } else if (kind == "punch") {
    change = Change::kPunch;
  } else {
    throw Napi::TypeError::New(info.Env(), "kind must be 'remap', 'remove', 'unmap' or 'punch'");
  }
  uint64_t a = ToPageAligned(info[3], "a");
  uint64_t c2 = ToPageAligned(info[4], "b");
  uint64_t c3 = change == Change::kRemap ? ToPageAligned(info[5], "len") : 0;
  b.service->ApplyChange(task, change, a, c2, c3);
  return info.Env().Undefined();
}

Napi::Value PageServiceResume(const Napi::CallbackInfo& info) {
  ServiceBinding& b = OpenService(info[0]);
  b.service->Resume(ToTask(*b.service, info[1]));
  return info.Env().Undefined();
}

Napi::Value PageServiceNote(const Napi::CallbackInfo& info) {
  ServiceBinding& b = OpenService(info[0]);
  if (!info[1].IsString()) throw Napi::TypeError::New(info.Env(), "text must be a string");
  std::string text = info[1].As<Napi::String>().Utf8Value();
  if (text.find('\n') != std::string::npos) {
    throw Napi::RangeError::New(info.Env(), "text must not contain a newline");
  }
  b.service->Note(std::move(text));
  return info.Env().Undefined();
}

Napi::Value PageServiceSync(const Napi::CallbackInfo& info) {
  ServiceBinding& b = OpenService(info[0]);
  b.service->Sync(ToU64(info[1], "token"));
  return info.Env().Undefined();
}

Napi::Value PageServiceAddLazyRange(const Napi::CallbackInfo& info) {
  ServiceBinding& b = OpenService(info[0]);
  uint32_t task = ToTask(*b.service, info[1]);
  uint64_t start = ToPageAligned(info[2], "start");
  uint64_t len = ToPageAligned(info[3], "len");
  uint64_t origin = ToPageAligned(info[4], "origin");
  if (len == 0) throw Napi::RangeError::New(info.Env(), "len must not be 0");
  uint64_t object = info[5].IsUndefined() ? 0 : ToU64(info[5], "object");
  uint64_t unit = info[6].IsUndefined() ? kPageSize : ToPageAligned(info[6], "unit");
  if (unit == 0 || (unit & (unit - 1)) != 0 || start % unit != 0 || len % unit != 0 ||
      origin % unit != 0)
    throw Napi::RangeError::New(info.Env(),
                                "unit must be a power of two that start, len and origin are "
                                "multiples of");
  if (object != 0 &&
      (object > UINT32_MAX || !b.service->IssuedObject(static_cast<uint32_t>(object))))
    throw Napi::RangeError::New(info.Env(), "unknown shared object " + std::to_string(object));
  b.service->AddLazyRange(task, start, len, origin, static_cast<uint32_t>(object), unit);
  return info.Env().Undefined();
}

Napi::Value PageServiceReleaseTask(const Napi::CallbackInfo& info) {
  ServiceBinding& b = OpenService(info[0]);
  b.service->ReleaseTask(ToTask(*b.service, info[1]));
  return info.Env().Undefined();
}

Napi::Value PageServiceSetBackground(const Napi::CallbackInfo& info) {
  ServiceBinding& b = OpenService(info[0]);
  uint32_t task = ToTask(*b.service, info[1]);
  if (!info[2].IsBoolean()) throw Napi::TypeError::New(info.Env(), "enabled must be a boolean");
  uint64_t chunk = ToPageAligned(info[3], "chunkBytes");
  if (chunk == 0) throw Napi::RangeError::New(info.Env(), "chunkBytes must be at least 4096");
  b.service->SetBackground(task, info[2].As<Napi::Boolean>().Value(), chunk);
  return info.Env().Undefined();
}

Napi::Value PageServiceStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ServiceBinding& b = *UnwrapService(info[0]);
  std::vector<TaskStats> stats = b.service->Stats();
  Napi::Array arr = Napi::Array::New(env, stats.size());
  for (size_t i = 0; i < stats.size(); i++)
    arr.Set(static_cast<uint32_t>(i), StatsToJs(env, stats[i]));
  return arr;
}

Napi::Value PageServiceTotals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ServiceBinding& b = *UnwrapService(info[0]);
  ServiceTotals t = b.service->Totals();
  auto num = [&](uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); };
  Napi::Object o = Napi::Object::New(env);
  o.Set("tasks", num(t.tasks));
  o.Set("lazyPages", num(t.sums.lazy_pages));
  o.Set("faults", num(t.sums.faults));
  o.Set("pagesCopied", num(t.sums.pages_copied));
  o.Set("pagesZeroed", num(t.sums.pages_zeroed));
  Napi::Object ev = Napi::Object::New(env);
  ev.Set("fork", num(t.sums.fork));
  ev.Set("remap", num(t.sums.remap));
  ev.Set("remove", num(t.sums.remove));
  ev.Set("unmap", num(t.sums.unmap));
  o.Set("events", ev);
  Napi::Array hist = Napi::Array::New(env, kLatencyBuckets);
  for (int i = 0; i < kLatencyBuckets; i++)
    hist.Set(static_cast<uint32_t>(i), num(t.latency_us[i]));
  o.Set("faultLatencyUs", hist);
  return o;
}

Napi::Value PageServiceClose(const Napi::CallbackInfo& info) {
  ServiceBinding& b = OpenService(info[0]);
  if (!info[1].IsBoolean()) throw Napi::TypeError::New(info.Env(), "closeUffds must be a boolean");
  b.closing = true;
  b.deferred = std::make_unique<Napi::Promise::Deferred>(info.Env());
  b.Ref();  // a pending promise alone does not keep Node alive
  b.service->RequestStop(info[1].As<Napi::Boolean>().Value());
  return b.deferred->Promise();
}

Napi::Value PageSourceCreate(const Napi::CallbackInfo& info) {
  auto* holder = new std::shared_ptr<PageSource>(std::make_shared<PageSource>());
  auto handle = Napi::External<std::shared_ptr<PageSource>>::New(
      info.Env(), holder, [](Napi::Env, std::shared_ptr<PageSource>* h) { delete h; });
  handle.TypeTag(&kSourceTag);
  return handle;
}

Napi::Value PageSourceProvide(const Napi::CallbackInfo& info) {
  std::shared_ptr<PageSource>& src = UnwrapSource(info[0]);
  uint64_t origin = ToPageAligned(info[1], "origin");
  if (!info[2].IsBuffer()) throw Napi::TypeError::New(info.Env(), "data must be a Buffer");
  auto data = info[2].As<Napi::Buffer<uint8_t>>();
  if (data.Length() % kPageSize != 0) {
    throw Napi::RangeError::New(info.Env(), "data length must be a multiple of 4096");
  }
  src->Provide(origin, data.Data(), data.Length());
  return info.Env().Undefined();
}

Napi::Value PageSourceMarkZero(const Napi::CallbackInfo& info) {
  std::shared_ptr<PageSource>& src = UnwrapSource(info[0]);
  uint64_t origin = ToPageAligned(info[1], "origin");
  uint64_t len = ToPageAligned(info[2], "len");
  src->MarkZero(origin, len);
  return info.Env().Undefined();
}

Napi::Value PageSourceBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(UnwrapSource(info[0])->Bytes()));
}

Napi::Value PageSourceId(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), UnwrapSource(info[0])->id());
}

}  // namespace

void InitPageService(Napi::Env env, Napi::Object exports) {
  exports.Set("pageServiceOpen", Napi::Function::New(env, PageServiceOpen, "pageServiceOpen"));
  exports.Set("pageServiceAddTask",
              Napi::Function::New(env, PageServiceAddTask, "pageServiceAddTask"));
  exports.Set("pageServiceAddLazyRange",
              Napi::Function::New(env, PageServiceAddLazyRange, "pageServiceAddLazyRange"));
  exports.Set("pageServiceReleaseTask",
              Napi::Function::New(env, PageServiceReleaseTask, "pageServiceReleaseTask"));
  exports.Set("pageServiceSetBackground",
              Napi::Function::New(env, PageServiceSetBackground, "pageServiceSetBackground"));
  exports.Set("pageServiceApplyChange",
              Napi::Function::New(env, PageServiceApplyChange, "pageServiceApplyChange"));
  exports.Set("pageServiceResume",
              Napi::Function::New(env, PageServiceResume, "pageServiceResume"));
  exports.Set("pageServiceNote", Napi::Function::New(env, PageServiceNote, "pageServiceNote"));
  exports.Set("pageServiceSync", Napi::Function::New(env, PageServiceSync, "pageServiceSync"));
  exports.Set("pageServiceStats", Napi::Function::New(env, PageServiceStats, "pageServiceStats"));
  exports.Set("pageServiceTotals",
              Napi::Function::New(env, PageServiceTotals, "pageServiceTotals"));
  exports.Set("pageServiceClose", Napi::Function::New(env, PageServiceClose, "pageServiceClose"));
  exports.Set("pageSourceCreate", Napi::Function::New(env, PageSourceCreate, "pageSourceCreate"));
  exports.Set("pageSourceProvide",
              Napi::Function::New(env, PageSourceProvide, "pageSourceProvide"));
  exports.Set("pageSourceMarkZero",
              Napi::Function::New(env, PageSourceMarkZero, "pageSourceMarkZero"));
  exports.Set("pageSourceBytes", Napi::Function::New(env, PageSourceBytes, "pageSourceBytes"));
  exports.Set("pageSourceId", Napi::Function::New(env, PageSourceId, "pageSourceId"));
  exports.Set("pageServiceAddSharedObject",
              Napi::Function::New(env, PageServiceAddSharedObject, "pageServiceAddSharedObject"));
}

}  // namespace lazyrestore
