// The page service's fault loop: one std::thread per service, epoll(7) over
// every task's userfaultfd plus an eventfd(2) for commands, resolving faults
// with UFFDIO_COPY / UFFDIO_ZEROPAGE and following UFFD_EVENT_FORK, _REMAP,
// _REMOVE and _UNMAP. Man pages: userfaultfd(2), ioctl_userfaultfd(2),
// epoll_wait(2), eventfd(2), read(2), fcntl(2).
//
// Completion rule: a task is complete (its uffd closed, `complete` emitted)
// at the end of a loop iteration in which it has no lazy page, no parked and
// no retried fault, and once at least one lazy range was declared. Lazy pages
// only go away by faults (the task runs) or background copy (JS enables it),
// so declaring every range before either lets no task complete early.
// Closing our fd unregisters the ranges only if the task holds no uffd fd of
// its own: the restorer must close the task's copy, or faults on non-lazy
// missing pages after completion would wait for a monitor that is gone.
//
// Threading contract:
//  - All per-task lazy state (LazyMap, parked faults, retries, background
//    cursors) is owned and mutated only by the service thread.
//  - JS-thread calls (AddTask, AddLazyRange, ReleaseTask, SetBackground,
//    source notifications, RequestStop) only push a Command under cmd_mu_ and
//    write the eventfd.
//  - Stats() locks tasks_mu_, which the service thread takes only while it
//    inserts or erases a task, and reads counters that are atomics written by
//    the service thread alone (relaxed: they are statistics, not sync).
//  - Events leave through the Emit callback, called on the service thread
//    with a heap Batch it hands over (the N-API layer posts it to a
//    ThreadSafeFunction). This file knows nothing about N-API.
#pragma once

#include <linux/userfaultfd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "page_service_custody.h"
#include "page_service_lazymap.h"
#include "page_service_source.h"

namespace lazyrestore {

enum class EventType : uint8_t {
  kNeed,
  kFork,
  kRemap,
  kRemove,
  kUnmap,
  kComplete,
  kExit,
  kError,
  kSynced
};

// A change of a task's address space, as an event reports it or as a
// successor replays it from the journal.
// kPunch: a hole punched (MADV_REMOVE) through the shared ranges of a task,
// as the service decided it for a REMOVE event; journaled on its own, so
// that a successor replays the decision instead of remaking it.
enum class Change : uint8_t { kRemap, kRemove, kUnmap, kPunch };

struct TaskStats {
  uint32_t task = 0;
  uint32_t parent = 0;  // 0 when none
  uint64_t lazy_pages = 0, faults = 0, pages_copied = 0, pages_zeroed = 0;
  uint64_t fork = 0, remap = 0, remove = 0, unmap = 0;
  int pid = 0;  // the process of the uffd's mm; 0 when unknown (a forked child)
};

// Fault latency buckets: bucket 0 is under 1 µs, bucket i in [2^(i-1), 2^i) µs,
// the last one everything longer.
constexpr int kLatencyBuckets = 24;

// Service-wide totals over every task it has held, gone or not.
struct ServiceTotals {
  uint64_t tasks = 0;
  TaskStats sums;  // task/parent unused; lazy_pages: of the tasks still held
  uint64_t latency_us[kLatencyBuckets] = {};
};

struct ServiceEvent {
  ServiceEvent(EventType type_, uint32_t task_, uint64_t a_ = 0, uint64_t b_ = 0, uint64_t c_ = 0)
      : type(type_), task(task_), a(a_), b(b_), c(c_) {}
  EventType type;
  uint32_t task = 0;
  uint32_t child = 0;  // kFork
  uint64_t a = 0;      // need: address; remap: from; remove/unmap: start; synced: token
  uint64_t b = 0;      // need: origin;  remap: to;   remove/unmap: end
  uint64_t c = 0;      // remap: len; need: id of the source that lacks the page
  uint64_t len = 0;    // need: bytes from origin the fault needs (a huge page: all of it)
  bool write = false;  // need
  bool fatal = false;  // error: the task's memory can no longer be guaranteed
  // complete, exit: the task's final counters.
  bool has_stats = false;
  TaskStats stats;
  int err = 0;  // error
  const char* syscall = "";
  std::string message;
};

struct Batch {
  std::vector<ServiceEvent> events;
  // Whether the service still holds tasks: the N-API layer keeps Node alive
  // only while it does.
  bool active = false;
  // AddTask commands the thread had processed when it built this batch, so
  // an "inactive" batch older than a new AddTask is not mistaken for idle.
  uint64_t adds_seen = 0;
  // The thread's last batch: it has left its loop.
  bool closed = false;
};

class Service : public SourceListener, public std::enable_shared_from_this<Service> {
 public:
  using Emit = std::function<void(Batch*)>;

