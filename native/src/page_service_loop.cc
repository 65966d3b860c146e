// The page service's fault loop (see page_service_loop.h for the threading
// contract). Man pages: userfaultfd(2), ioctl_userfaultfd(2), epoll_wait(2),
// epoll_ctl(2), eventfd(2), read(2), fcntl(2), sched_yield(2), madvise(2),
// proc(5) for /proc/<pid>/task/<tid>/syscall.
#include "page_service_loop.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

namespace lazyrestore {

namespace {

// How often idle tasks are checked for a vanished mm. The kernel reports no
// event when the process that owns a uffd exits: the uffd stays readable-
// never and only ioctls start failing with ESRCH.
constexpr int64_t kProbeIntervalMs = 500;
// The probe places a zero page at the highest user page (4-level paging),
// which is harmless: a registered, missing, non-lazy page would read as zero
// anyway, and an unregistered or present one is left alone (ENOENT/EEXIST).
constexpr uint64_t kProbePage = 0x7ffffffff000ULL - kPageSize;

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

std::string Hex(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

Service::Service(Emit emit, std::unique_ptr<Custody> custody)
    : emit_(std::move(emit)), custody_(std::move(custody)) {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  evfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (evfd_ < 0) {
    int err = errno;
    close(epfd_);
    throw std::system_error(err, std::generic_category(), "eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;  // task ids start at 1, so 0 names the eventfd
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev) != 0) {
    int err = errno;
    close(evfd_);
    close(epfd_);
    throw std::system_error(err, std::generic_category(), "epoll_ctl");
  }
}

Service::~Service() {
  if (thread_.joinable()) {
    RequestStop(false);
    thread_.join();
  }
  close(evfd_);
  close(epfd_);
}

void Service::Start() { thread_ = std::thread(&Service::Run, this); }

void Service::Join() {
  if (thread_.joinable()) thread_.join();
}

void Service::Post(Command&& cmd) {
  {
    std::lock_guard lock(cmd_mu_);
    if (stop_) {
      // The thread will not look at the queue again; an adopted fd would leak.
      if (cmd.kind == Command::kAddTask) close(cmd.fd);
      return;
    }
    cmds_.push_back(std::move(cmd));
  }
  uint64_t one = 1;
  // Cannot fail short of a counter overflow, which would still leave it readable.
  (void)!write(evfd_, &one, sizeof one);
}

uint32_t Service::AddTask(int fd, std::shared_ptr<PageSource> source, int pid, std::string tag,
                          bool paused) {
  uint32_t id = next_id_.fetch_add(1);
  source->AddListener(weak_from_this());
  Command cmd(Command::kAddTask);
  cmd.task = id;
  cmd.fd = fd;
  cmd.pid = pid;
  cmd.source = std::move(source);
  cmd.text = std::move(tag);
  cmd.flag = paused;
  Post(std::move(cmd));
  return id;
}

uint32_t Service::AddSharedObject(std::shared_ptr<PageSource> source, uint64_t size,
                                  std::string tag) {
  uint32_t id = next_object_.fetch_add(1);
  source->AddListener(weak_from_this());
  Command cmd(Command::kAddObject);
  cmd.object = id;
  cmd.a = size;
  cmd.text = std::move(tag);
  cmd.source = std::move(source);
  Post(std::move(cmd));
  return id;
}

void Service::AddLazyRange(uint32_t task, uint64_t start, uint64_t len, uint64_t origin,
                           uint32_t object, uint64_t unit) {
  Command cmd(Command::kAddRange, task, start, len, origin);
  cmd.object = object;
  cmd.unit = unit;
  Post(std::move(cmd));
}

void Service::ReleaseTask(uint32_t task) { Post(Command(Command::kRelease, task)); }

void Service::ApplyChange(uint32_t task, Change change, uint64_t a, uint64_t b, uint64_t c) {
  Command cmd(Command::kChange, task, a, b, c);
  cmd.change = change;
  Post(std::move(cmd));
}

void Service::Resume(uint32_t task) { Post(Command(Command::kResume, task)); }

void Service::Note(std::string text) {
  Command cmd(Command::kNote);
  cmd.text = std::move(text);
  Post(std::move(cmd));
}

void Service::Sync(uint64_t token) {
  Command cmd(Command::kSync);
  cmd.a = token;
  Post(std::move(cmd));
}

void Service::SetBackground(uint32_t task, bool enabled, uint64_t chunk_bytes) {
  Command cmd(Command::kBackground);
  cmd.task = task;
  cmd.flag = enabled;
  cmd.a = chunk_bytes;
  Post(std::move(cmd));
}

void Service::OnSourceChanged(const PageSource* source, uint64_t origin, uint64_t len) {
  Command cmd(Command::kSourceChanged);
  cmd.changed = source;
  cmd.a = origin;
  cmd.b = len;
  Post(std::move(cmd));
}

void Service::RequestStop(bool close_uffds) {
  {
    std::lock_guard lock(cmd_mu_);
    if (stop_) return;
    stop_ = true;
    close_uffds_ = close_uffds;
  }
  uint64_t one = 1;
  (void)!write(evfd_, &one, sizeof one);
}

TaskStats Service::StatsOf(const Task& t) {
  return TaskStats{
      t.id,           t.parent,        t.lazy_pages.Get(), t.faults.Get(),    t.copied.Get(),
      t.zeroed.Get(), t.ev_fork.Get(), t.ev_remap.Get(),   t.ev_remove.Get(), t.ev_unmap.Get(),
      t.pid};
}

static void AddInto(TaskStats* sum, const TaskStats& s) {
  sum->lazy_pages += s.lazy_pages;
  sum->faults += s.faults;
  sum->pages_copied += s.pages_copied;
  sum->pages_zeroed += s.pages_zeroed;
  sum->fork += s.fork;
  sum->remap += s.remap;
  sum->remove += s.remove;
  sum->unmap += s.unmap;
}

ServiceTotals Service::Totals() const {
  ServiceTotals out;
  // Every id ever issued is a task the service held (AddTask or a fork).
  out.tasks = next_id_.load() - 1;
  {
    std::lock_guard lock(tasks_mu_);
    out.sums = retired_;
    for (const auto& [id, t] : tasks_) AddInto(&out.sums, StatsOf(*t));
  }
  for (int i = 0; i < kLatencyBuckets; i++)
    out.latency_us[i] = latency_[i].load(std::memory_order_relaxed);
  return out;
}

void Service::RecordLatency() {
  uint64_t us = (NowNs() - read_ns_) / 1000;
  int bucket = us == 0 ? 0 : 64 - __builtin_clzll(us);
  if (bucket >= kLatencyBuckets) bucket = kLatencyBuckets - 1;
  latency_[bucket].store(latency_[bucket].load(std::memory_order_relaxed) + 1,
                         std::memory_order_relaxed);
}

std::vector<TaskStats> Service::Stats() const {
  std::vector<TaskStats> out;
  std::lock_guard lock(tasks_mu_);
  for (const auto& [id, t] : tasks_) out.push_back(StatsOf(*t));
  std::sort(out.begin(), out.end(),
            [](const TaskStats& a, const TaskStats& b) { return a.task < b.task; });
  return out;
}

// ---------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------

void Service::Run() {
  next_probe_ms_ = NowMs() + kProbeIntervalMs;
  epoll_event evs[64];
  bool stop = false;
  while (!stop) {
    int n = epoll_wait(epfd_, evs, 64, Timeout());
    if (n < 0) {
      if (errno == EINTR) continue;
      Fail(nullptr, errno, "epoll_wait", "(page service stopped)");
      break;
    }
    for (int i = 0; i < n; i++) {
      uint64_t id = evs[i].data.u64;
      if (id == 0) {
        uint64_t count;
        (void)!read(evfd_, &count, sizeof count);
        DrainCommands();
        std::lock_guard lock(cmd_mu_);
        stop = stop_;
        continue;
      }
      Task* t = FindLive(static_cast<uint32_t>(id));
      if (t == nullptr) continue;
      ServeUffd(t);
      // A uffd never reports EPOLLERR/EPOLLHUP once it is non-blocking and
      // negotiated; if it does, reading will not clear it, so stop serving.
      if ((evs[i].events & (EPOLLERR | EPOLLHUP)) && t->state == State::kLive) {
        Fail(t, EPROTO, "epoll_wait", "(uffd reported EPOLLERR/EPOLLHUP; task released)");
        t->state = State::kRelease;
        Touch(t);
      }
    }
    if (!retries_.empty()) ProcessRetries();
    if (n == 0 && retries_.empty()) BackgroundStep();
    ProbeLiveness();
    FinishTasks();
    Flush(false);
  }
  Shutdown();
}

int Service::Timeout() const {
  if (!retries_.empty()) return 0;
  for (uint32_t id : bg_tasks_) {
    Task* t = FindLive(id);
    if (t != nullptr && t->background && !t->bg_idle && t->lazy.lazy() > 0) return 0;
  }
  if (tasks_.empty()) return -1;
  return static_cast<int>(std::max<int64_t>(0, next_probe_ms_ - NowMs()));
}

void Service::DrainCommands() {
  std::vector<Command> cmds;
  {
    std::lock_guard lock(cmd_mu_);
    cmds.swap(cmds_);
  }
  for (Command& cmd : cmds) Apply(cmd);
}

void Service::Apply(Command& cmd) {
  if (cmd.kind == Command::kAddTask) return AdoptTask(cmd);
  if (cmd.kind == Command::kSourceChanged) return RetryParked(cmd.changed);
  if (cmd.kind == Command::kNote) {
    if (custody_) Journal(nullptr, "N " + cmd.text);
    return;
  }
  if (cmd.kind == Command::kSync) {
    pending_.emplace_back(EventType::kSynced, 0, cmd.a);
    return;
  }
  if (cmd.kind == Command::kAddObject) {
    if (custody_) {
      Journal(nullptr, "O " + std::to_string(cmd.object) + " " + Hex(cmd.a) + " " + cmd.text);
    }
    objects_[cmd.object] = std::make_shared<SharedObject>(cmd.object, std::move(cmd.source), cmd.a);
    return;
  }
  // Commands for a task that has exited, completed or been released are
  // dropped: JS learns about the first two from events.
  Task* t = FindLive(cmd.task);
  if (t == nullptr) return;
  switch (cmd.kind) {
    case Command::kAddRange: {
      if (custody_) {
        // The object and the page size too: a successor replays the range
        // into the object it recreates from the object's own line (O).
        Journal(t, "R " + std::to_string(t->id) + " " + Hex(cmd.a) + " " + Hex(cmd.b) + " " +
                       Hex(cmd.c) + " " + std::to_string(cmd.object) + " " + Hex(cmd.unit));
      }
      std::shared_ptr<SharedObject> object;
      if (cmd.object != 0) {
        auto it = objects_.find(cmd.object);
        if (it == objects_.end()) {
          Fail(t, EINVAL, "pageServiceAddLazyRange",
               "(unknown shared object " + std::to_string(cmd.object) + "; range not added)");
          break;
        }
        object = it->second;
      }
      t->lazy.Add(cmd.a, cmd.b, cmd.c, std::move(object), cmd.unit);
      t->ranges_added = true;
      t->bg_idle = false;
      break;
    }
    case Command::kRelease:
      t->state = State::kRelease;
      break;
    case Command::kChange:
      ChangeLayout(t, cmd.change, cmd.a, cmd.b, cmd.c);
      break;
    case Command::kResume:
      if (t->paused && !Watch(t)) break;
      t->paused = false;
      // One range over all of user space: UFFDIO_WAKE needs no VMA.
      Wake(t, 0, kProbePage + kPageSize);
      break;
    case Command::kBackground:
      t->background = cmd.flag;
      t->chunk_pages = std::max<uint64_t>(1, cmd.a / kPageSize);
      t->bg_idle = false;
      if (cmd.flag && std::find(bg_tasks_.begin(), bg_tasks_.end(), t->id) == bg_tasks_.end()) {
        bg_tasks_.push_back(t->id);
      }
      break;
    default:
      break;
  }
  Touch(t);
}

void Service::AdoptTask(Command& cmd) {
  adds_seen_++;
  auto t = std::make_unique<Task>();
  t->id = cmd.task;
  t->fd = cmd.fd;
  t->pid = cmd.pid;
  t->source = std::move(cmd.source);
  t->paused = cmd.flag;
  if (!t->paused && !Watch(t.get())) {
    close(t->fd);
    return;
  }
  Task* raw = t.get();
  {
    std::lock_guard lock(tasks_mu_);
    tasks_.emplace(raw->id, std::move(t));
  }
  if (custody_) {
    Journal(raw, "A " + std::to_string(raw->id) + " " + cmd.text);
    if (int err = custody_->Keep(raw->id, raw->fd); err != 0) {
      Fail(raw, err, "sendmsg",
           "(depositing the uffd with its custodian; a daemon crash would lose it)");
    }
  }
  Touch(raw);
}

bool Service::Watch(Task* t) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = t->id;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, t->fd, &ev) == 0) return true;
  ServiceEvent e(EventType::kError, t->id);
  e.err = errno;
  e.syscall = "epoll_ctl";
  e.message = "(adding the uffd of task " + std::to_string(t->id) + "; not served)";
  pending_.push_back(std::move(e));
  return false;
}

