// PageSource: in-memory page data of one dumped address space, keyed by the
// address each page had at dump time ("origin"). No kernel interface of its
// own; it feeds UFFDIO_COPY in page_service_loop.cc (ioctl_userfaultfd(2)).
//
// Threading: the JS thread writes (Provide, MarkZero); page service threads
// read (Find) concurrently. Page data of a dumped image is immutable, so an
// extent is never changed or freed once inserted: a reader may keep using
// the pointer Find returned for as long as it holds the source (shared_ptr)
// without holding the lock. Providing a page again is a no-op.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <vector>

namespace lazyrestore {

constexpr uint64_t kPageSize = 4096;

class PageSource;

// Told when a source gained data or zero ranges, so parked faults can be
// retried. Called on the JS thread that provided the data.
class SourceListener {
 public:
  virtual ~SourceListener() = default;
  virtual void OnSourceChanged(const PageSource* source, uint64_t origin, uint64_t len) = 0;
};

class PageSource {
 public:
  enum class Kind { kNone, kData, kZero };
  struct Lookup {
    Kind kind = Kind::kNone;
    // kData: the bytes of `origin`, valid while the source lives.
    const uint8_t* data = nullptr;
    // kData/kZero: end (exclusive) of the contiguous piece that holds origin.
    uint64_t end = 0;
    // kNone: the next origin above the asked one that has data or is zero
    // (UINT64_MAX when there is none), so scans can skip holes.
    uint64_t next = 0;
  };

  PageSource();
  // Process-wide unique, so a `need` event can say which source lacks a page.
  uint32_t id() const { return id_; }

  // Copies `len` bytes (page multiple, page-aligned origin) into the source.
  // Pages already held keep their first data.
  void Provide(uint64_t origin, const uint8_t* data, uint64_t len);
  void MarkZero(uint64_t origin, uint64_t len);
  uint64_t Bytes() const;
  Lookup Find(uint64_t origin) const;

  void AddListener(const std::weak_ptr<SourceListener>& listener);

 private:
  struct Extent {
    uint64_t end;
    const uint8_t* data;
  };
  void Notify(uint64_t origin, uint64_t len);
  uint64_t InsertGaps(uint64_t origin, uint64_t len, const uint8_t* block);

  const uint32_t id_;
  mutable std::shared_mutex mu_;                    // guards extents_, zeros_, blocks_, bytes_
  std::map<uint64_t, Extent> extents_;              // origin start -> extent, non-overlapping
  std::map<uint64_t, uint64_t> zeros_;              // origin start -> end, merged
  std::vector<std::unique_ptr<uint8_t[]>> blocks_;  // owners of the extents' bytes
  uint64_t bytes_ = 0;

  std::mutex listeners_mu_;
  std::vector<std::weak_ptr<SourceListener>> listeners_;
};

}  // namespace lazyrestore