  // Creates the epoll and eventfd descriptors; throws std::system_error.
  // With `custody`, every task's fd is deposited and its lazy state
  // journaled (page_service_custody.h).
  explicit Service(Emit emit, std::unique_ptr<Custody> custody = nullptr);
  ~Service() override;
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  void Start();
  // JS thread. `fd` must already be a non-blocking uffd; the service owns it.
  // `pid`: the process whose mm the uffd serves (0 when unknown), read in
  // /proc to tell MADV_DONTNEED from MADV_REMOVE on shared ranges. `tag` is
  // journaled with the adoption (JSON text without newlines: who the task
  // is, for a successor).
  // `paused`: not read until Resume(), so that a successor can replay the
  // task's lazy state before meeting the faults and events queued meanwhile.
  uint32_t AddTask(int fd, std::shared_ptr<PageSource> source, int pid, std::string tag = "",
                   bool paused = false);
  bool IssuedTask(uint32_t id) const { return id > 0 && id < next_id_.load(); }
  // JS thread: a shared object of `size` bytes whose data `source` holds by
  // object offset; every page starts lazy. Returns its id.
  // `tag` (one line) is journaled with the object, for a successor to find
  // its data again.
  uint32_t AddSharedObject(std::shared_ptr<PageSource> source, uint64_t size, std::string tag = "");
  bool IssuedObject(uint32_t id) const { return id > 0 && id < next_object_.load(); }
  // `object` 0: a private range with data at origin; else a mapping of that
  // shared object from offset `origin`.
  // `unit`: the kernel page size of the range (4096, or a huge page size for
  // hugetlb memory, which is filled a whole huge page at a time).
  void AddLazyRange(uint32_t task, uint64_t start, uint64_t len, uint64_t origin,
                    uint32_t object = 0, uint64_t unit = kPageSize);
  void ReleaseTask(uint32_t task);
  // Replays a change a predecessor's journal recorded (and journals it again).
  void ApplyChange(uint32_t task, Change change, uint64_t a, uint64_t b, uint64_t c);
  // Starts reading the uffd of a task added paused, then wakes every thread
  // of it waiting on a fault: faults a predecessor read but never resolved
  // are not delivered again; woken, they fault anew.
  void Resume(uint32_t task);
  // Appends a line to the journal in command order.
  void Note(std::string text);
  // Emits a kSynced event with `token` once every command posted before it
  // has been applied (so adoptions are journaled and in custody).
  void Sync(uint64_t token);
  void SetBackground(uint32_t task, bool enabled, uint64_t chunk_bytes);
  std::vector<TaskStats> Stats() const;
  ServiceTotals Totals() const;
  // Asks the thread to leave; it then emits a closed Batch. Idempotent.
  void RequestStop(bool close_uffds);
  void Join();
  void OnSourceChanged(const PageSource* source, uint64_t origin, uint64_t len) override;

  // Result of one resolving ioctl, classified by what the loop does next.
  enum class Outcome { kDone, kExists, kAgain, kNoVma, kGone, kFailed };
  struct IoResult {
    Outcome outcome;
    uint64_t bytes;  // progress the kernel reported
    int err;
  };

 private:
  struct Counter {
    std::atomic<uint64_t> v{0};
    void Add(uint64_t n) {
      v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    void Set(uint64_t n) { v.store(n, std::memory_order_relaxed); }
    uint64_t Get() const { return v.load(std::memory_order_relaxed); }
  };
  enum class State { kLive, kComplete, kExit, kRelease };
  struct Parked {
    uint64_t page;
    bool write;
  };
  // A thread of the task found blocked in madvise(2) while an event was
  // pending (see ScanMadvise).
  struct Madvise {
    uint64_t start, end;
    int advice;
  };
  struct Task {
    uint32_t id = 0;
    uint32_t parent = 0;
    int fd = -1;
    int pid = 0;                    // 0: unknown (a child forked after restore)
    std::vector<Madvise> madvises;  // from the last scan, until the next read
    std::shared_ptr<PageSource> source;
    LazyMap lazy;
    bool ranges_added = false;  // completion waits for the first range
    State state = State::kLive;
    bool touched = false;
    bool paused = false;         // added paused: its uffd is not watched until Resume
    std::vector<Parked> parked;  // faults waiting for data, one per page
    bool background = false;
    uint64_t chunk_pages = 256;
    uint64_t cursor = 0;
    bool bg_idle = false;  // nothing copyable until the source changes
    Counter faults, copied, zeroed, ev_fork, ev_remap, ev_remove, ev_unmap, lazy_pages;
  };
  struct Retry {
    uint32_t task;
    uint64_t page;
    bool write;
    bool need_sent;
  };
  struct Command {
    enum Kind {
      kAddTask,
      kAddObject,
      kAddRange,
      kRelease,
      kBackground,
      kSourceChanged,
      kChange,
      kResume,
      kNote,
      kSync
    };
    explicit Command(Kind k, uint32_t task_ = 0, uint64_t a_ = 0, uint64_t b_ = 0, uint64_t c_ = 0)
        : kind(k), task(task_), a(a_), b(b_), c(c_) {}
    Kind kind;
    uint32_t task = 0;
    int fd = -1;
    std::shared_ptr<PageSource> source;
    const PageSource* changed = nullptr;
    uint64_t a = 0, b = 0, c = 0;
    uint64_t unit = 0;
    uint32_t object = 0;
    int pid = 0;
    bool flag = false;
    Change change = Change::kRemap;
    std::string text;  // kAddTask: tag; kNote: the line
  };
  void Post(Command&& cmd);
  void Run();
  int Timeout() const;
  void DrainCommands();
  void Apply(Command& cmd);
  void AdoptTask(Command& cmd);
  Task* Find(uint32_t id) const;
  Task* FindLive(uint32_t id) const;
  void Touch(Task* t);