void Service::Journal(Task* t, const std::string& line) {
  if (int err = custody_->Journal(line); err != 0) {
    Fail(t, err, "write", "(custody journal; a successor could not resume this task exactly)");
  }
}

Service::Task* Service::Find(uint32_t id) const {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : it->second.get();
}

Service::Task* Service::FindLive(uint32_t id) const {
  Task* t = Find(id);
  return t != nullptr && t->state == State::kLive ? t : nullptr;
}

void Service::Touch(Task* t) {
  if (t->touched) return;
  t->touched = true;
  touched_.push_back(t->id);
}

// ---------------------------------------------------------------------------
// Messages: faults and non-cooperative events
// ---------------------------------------------------------------------------

void Service::ServeUffd(Task* t) {
  for (;;) {
    ScanMadvise(t);
    if (custody_) custody_->Mark(t->id);
    ssize_t r = read(t->fd, msgs_, sizeof msgs_);
    if (r <= 0 && custody_) custody_->Mark(0);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      Fail(t, errno, "read", "(uffd; task released)");
      t->state = State::kRelease;
      Touch(t);
      return;
    }
    if (r == 0) {
      t->state = State::kExit;
      Touch(t);
      return;
    }
    // Events first, in their order, then the faults of the batch. Reading a
    // FORK message lets the forking task finish its fork, after which our
    // copies into the parent succeed again but no longer reach the child
    // (its page tables were copied before): the child's lazy state must be
    // the parent's as of this read, before any copy for these faults. The
    // other events likewise describe the address space the copies will meet.
    // Every message is dispatched even once the task is dead: a FORK message
    // carries a new fd that must still be closed.
    read_ns_ = NowNs();
    size_t n = static_cast<size_t>(r) / sizeof(uffd_msg);
    for (size_t k = 0; k < n; k++) {
      if (msgs_[k].event != UFFD_EVENT_PAGEFAULT) Dispatch(t, msgs_[k]);
    }
    // Every event of this read is journaled (and a child's fd deposited).
    if (custody_) custody_->Mark(0);
    for (size_t k = 0; k < n; k++) {
      if (msgs_[k].event == UFFD_EVENT_PAGEFAULT) Dispatch(t, msgs_[k]);
    }
    if (t->state != State::kLive) return;
  }
}

