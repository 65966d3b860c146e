// Custody of the page service's uffds across a daemon crash or restart.
// Man pages: userfaultfd(2) (closing the last fd of a uffd unregisters its
// ranges, so faults then get zero pages), write(2) (O_APPEND writes of a
// regular file are atomic with respect to each other), mmap(2) (stores to a
// MAP_SHARED page of a tmpfs file outlive the process), unix(7).
//
// While the service runs, three things let a successor take over exactly:
//  - the fd of every task it holds is also deposited with a custodian (the
//    keeper process, or systemd's fd store) under "<prefix>-<task id>";
//  - every change of a task's lazy state (adoption, ranges, fork, remap,
//    remove, hole punch, unmap, gone) and every shared object is appended to
//    a journal, one line per write(2), by the service thread, before the
//    change is acted upon;
//  - a marker word holds the id of the task whose uffd is being read, from
//    just before read(2) until the events that read returned are journaled
//    (and a forked child's fd deposited). A crash inside that window may
//    have consumed an event the journal lacks: the successor must then kill
//    that task rather than guess.
// Page copies are not journaled: a page already in place makes UFFDIO_COPY
// fail with EEXIST, which the service treats as done.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace lazyrestore {

enum class CustodyMode : uint8_t { kKeeper, kSystemd };

struct CustodyConfig {
  int journal_fd = -1;  // O_WRONLY|O_APPEND; owned by the Custody from now on
  int marker_fd = -1;   // a file of at least 8 bytes; mapped, then closed
  int sink_fd = -1;     // connected socket of the custodian; owned
  CustodyMode mode = CustodyMode::kKeeper;
  std::string prefix;  // names of the deposited fds: "<prefix>-<id>"
};

class Custody {
 public:
  // Maps the marker; throws std::system_error. Takes the fds in `config`.
  explicit Custody(const CustodyConfig& config);
  ~Custody();
  Custody(const Custody&) = delete;
  Custody& operator=(const Custody&) = delete;

  // Service thread only. Each returns 0 or an errno value.
  int Journal(const std::string& line);
  int Keep(uint32_t id, int fd);
  int Drop(uint32_t id);
  void Mark(uint32_t id) { marker_->store(id, std::memory_order_release); }

 private:
  std::string Name(uint32_t id) const;
  CustodyConfig config_;
  std::atomic<uint64_t>* marker_ = nullptr;
};

}  // namespace lazyrestore