  void ServeUffd(Task* t);
  void ScanMadvise(Task* t);
  void OnRemove(Task* t, uint64_t a, uint64_t b);
  void Dispatch(Task* t, const uffd_msg& msg);
  void ChangeLayout(Task* t, Change change, uint64_t a, uint64_t b, uint64_t c);
  void Journal(Task* t, const std::string& line);
  // Adds the task's uffd to the epoll set; false (error event) if it cannot.
  bool Watch(Task* t);
  void OnFault(Task* t, uint64_t page, bool write, bool need_sent);
  void OnHugeFault(Task* t, uint64_t base, uint64_t unit, bool write, bool need_sent);
  void Resolve(Task* t, const Retry& rq, const IoResult& r, bool lazy_page, bool copied,
               uint64_t pages = 1);
  // Gathers [origin, origin+unit) of `source` into huge_buf_; returns false
  // when a page is not in memory yet.
  bool Assemble(const PageSource& source, uint64_t origin, uint64_t unit);
  const uint8_t* ZeroHuge(uint64_t unit);
  void CopyHuge(Task* t, const LazyMap::Hit& hit, uint64_t unit);
  void Park(Task* t, uint64_t page, uint64_t origin, bool write, bool need_sent, uint32_t source);
  void OnFork(Task* t, int ufd);
  void RequeueParked(Task* t, uint64_t a, uint64_t b);
  void RetryParked(const PageSource* source);
  void ProcessRetries();

  static const PageSource& SourceOf(const Task& t, const SharedObject* shared);
  void BackgroundStep();
  bool FindBackgroundRun(Task* t, LazyMap::Hit* hit, PageSource::Lookup* src);
  void CopyRun(Task* t, const LazyMap::Hit& hit, const PageSource::Lookup& src, uint64_t pages);
  void RunPageByPage(Task* t, const LazyMap::Hit& hit, const PageSource::Lookup& src,
                     uint64_t pages);
  void ProbeLiveness();

  IoResult Copy(Task* t, uint64_t dst, const uint8_t* src, uint64_t len);
  IoResult Zero(Task* t, uint64_t dst, uint64_t len, bool dontwake = false);
  void Wake(Task* t, uint64_t page, uint64_t len);
  void Fail(Task* t, int err, const char* syscall, const std::string& what, bool fatal = false);

  static TaskStats StatsOf(const Task& t);
  // Fault latency: from the read of a fault message (read_ns_) to the return
  // of the ioctl that resolved it, for faults resolved at once (not parked).
  void RecordLatency();

  void FinishTasks();
  void Retire(Task* t);
  void Flush(bool closed);
  void Shutdown();

  Emit emit_;
  std::unique_ptr<Custody> custody_;
  int epfd_ = -1;
  int evfd_ = -1;
  std::thread thread_;
  std::atomic<uint32_t> next_id_{1};
  std::atomic<uint32_t> next_object_{1};
  // Service thread: shared objects by id, and whether a page of one was
  // filled or punched since the last FinishTasks (every task mapping it may
  // then be complete).
  std::unordered_map<uint32_t, std::shared_ptr<SharedObject>> objects_;
  bool shared_changed_ = false;
  // Service thread: a huge page gathered from a source's extents (they need
  // not be contiguous), and a zero huge page (hugetlb has no UFFDIO_ZEROPAGE).
  struct FreeDeleter {
    void operator()(uint8_t* p) const { free(p); }
  };
  std::unique_ptr<uint8_t, FreeDeleter> huge_buf_, zero_huge_;
  uint64_t huge_buf_size_ = 0, zero_huge_size_ = 0;

  std::mutex cmd_mu_;  // guards cmds_, stop_, close_uffds_
  std::vector<Command> cmds_;
  bool stop_ = false;
  bool close_uffds_ = false;
  std::atomic<uint64_t> adds_posted_{0};

  // Service-thread state below; tasks_ is also read by Stats under tasks_mu_.
  mutable std::mutex tasks_mu_;
  std::unordered_map<uint32_t, std::unique_ptr<Task>> tasks_;
  TaskStats retired_;  // sums over tasks already erased; under tasks_mu_
  // Written by the service thread alone, read by Totals (relaxed statistics).
  std::atomic<uint64_t> latency_[kLatencyBuckets] = {};
  uint64_t read_ns_ = 0;
  std::vector<uint32_t> touched_;
  std::vector<Retry> retries_;
  bool retry_stalled_ = false;
  std::vector<uint32_t> bg_tasks_;
  size_t bg_next_ = 0;
  std::vector<ServiceEvent> pending_;
  uint64_t adds_seen_ = 0;
  bool was_active_ = false;
  int64_t next_probe_ms_ = 0;
  uffd_msg msgs_[64];
};

}  // namespace lazyrestore