// MADV_DONTNEED and MADV_REMOVE both raise UFFD_EVENT_REMOVE, with the same
// range and nothing to tell them apart, but on a shared object they differ:
// DONTNEED only drops this task's page table entries (the page cache keeps
// the data, and a page still lazy must still get its image data), REMOVE
// punches a hole in the object (every task then reads zeros there). The
// kernel sends the event before doing either, and the madvising thread waits
// in madvise(2) until the event is read. So, before each read of a uffd whose
// task has lazy shared pages: if an event is pending (UFFDIO_WRITEPROTECT
// fails with EAGAIN while one is, before it looks at the range), the threads
// of the task that sit in madvise(2) are read from /proc/<pid>/task/*/syscall
// ("28 start len advice ..."), and the REMOVE events of that read are matched
// against them. A pending event and no blocked thread is impossible; an
// event queued between the scan and the read (or a task whose pid is unknown)
// leaves a REMOVE over lazy shared pages unmatched: reported as fatal.
void Service::ScanMadvise(Task* t) {
  t->madvises.clear();
  if (t->pid <= 0 || !t->lazy.HasShared() || t->lazy.SharedLazy() == 0) return;
  uffdio_writeprotect wp{};
  wp.range.start = kProbePage;
  wp.range.len = kPageSize;
  wp.mode = 0;
  if (ioctl(t->fd, UFFDIO_WRITEPROTECT, &wp) == 0 || errno != EAGAIN) return;
  const std::string dir = "/proc/" + std::to_string(t->pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* ent = readdir(d)) {
    if (ent->d_name[0] == '.') continue;
    const std::string path = dir + "/" + ent->d_name + "/syscall";
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) continue;
    buf[n] = 0;
    long nr = -1;
    unsigned long long start = 0, len = 0, advice = 0;
    if (sscanf(buf, "%ld 0x%llx 0x%llx 0x%llx", &nr, &start, &len, &advice) != 4) continue;
    if (nr != SYS_madvise) continue;
    const uint64_t end = start + ((len + kPageSize - 1) & ~(kPageSize - 1));
    t->madvises.push_back(Madvise{start, end, static_cast<int>(advice)});
  }
  closedir(d);
}

