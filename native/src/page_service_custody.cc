// Custody of uffds (see page_service_custody.h). Man pages: write(2),
// mmap(2), munmap(2), sd_notify(3) (FDSTORE=1, FDSTOREREMOVE=1, FDNAME=).
#include "page_service_custody.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "custody.h"

namespace lazyrestore {

Custody::Custody(const CustodyConfig& config) : config_(config) {
  void* p =
      mmap(nullptr, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, config.marker_fd, 0);
  int err = errno;
  close(config_.marker_fd);
  config_.marker_fd = -1;
  if (p == MAP_FAILED) {
    close(config_.journal_fd);
    close(config_.sink_fd);
    throw std::system_error(err, std::generic_category(), "mmap");
  }
  marker_ = static_cast<std::atomic<uint64_t>*>(p);
  marker_->store(0, std::memory_order_release);
}

Custody::~Custody() {
  munmap(marker_, sizeof(uint64_t));
  close(config_.journal_fd);
  close(config_.sink_fd);
}

std::string Custody::Name(uint32_t id) const { return config_.prefix + "-" + std::to_string(id); }

int Custody::Journal(const std::string& line) {
  const std::string rec = line + "\n";
  for (;;) {
    ssize_t n = write(config_.journal_fd, rec.data(), rec.size());
    if (n == static_cast<ssize_t>(rec.size())) return 0;
    if (n >= 0) return EIO;  // tmpfs full: a torn line is refused by the reader
    if (errno != EINTR) return errno;
  }
}

int Custody::Keep(uint32_t id, int fd) {
  if (config_.mode == CustodyMode::kSystemd) {
    return SendWithFd(config_.sink_fd, "FDSTORE=1\nFDNAME=" + Name(id), fd);
  }
  return SendWithFd(config_.sink_fd, "KEEP " + Name(id), fd);
}

int Custody::Drop(uint32_t id) {
  if (config_.mode == CustodyMode::kSystemd) {
    return SendWithFd(config_.sink_fd, "FDSTOREREMOVE=1\nFDNAME=" + Name(id), -1);
  }
  return SendWithFd(config_.sink_fd, "DROP " + Name(id), -1);
}

}  // namespace lazyrestore
