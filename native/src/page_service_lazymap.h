// LazyMap: which pages of one task's address space still need their image
// data, as sorted ranges with one bit per page (a 1 GiB range costs 32 KiB,
// never a heap node per page). Pure data structure, no syscalls; it follows
// the address-space changes that userfaultfd(2) reports (UFFD_EVENT_REMAP,
// UFFD_EVENT_REMOVE, UFFD_EVENT_UNMAP). Owned and used by one service thread.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

namespace lazyrestore {

struct LazyRange {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t origin = 0;  // image address of `start`
  uint64_t lazy = 0;    // set bits
  std::vector<uint64_t> bits;

  uint64_t Pages() const;
  bool Test(uint64_t i) const;
  // First set bit at or after i, or Pages() when none.
  uint64_t NextSet(uint64_t i) const;
  // Clears bits [i, j); returns how many were set.
  uint64_t ClearBits(uint64_t i, uint64_t j);
  // A new range for pages [i, j) of this one.
  LazyRange Slice(uint64_t i, uint64_t j) const;
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
  };

  uint64_t lazy() const { return lazy_; }
  bool empty() const { return ranges_.empty(); }

  // Declares [start, start+len) lazy with data at origin; replaces whatever
  // state overlapped it.
  void Add(uint64_t start, uint64_t len, uint64_t origin);
  // Whether `page` still needs image data; sets *origin when it does.
  bool IsLazy(uint64_t page, uint64_t* origin) const;
  // Marks `n` pages from `page` (all within one range) delivered; returns
  // how many of them were lazy.
  uint64_t Done(uint64_t page, uint64_t n);
  // Number of consecutive lazy pages from `page`, at most `max`, never past
  // the end of its range.
  uint64_t RunLength(uint64_t page, uint64_t max) const;
  // The first lazy page at or after `from`.
  bool NextLazy(uint64_t from, Hit* hit) const;

  // UFFD_EVENT_REMOVE: pages in [a, b) read as zero from now on.
  uint64_t Remove(uint64_t a, uint64_t b);
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
  uint64_t lazy_ = 0;
};

}  // namespace lazyrestore