void Service::OnRemove(Task* t, uint64_t a, uint64_t b) {
  t->lazy.Remove(a, b);  // private ranges: zero from now on, whichever advice
  // Shared pages already filled are right either way (kept, or punched and
  // then served as zero by OnFault); only lazy ones depend on the advice.
  if (t->lazy.SharedLazyIn(a, b) == 0) return;
  // Replayed by a successor (the task is paused until the journal is): the
  // advice was decided when the event came, and a punch journaled after it.
  if (t->paused) return;
  for (const Madvise& m : t->madvises) {
    if (m.start > a || b > m.end) continue;
    if (m.advice == MADV_REMOVE && t->lazy.PartialLazyUnit(a, b)) {
      // hugetlbfs punches a hole in whole huge pages and zeroes the rest of
      // a partly covered one only if it is in the page cache: a lazy huge
      // page would have to get its image data with that part zero.
      return Fail(t, EPROTO, "read",
                  "(UFFD_EVENT_REMOVE of " + Hex(a) + "-" + Hex(b) +
                      ": MADV_REMOVE of part of a huge page of a shared object that is still lazy)",
                  true);
    }
    if (m.advice == MADV_REMOVE) return ChangeLayout(t, Change::kPunch, a, b, 0);
    if (m.advice == MADV_DONTNEED || m.advice == MADV_DONTNEED_LOCKED) return;
  }
  Fail(t, EPROTO, "read",
       "(UFFD_EVENT_REMOVE of " + Hex(a) + "-" + Hex(b) +
           " over lazy pages of a shared object: cannot tell MADV_DONTNEED from MADV_REMOVE" +
           (t->pid <= 0 ? " in a process forked after the restore" : " (the call raced the scan)") +
           ")",
       true);
}

