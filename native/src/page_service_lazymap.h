// LazyMap: which pages of one task's address space still need their image
// data, as sorted ranges with one bit per page (a 1 GiB range costs 32 KiB,
// never a heap node per page). Pure data structure, no syscalls; it follows
// the address-space changes that userfaultfd(2) reports (UFFD_EVENT_REMAP,
// UFFD_EVENT_REMOVE, UFFD_EVENT_UNMAP). Owned and used by one service thread.
//
// Private ranges (anonymous memory) carry their own bits: the page is this
// task's alone. Shared ranges (a mapping of a shmem object: MAP_SHARED|
// MAP_ANONYMOUS, memfd) carry no bits of their own; they point into the
// object's SharedObject, whose bits say which pages of the object are still
// absent from its page cache. The kernel raises a missing fault on shmem only
// while the page is absent from the page cache, and UFFDIO_COPY through any
// mapping installs it there for every mapping (userfaultfd(2)), so a page
// filled through one task is filled for all: one set of bits per object.
//
// Bits are always per 4 KiB page. A range of hugetlb memory has a larger
// `unit` (its huge page size): the kernel faults, copies and removes it only
// in whole huge pages (ioctl_userfaultfd(2): UFFDIO_COPY on hugetlbfs must be
// huge-page aligned and sized), so its bits change a unit at a time. Such a
// range stays in the map when it has no lazy page left, so that a fault after
// a REMOVE still finds out it must be answered with a whole zero huge page.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

namespace lazyrestore {

class PageSource;
struct SharedObject;

struct LazyRange {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t origin = 0;  // image address of `start` (shared: offset into the object)
  uint64_t lazy = 0;    // set bits (private ranges only)
  std::vector<uint64_t> bits;
  std::shared_ptr<SharedObject> shared;  // set for a mapping of a shared object
  uint64_t unit = 0;                     // bytes per kernel page: 4096, or the huge page size

  uint64_t Pages() const;
  bool Test(uint64_t i) const;
  // First set bit at or after i, or Pages() when none.
  uint64_t NextSet(uint64_t i) const;
  // Set bits in [i, j).
  uint64_t CountSet(uint64_t i, uint64_t j) const;
  // Clears bits [i, j); returns how many were set.
  uint64_t ClearBits(uint64_t i, uint64_t j);
  // A new range for pages [i, j) of this one.
  LazyRange Slice(uint64_t i, uint64_t j) const;
};

// The lazy state of one shared object, by page offset into the object. Made
// by JS (one per object and restore), referenced by the shared ranges of
// every task that maps it, forked children included; service thread only.
struct SharedObject {
  SharedObject(uint32_t id_, std::shared_ptr<PageSource> source_, uint64_t size);
  uint32_t id;
  std::shared_ptr<PageSource> source;  // keyed by object offset
  LazyRange pages;                     // start 0, end = size, origin 0
};

class LazyMap {
 public:
  // A lazy page found by NextLazy, with the range it lies in.
  struct Hit {
    uint64_t page;
    uint64_t origin;
    uint64_t range_start;
    uint64_t range_end;
    uint64_t range_origin;
    const SharedObject* shared;  // null for a private range
  };

  // Lazy pages: the private ones plus those of the shared objects within the
  // shared ranges (a page of an object mapped twice counts twice).
  uint64_t lazy() const { return lazy_ + SharedLazy(); }
  uint64_t private_lazy() const { return lazy_; }
  uint64_t SharedLazy() const;
  bool HasShared() const { return shared_ranges_ > 0; }
  bool UsesSource(const PageSource* source) const;
  bool empty() const { return ranges_.empty(); }

  // Declares [start, start+len) lazy with data at origin; replaces whatever
  // state overlapped it. With `shared`, the range maps that object from
  // offset `origin` and its lazy state is the object's.
  void Add(uint64_t start, uint64_t len, uint64_t origin,
           std::shared_ptr<SharedObject> shared = nullptr, uint64_t unit = 0);
  // The kernel page size of the range holding `page`: 4096 unless a hugetlb
  // range was declared there.
  uint64_t UnitAt(uint64_t page) const;
  // Whether `page` still needs image data; sets *origin when it does, and
  // *shared to the object of a shared range (null for a private one).
  bool IsLazy(uint64_t page, uint64_t* origin, const SharedObject** shared = nullptr) const;
  // Marks `n` pages from `page` (all within one range) delivered; returns
  // how many of them were lazy.
  uint64_t Done(uint64_t page, uint64_t n);
  // Number of consecutive lazy pages from `page`, at most `max`, never past
  // the end of its range.
  uint64_t RunLength(uint64_t page, uint64_t max) const;
  // The first lazy page at or after `from`.
  bool NextLazy(uint64_t from, Hit* hit) const;

  // UFFD_EVENT_REMOVE on private ranges: their pages in [a, b) read as zero
  // from now on. Shared ranges are left alone (see Punch).
  uint64_t Remove(uint64_t a, uint64_t b);
  // Lazy pages of shared objects within the shared ranges in [a, b).
  uint64_t SharedLazyIn(uint64_t a, uint64_t b) const;
  // Whether [a, b) covers only part of a huge page of a shared hugetlb range
  // whose pages are still lazy (a partial punch the lazy state cannot hold).
  bool PartialLazyUnit(uint64_t a, uint64_t b) const;
  // A hole punched (MADV_REMOVE) through the shared ranges in [a, b): those
  // object pages read as zero from now on, for every task mapping them.
  uint64_t Punch(uint64_t a, uint64_t b);
  // UFFD_EVENT_UNMAP: [a, b) is gone; forget it entirely.
  uint64_t Drop(uint64_t a, uint64_t b);
  // UFFD_EVENT_REMAP: the pages of [from, from+len) now live at to; their
  // origins are unchanged.
  void Move(uint64_t from, uint64_t to, uint64_t len);

 private:
  void SplitAt(uint64_t addr);
  std::vector<LazyRange> Extract(uint64_t a, uint64_t b);
  void Insert(LazyRange&& r);

  std::map<uint64_t, LazyRange> ranges_;  // start -> range, non-overlapping
  uint64_t lazy_ = 0;                     // private lazy pages
  uint64_t shared_ranges_ = 0;
};

}  // namespace lazyrestore