void Service::Dispatch(Task* t, const uffd_msg& msg) {
  if (msg.event == UFFD_EVENT_FORK) return OnFork(t, static_cast<int>(msg.arg.fork.ufd));
  if (t->state != State::kLive) return;
  switch (msg.event) {
    case UFFD_EVENT_PAGEFAULT: {
      bool write = (msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0;
      const uint64_t before = t->faults.Get();
      OnFault(t, msg.arg.pagefault.address & ~(kPageSize - 1), write, false);
      if (t->faults.Get() != before) RecordLatency();
      return;
    }
    case UFFD_EVENT_REMAP:
      t->ev_remap.Add(1);
      pending_.emplace_back(EventType::kRemap, t->id, msg.arg.remap.from, msg.arg.remap.to,
                            msg.arg.remap.len);
      return ChangeLayout(t, Change::kRemap, msg.arg.remap.from, msg.arg.remap.to,
                          msg.arg.remap.len);
    case UFFD_EVENT_REMOVE:
      t->ev_remove.Add(1);
      pending_.emplace_back(EventType::kRemove, t->id, msg.arg.remove.start, msg.arg.remove.end);
      return ChangeLayout(t, Change::kRemove, msg.arg.remove.start, msg.arg.remove.end, 0);
    case UFFD_EVENT_UNMAP:
      t->ev_unmap.Add(1);
      pending_.emplace_back(EventType::kUnmap, t->id, msg.arg.remove.start, msg.arg.remove.end);
      return ChangeLayout(t, Change::kUnmap, msg.arg.remove.start, msg.arg.remove.end, 0);
    default:
      Fail(t, EPROTO, "read", "(unknown uffd event " + std::to_string(msg.event) + ")");
      return;
  }
}

// The lazy state follows the address space; the journal first, so that a
// successor never knows less than the state acted upon.
void Service::ChangeLayout(Task* t, Change change, uint64_t a, uint64_t b, uint64_t c) {
  static const char kCodes[] = {'M', 'X', 'U', 'P'};
  if (custody_) {
    std::string line = std::string(1, kCodes[static_cast<int>(change)]) + " " +
                       std::to_string(t->id) + " " + Hex(a) + " " + Hex(b);
    if (change == Change::kRemap) line += " " + Hex(c);
    Journal(t, line);
  }
  switch (change) {
    case Change::kRemap:
      t->lazy.Move(a, b, c);
      RequeueParked(t, a, a + c);
      break;
    case Change::kRemove:
      OnRemove(t, a, b);
      RequeueParked(t, a, b);
      break;
    case Change::kUnmap:
      t->lazy.Drop(a, b);
      RequeueParked(t, a, b);
      break;
    case Change::kPunch:
      t->lazy.Punch(a, b);
      shared_changed_ = true;
      break;
  }
  Touch(t);
}

// Where a page of a task's range comes from: the shared object it maps, or
// the task's own address space.
const PageSource& Service::SourceOf(const Task& t, const SharedObject* shared) {
  return shared != nullptr ? *shared->source : *t.source;
}

void Service::OnFault(Task* t, uint64_t page, bool write, bool need_sent) {
  const uint64_t unit = t->lazy.UnitAt(page);
  if (unit > kPageSize) return OnHugeFault(t, page & ~(unit - 1), unit, write, need_sent);
  uint64_t origin = 0;
  const SharedObject* shared = nullptr;
  if (!t->lazy.IsLazy(page, &origin, &shared)) {
    // Not lazy: never declared, REMOVE'd, a grown mremap tail, or delivered
    // and faulting again in another thread. Anonymous memory reads zero; so
    // does a shmem page that is missing although no longer lazy (a hole
    // punched by MADV_REMOVE).
    return Resolve(t, Retry{t->id, page, write, need_sent}, Zero(t, page, kPageSize), false, false);
  }
  const PageSource& source = SourceOf(*t, shared);
  PageSource::Lookup src = source.Find(origin);
  switch (src.kind) {
    case PageSource::Kind::kData:
      return Resolve(t, Retry{t->id, page, write, need_sent}, Copy(t, page, src.data, kPageSize),
                     true, true);
    case PageSource::Kind::kZero:
      return Resolve(t, Retry{t->id, page, write, need_sent}, Zero(t, page, kPageSize), true,
                     false);
    case PageSource::Kind::kNone:
      return Park(t, page, origin, write, need_sent, source.id());
  }
}

void Service::Resolve(Task* t, const Retry& rq, const IoResult& r, bool lazy_page, bool copied,
                      uint64_t pages) {
  if (lazy_page && t->lazy.HasShared()) shared_changed_ = true;
  switch (r.outcome) {
    case Outcome::kDone:
      if (lazy_page) t->lazy.Done(rq.page, pages);
      (copied ? t->copied : t->zeroed).Add(pages);
      t->faults.Add(1);
      break;
    case Outcome::kExists:
      // Already there (another thread's fault, or background): the copy did
      // not wake anyone, so wake every waiter on the page.
      if (lazy_page) t->lazy.Done(rq.page, pages);
      Wake(t, rq.page, pages * kPageSize);
      t->faults.Add(1);
      break;
    case Outcome::kAgain:
      // Events are pending (the kernel will not re-deliver this fault): the
      // fault is retried after they have been read and applied.
      retries_.push_back(rq);
      return;
    case Outcome::kNoVma:
      // No registered VMA any more: let the thread fault again and meet the
      // address space as it now is. Forget the page for this task only: in a
      // shared range, clearing the object's bit would tell every other task
      // mapping it that the page is filled.
      if (lazy_page) t->lazy.Drop(rq.page, rq.page + pages * kPageSize);
      Wake(t, rq.page, pages * kPageSize);
      break;
    case Outcome::kGone:
      t->state = State::kExit;
      break;
    case Outcome::kFailed:
      Fail(t, r.err, "ioctl",
           std::string(copied ? "(UFFDIO_COPY" : "(UFFDIO_ZEROPAGE") + " at " + Hex(rq.page) + ")");
      return;
  }
  Touch(t);
}

// Hugetlb: the kernel reports the faulting address, but can only be given a
// whole huge page (UFFDIO_COPY of exactly the huge page size at its aligned
// address; UFFDIO_ZEROPAGE is not supported there, so zero is a copy of a
// zero huge page). The page's data may sit in several extents of the source
// (the store feeds it in windows): it is gathered into one buffer first, and
// the fault waits, with one `need` for the whole huge page, until all of it
// is in memory. A mapping of a shared hugetlb object is served the same way
// from the object's source: a missing fault there means the huge page is
// absent from the object's page cache, and UFFDIO_COPY places it there for
// every mapping (userfaultfd(2); verified on 6.18: another mapping then reads
// it without a fault, and a copy through it fails with EEXIST).
void Service::OnHugeFault(Task* t, uint64_t base, uint64_t unit, bool write, bool need_sent) {
  const Retry rq{t->id, base, write, need_sent};
  const uint64_t pages = unit / kPageSize;
  uint64_t origin = 0;
  const SharedObject* shared = nullptr;
  if (!t->lazy.IsLazy(base, &origin, &shared)) {
    return Resolve(t, rq, Copy(t, base, ZeroHuge(unit), unit), false, false, pages);
  }
  const PageSource& source = SourceOf(*t, shared);
  if (!Assemble(source, origin, unit)) {
    for (const Parked& p : t->parked) {
      if (p.page == base) return;
    }
    t->parked.push_back(Parked{base, write});
    if (need_sent) return;
    ServiceEvent e(EventType::kNeed, t->id, base, origin, source.id());
    e.len = unit;
    e.write = write;
    pending_.push_back(std::move(e));
    return;
  }
  Resolve(t, rq, Copy(t, base, huge_buf_.get(), unit), true, true, pages);
}

bool Service::Assemble(const PageSource& source, uint64_t origin, uint64_t unit) {
  if (huge_buf_size_ < unit) {
    huge_buf_.reset(static_cast<uint8_t*>(aligned_alloc(kPageSize, unit)));
    huge_buf_size_ = huge_buf_ ? unit : 0;
    if (!huge_buf_) return false;
  }
  uint8_t* out = huge_buf_.get();
  for (uint64_t off = 0; off < unit;) {
    PageSource::Lookup src = source.Find(origin + off);
    if (src.kind == PageSource::Kind::kNone) return false;
    const uint64_t n = std::min(unit - off, src.end - (origin + off));
    if (src.kind == PageSource::Kind::kData) {
      memcpy(out + off, src.data, n);
    } else {
      memset(out + off, 0, n);
    }
    off += n;
  }
  return true;
}

const uint8_t* Service::ZeroHuge(uint64_t unit) {
  if (zero_huge_size_ < unit) {
    zero_huge_.reset(static_cast<uint8_t*>(aligned_alloc(kPageSize, unit)));
    zero_huge_size_ = zero_huge_ ? unit : 0;
    if (zero_huge_) memset(zero_huge_.get(), 0, unit);
  }
  return zero_huge_.get();
}

void Service::Park(Task* t, uint64_t page, uint64_t origin, bool write, bool need_sent,
                   uint32_t source) {
  for (const Parked& p : t->parked) {
    if (p.page == page) return;  // another thread on the same page: one need
  }
  t->parked.push_back(Parked{page, write});
  if (need_sent) return;
  ServiceEvent e(EventType::kNeed, t->id, page, origin, source);
  e.write = write;
  pending_.push_back(std::move(e));
}

void Service::OnFork(Task* t, int ufd) {
  if (t->state != State::kLive) {
    close(ufd);
    return;
  }
  // The child's uffd inherits the creator's open flags, which need not
  // include O_NONBLOCK; a blocking uffd reports EPOLLERR to epoll.
  int fl = fcntl(ufd, F_GETFL);
  if (fl < 0 || fcntl(ufd, F_SETFL, fl | O_NONBLOCK) != 0 || fcntl(ufd, F_SETFD, FD_CLOEXEC) != 0) {
    Fail(t, errno, "fcntl", "(uffd of a forked child; child not served)");
    close(ufd);
    return;
  }
  auto child = std::make_unique<Task>();
  child->id = next_id_.fetch_add(1);
  child->parent = t->id;
  child->fd = ufd;
  // The child's pid is not in the event; without it, a REMOVE on its lazy
  // shared pages cannot be told apart (see OnRemove).
  child->pid = 0;
  child->source = t->source;
  child->lazy = t->lazy;  // deep copy: pages missing in the parent are missing in the child
  child->ranges_added = t->ranges_added;
  child->background = t->background;
  child->chunk_pages = t->chunk_pages;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = child->id;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, ufd, &ev) != 0) {
    Fail(t, errno, "epoll_ctl", "(uffd of a forked child; child not served)");
    close(ufd);
    return;
  }
  Task* raw = child.get();
  {
    std::lock_guard lock(tasks_mu_);
    tasks_.emplace(raw->id, std::move(child));
  }
  if (custody_) {
    Journal(raw, "F " + std::to_string(t->id) + " " + std::to_string(raw->id));
    if (int err = custody_->Keep(raw->id, raw->fd); err != 0) {
      Fail(raw, err, "sendmsg", "(depositing a forked child's uffd; a daemon crash would lose it)");
    }
  }
  if (raw->background) bg_tasks_.push_back(raw->id);
  t->ev_fork.Add(1);
  ServiceEvent e(EventType::kFork, t->id);
  e.child = raw->id;
  pending_.push_back(std::move(e));
  Touch(t);
  Touch(raw);
}

// Faults parked on pages an event just changed are re-evaluated against the
// new state: a REMOVE'd page gets a zero page, an unmapped or moved one a
// wake-up (the thread then faults again on the address space as it is).
void Service::RequeueParked(Task* t, uint64_t a, uint64_t b) {
  std::erase_if(t->parked, [&](const Parked& p) {
    if (p.page < a || p.page >= b) return false;
    retries_.push_back(Retry{t->id, p.page, p.write, true});
    return true;
  });
}

void Service::RetryParked(const PageSource* source) {
  for (auto& [id, t] : tasks_) {
    if (t->state != State::kLive) continue;
    if (t->source.get() != source && !t->lazy.UsesSource(source)) continue;
    t->bg_idle = false;
    for (const Parked& p : t->parked) retries_.push_back(Retry{id, p.page, p.write, true});
    t->parked.clear();
  }
}

void Service::ProcessRetries() {
  // EAGAIN can outlive the read of the event that caused it until the task
  // that raised the event runs again (it clears mmap_changing itself); give
  // it the CPU rather than spin.
  if (retry_stalled_) sched_yield();
  std::vector<Retry> list;
  list.swap(retries_);
  // Read what is pending first, so retries see the address space as it is.
  uint32_t last = 0;
  for (const Retry& rq : list) {
    if (rq.task == last) continue;
    last = rq.task;
    if (Task* t = FindLive(rq.task)) ServeUffd(t);
  }
  size_t before = retries_.size();
  for (const Retry& rq : list) {
    if (Task* t = FindLive(rq.task)) OnFault(t, rq.page, rq.write, rq.need_sent);
  }
  retry_stalled_ = retries_.size() - before == list.size();
}

// ---------------------------------------------------------------------------
// Background copy
// ---------------------------------------------------------------------------

void Service::BackgroundStep() {
  const size_t n = bg_tasks_.size();
  for (size_t k = 0; k < n; k++) {
    size_t idx = (bg_next_ + k) % n;
    Task* t = FindLive(bg_tasks_[idx]);
    if (t == nullptr || !t->background || t->bg_idle || t->lazy.lazy() == 0) continue;
    LazyMap::Hit hit;
    PageSource::Lookup src;
    if (!FindBackgroundRun(t, &hit, &src)) {
      t->bg_idle = true;
      continue;
    }
    bg_next_ = idx + 1;
    const uint64_t unit = t->lazy.UnitAt(hit.page);
    if (unit > kPageSize) return CopyHuge(t, hit, unit);
    uint64_t pages =
        t->lazy.RunLength(hit.page, std::min(t->chunk_pages, (src.end - hit.origin) / kPageSize));
    CopyRun(t, hit, src, pages);
    return;
  }
}

// The next lazy page, from the task's cursor round to where it started,
// whose data is in memory or known zero. Holes in the source are skipped
// whole, so a pass costs one lookup per hole, not one per page.
bool Service::FindBackgroundRun(Task* t, LazyMap::Hit* hit, PageSource::Lookup* src) {
  const uint64_t first = t->cursor;
  uint64_t from = first;
  bool wrapped = false;
  for (;;) {
    if (!t->lazy.NextLazy(from, hit)) {
      if (wrapped || first == 0) return false;
      wrapped = true;
      from = 0;
      continue;
    }
    if (wrapped && hit->page >= first) return false;
    const uint64_t unit = t->lazy.UnitAt(hit->page);
    if (unit > kPageSize) {
      // A huge page is copyable only once all of it is in memory.
      const uint64_t base = hit->page & ~(unit - 1);
      const uint64_t origin = hit->origin - (hit->page - base);
      if (Assemble(SourceOf(*t, hit->shared), origin, unit)) {
        hit->page = base;
        hit->origin = origin;
        src->kind = PageSource::Kind::kData;
        src->data = huge_buf_.get();
        src->end = origin + unit;
        return true;
      }
      from = base + unit;
      continue;
    }
    *src = SourceOf(*t, hit->shared).Find(hit->origin);
    if (src->kind != PageSource::Kind::kNone) return true;
    const uint64_t span = hit->range_end - hit->range_start;
    if (src->next == UINT64_MAX || src->next - hit->range_origin >= span) {
      from = hit->range_end;
    } else {
      from = hit->range_start + (src->next - hit->range_origin);
    }
  }
}

void Service::CopyRun(Task* t, const LazyMap::Hit& hit, const PageSource::Lookup& src,
                      uint64_t pages) {
  const bool data = src.kind == PageSource::Kind::kData;
  IoResult r =
      data ? Copy(t, hit.page, src.data, pages * kPageSize) : Zero(t, hit.page, pages * kPageSize);
  const uint64_t done = r.bytes / kPageSize;
  if (done > 0) {
    if (hit.shared != nullptr) shared_changed_ = true;
    t->lazy.Done(hit.page, done);
    (data ? t->copied : t->zeroed).Add(done);
    Touch(t);
  }
  t->cursor = hit.page + done * kPageSize;
  switch (r.outcome) {
    case Outcome::kDone:
      return;
    case Outcome::kAgain:
      // Partial copy or pending events: epoll reports the uffd readable and
      // the next step resumes at the cursor.
      if (done == 0) sched_yield();
      return;
    case Outcome::kExists:
    case Outcome::kNoVma: {
      LazyMap::Hit rest = hit;
      rest.page += done * kPageSize;
      rest.origin += done * kPageSize;
      PageSource::Lookup rest_src = src;
      if (data) rest_src.data += done * kPageSize;
      return RunPageByPage(t, rest, rest_src, pages - done);
    }
    case Outcome::kGone:
      t->state = State::kExit;
      Touch(t);
      return;
    case Outcome::kFailed:
      Fail(t, r.err, "ioctl",
           "(background copy at " + Hex(hit.page) +
               "; background stopped until the source changes)");
      t->bg_idle = true;
      return;
  }
}

// One huge page gathered by FindBackgroundRun (in huge_buf_).
void Service::CopyHuge(Task* t, const LazyMap::Hit& hit, uint64_t unit) {
  const uint64_t pages = unit / kPageSize;
  IoResult r = Copy(t, hit.page, huge_buf_.get(), unit);
  switch (r.outcome) {
    case Outcome::kDone:
      t->copied.Add(pages);
      [[fallthrough]];
    case Outcome::kExists:
      // Placed, or present already (a fault won; in a shared object, the
      // huge page is in its page cache): filled for every mapping.
      if (hit.shared != nullptr) shared_changed_ = true;
      t->lazy.Done(hit.page, pages);
      t->cursor = hit.page + unit;
      Touch(t);
      return;
    case Outcome::kNoVma:
      // No VMA any more: forget the range for this task only (in a shared
      // range the object's bits stay, for the other tasks mapping it).
      t->lazy.Drop(hit.page, hit.page + unit);
      t->cursor = hit.page + unit;
      Touch(t);
      return;
    case Outcome::kAgain:
      sched_yield();
      return;
    case Outcome::kGone:
      t->state = State::kExit;
      Touch(t);
      return;
    case Outcome::kFailed:
      Fail(t, r.err, "ioctl",
           "(background copy of the huge page at " + Hex(hit.page) +
               "; background stopped until the source changes)");
      t->bg_idle = true;
      return;
  }
}

// Inside a run that hit a page already present (EEXIST) or a VMA boundary
// (ENOENT), one page at a time finds out which pages still need data.
void Service::RunPageByPage(Task* t, const LazyMap::Hit& hit, const PageSource::Lookup& src,
                            uint64_t pages) {
  const bool data = src.kind == PageSource::Kind::kData;
  uint64_t dropped = 0;
  for (uint64_t i = 0; i < pages; i++) {
    const uint64_t page = hit.page + i * kPageSize;
    uint64_t origin;
    if (!t->lazy.IsLazy(page, &origin)) continue;
    IoResult r =
        data ? Copy(t, page, src.data + i * kPageSize, kPageSize) : Zero(t, page, kPageSize);
    if (r.outcome == Outcome::kAgain) break;
    if (r.outcome == Outcome::kGone) {
      t->state = State::kExit;
      break;
    }
    if (r.outcome == Outcome::kFailed) {
      Fail(t, r.err, "ioctl", "(background copy at " + Hex(page) + ")");
      t->bg_idle = true;
      break;
    }
    if (hit.shared != nullptr) shared_changed_ = true;
    if (r.outcome == Outcome::kNoVma) {
      t->lazy.Drop(page, page + kPageSize);  // this task's range only, not the object's bit
      dropped++;
    } else {
      t->lazy.Done(page, 1);
    }
    t->cursor = page + kPageSize;
    if (r.outcome == Outcome::kDone) (data ? t->copied : t->zeroed).Add(1);
  }
  Touch(t);
  if (dropped > 0) {
    Fail(t, ENOENT, "ioctl",
         "(background copy: " + std::to_string(dropped) + " lazy page(s) near " + Hex(hit.page) +
             " lie in no registered VMA; they were dropped)");
  }
}

void Service::ProbeLiveness() {
  int64_t now = NowMs();
  if (now < next_probe_ms_) return;
  next_probe_ms_ = now + kProbeIntervalMs;
  for (auto& [id, t] : tasks_) {
    uint64_t origin;
    // Not before the ranges are known: the probe page might be a lazy one.
    if (t->state != State::kLive || t->paused || !t->ranges_added) continue;
    if (t->lazy.IsLazy(kProbePage, &origin)) continue;
    if (Zero(t.get(), kProbePage, kPageSize, true).outcome == Outcome::kGone) {
      t->state = State::kExit;
      Touch(t.get());
    }
  }
}

// ---------------------------------------------------------------------------
// ioctls
// ---------------------------------------------------------------------------

namespace {

Service::IoResult Classify(int err, int64_t progress) {
  uint64_t bytes = progress > 0 ? static_cast<uint64_t>(progress) : 0;
  switch (err) {
    case EEXIST:
      return {Service::Outcome::kExists, bytes, err};
    case EAGAIN:
    case EINTR:
      return {Service::Outcome::kAgain, bytes, err};
    case ENOENT:
      return {Service::Outcome::kNoVma, bytes, err};
    case ESRCH:
    case ENOSPC:
      return {Service::Outcome::kGone, bytes, err};
    default:
      return {Service::Outcome::kFailed, bytes, err};
  }
}

}  // namespace

Service::IoResult Service::Copy(Task* t, uint64_t dst, const uint8_t* src, uint64_t len) {
  uffdio_copy c{};
  c.dst = dst;
  c.src = reinterpret_cast<uintptr_t>(src);
  c.len = len;
  if (ioctl(t->fd, UFFDIO_COPY, &c) == 0) return {Outcome::kDone, len, 0};
  return Classify(errno, c.copy);
}

Service::IoResult Service::Zero(Task* t, uint64_t dst, uint64_t len, bool dontwake) {
  uffdio_zeropage z{};
  z.range.start = dst;
  z.range.len = len;
  z.mode = dontwake ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0;
  if (ioctl(t->fd, UFFDIO_ZEROPAGE, &z) == 0) return {Outcome::kDone, len, 0};
  return Classify(errno, z.zeropage);
}

void Service::Wake(Task* t, uint64_t page, uint64_t len) {
  uffdio_range range{page, len};
  // Only fails for a bad range; there is nothing better to do then.
  (void)ioctl(t->fd, UFFDIO_WAKE, &range);
}

void Service::Fail(Task* t, int err, const char* syscall, const std::string& what, bool fatal) {
  ServiceEvent e(EventType::kError, t != nullptr ? t->id : 0);
  e.err = err;
  e.syscall = syscall;
  e.message = what;
  e.fatal = fatal;
  pending_.push_back(std::move(e));
}

// ---------------------------------------------------------------------------
// Ending tasks and the service
// ---------------------------------------------------------------------------

void Service::FinishTasks() {
  if (shared_changed_) {
    // A page of a shared object was filled or punched: every task mapping
    // one may have become complete (or, for stats, changed its count).
    shared_changed_ = false;
    for (auto& [id, t] : tasks_) {
      if (t->state == State::kLive && t->lazy.HasShared()) Touch(t.get());
    }
  }
  for (uint32_t id : touched_) {
    Task* t = Find(id);
    if (t == nullptr) continue;
    t->touched = false;
    t->lazy_pages.Set(t->lazy.lazy());
    if (t->state == State::kLive && t->ranges_added && t->lazy.lazy() == 0 && t->parked.empty() &&
        std::none_of(retries_.begin(), retries_.end(),
                     [&](const Retry& r) { return r.task == id; })) {
      t->state = State::kComplete;
    }
    if (t->state != State::kLive) Retire(t);
  }
  touched_.clear();
}

// Closing our fd unregisters the task's ranges once no other process holds
// the uffd: its remaining pages then behave as plain anonymous memory.
void Service::Retire(Task* t) {
  const uint32_t id = t->id;
  t->lazy_pages.Set(t->lazy.lazy());
  const TaskStats last = StatsOf(*t);
  if (t->state == State::kComplete || t->state == State::kExit) {
    // The final counters travel with the event: the task is forgotten next.
    ServiceEvent e(t->state == State::kComplete ? EventType::kComplete : EventType::kExit, id);
    e.has_stats = true;
    e.stats = last;
    pending_.push_back(std::move(e));
  }
  epoll_ctl(epfd_, EPOLL_CTL_DEL, t->fd, nullptr);
  if (custody_) {
    // The custodian's copy must go too: a uffd that stays open keeps the
    // ranges registered, and a fault there would wait for nobody.
    Journal(t, "G " + std::to_string(id));
    custody_->Drop(id);
  }
  close(t->fd);
  std::erase(bg_tasks_, id);
  std::erase_if(retries_, [&](const Retry& r) { return r.task == id; });
  std::lock_guard lock(tasks_mu_);
  TaskStats gone = last;
  gone.lazy_pages = 0;  // pages a gone task never received are no longer lazy anywhere
  AddInto(&retired_, gone);
  tasks_.erase(id);
}

void Service::Flush(bool closed) {
  const bool active = !tasks_.empty();
  if (pending_.empty() && active == was_active_ && !closed) return;
  was_active_ = active;
  auto* batch = new Batch;
  batch->events.swap(pending_);
  batch->active = active;
  batch->adds_seen = adds_seen_;
  batch->closed = closed;
  emit_(batch);
}

void Service::Shutdown() {
  bool close_uffds;
  {
    std::lock_guard lock(cmd_mu_);
    close_uffds = close_uffds_;
  }
  // Commands that raced with the stop still own descriptors.
  DrainCommands();
  for (auto& [id, t] : tasks_) {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, t->fd, nullptr);
    if (!close_uffds) continue;
    if (custody_) {
      Journal(t.get(), "G " + std::to_string(id));
      custody_->Drop(id);
    }
    close(t->fd);
  }
  {
    std::lock_guard lock(tasks_mu_);
    for (auto& [id, t] : tasks_) {
      TaskStats gone = StatsOf(*t);
      gone.lazy_pages = 0;
      AddInto(&retired_, gone);
    }
    tasks_.clear();
  }
  retries_.clear();
  bg_tasks_.clear();
  touched_.clear();
  Flush(true);
}

}  // namespace lazyrestore
