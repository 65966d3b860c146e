// LazyMap (see page_service_lazymap.h). No syscalls: memory only.
#include "page_service_lazymap.h"

#include <algorithm>
#include <bit>
#include <iterator>

#include "page_service_source.h"

namespace lazyrestore {

namespace {

uint64_t LowMask(uint64_t n) { return n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }

uint64_t AlignDown(uint64_t a) { return a & ~(kPageSize - 1); }
uint64_t AlignUp(uint64_t a) { return (a + kPageSize - 1) & ~(kPageSize - 1); }

}  // namespace

uint64_t LazyRange::Pages() const { return (end - start) / kPageSize; }

bool LazyRange::Test(uint64_t i) const { return (bits[i >> 6] >> (i & 63)) & 1; }

uint64_t LazyRange::NextSet(uint64_t i) const {
  const uint64_t n = Pages();
  if (i >= n) return n;
  uint64_t w = i >> 6;
  uint64_t word = bits[w] & (~uint64_t{0} << (i & 63));
  while (word == 0) {
    if (++w >= bits.size()) return n;
    word = bits[w];
  }
  return std::min(n, w * 64 + std::countr_zero(word));
}

uint64_t LazyRange::CountSet(uint64_t i, uint64_t j) const {
  uint64_t n = 0;
  while (i < j) {
    uint64_t w = i >> 6;
    uint64_t lo = i & 63;
    uint64_t hi = std::min<uint64_t>(64, lo + (j - i));
    n += std::popcount(bits[w] & LowMask(hi) & ~LowMask(lo));
    i += hi - lo;
  }
  return n;
}

uint64_t LazyRange::ClearBits(uint64_t i, uint64_t j) {
  uint64_t cleared = 0;
  while (i < j) {
    uint64_t w = i >> 6;
    uint64_t lo = i & 63;
    uint64_t hi = std::min<uint64_t>(64, lo + (j - i));
    uint64_t mask = LowMask(hi) & ~LowMask(lo);
    cleared += std::popcount(bits[w] & mask);
    bits[w] &= ~mask;
    i += hi - lo;
  }
  lazy -= cleared;
  return cleared;
}

LazyRange LazyRange::Slice(uint64_t i, uint64_t j) const {
  LazyRange out;
  out.start = start + i * kPageSize;
  out.end = start + j * kPageSize;
  out.origin = origin + i * kPageSize;
  out.shared = shared;
  out.unit = unit;
  if (shared) return out;  // the object holds the bits
  const uint64_t n = j - i;
  out.bits.assign((n + 63) / 64, 0);
  const uint64_t q = i >> 6;
  const uint64_t s = i & 63;
  for (uint64_t w = 0; w < out.bits.size(); w++) {
    uint64_t v = bits[q + w] >> s;
    if (s != 0 && q + w + 1 < bits.size()) v |= bits[q + w + 1] << (64 - s);
    out.bits[w] = v;
  }
  if (n % 64 != 0) out.bits.back() &= LowMask(n % 64);
  for (uint64_t v : out.bits) out.lazy += std::popcount(v);
  return out;
}

SharedObject::SharedObject(uint32_t id_, std::shared_ptr<PageSource> source_, uint64_t size)
    : id(id_), source(std::move(source_)) {
  // Every page of the object starts absent: the restore created it empty.
  pages.end = (size + kPageSize - 1) & ~(kPageSize - 1);
  const uint64_t n = pages.Pages();
  pages.bits.assign((n + 63) / 64, ~uint64_t{0});
  if (n % 64 != 0) pages.bits.back() = LowMask(n % 64);
  pages.lazy = n;
}

namespace {

// The object pages [i, j) a shared range covers, clipped to the object.
struct ObjectSpan {
  uint64_t i, j;
};
ObjectSpan SpanOf(const LazyRange& r, uint64_t a, uint64_t b) {
  const uint64_t size = r.shared->pages.Pages();
  uint64_t i = (r.origin + (a - r.start)) / kPageSize;
  uint64_t j = (r.origin + (b - r.start)) / kPageSize;
  return {std::min(i, size), std::min(j, size)};
}

}  // namespace

uint64_t LazyMap::SharedLazy() const {
  if (shared_ranges_ == 0) return 0;
  uint64_t n = 0;
  for (const auto& [start, r] : ranges_) {
    if (!r.shared) continue;
    ObjectSpan s = SpanOf(r, r.start, r.end);
    n += r.shared->pages.CountSet(s.i, s.j);
  }
  return n;
}

bool LazyMap::UsesSource(const PageSource* source) const {
  if (shared_ranges_ == 0) return false;
  for (const auto& [start, r] : ranges_) {
    if (r.shared && r.shared->source.get() == source) return true;
  }
  return false;
}

void LazyMap::Add(uint64_t start, uint64_t len, uint64_t origin,
                  std::shared_ptr<SharedObject> shared, uint64_t unit) {
  Extract(start, start + len);
  LazyRange r;
  r.start = start;
  r.end = start + len;
  r.origin = origin;
  r.unit = unit > kPageSize ? unit : kPageSize;
  if (shared) {
    r.shared = std::move(shared);
    Insert(std::move(r));
    return;
  }
  const uint64_t n = r.Pages();
  r.bits.assign((n + 63) / 64, ~uint64_t{0});
  if (n % 64 != 0) r.bits.back() = LowMask(n % 64);
  r.lazy = n;
  Insert(std::move(r));
}

uint64_t LazyMap::UnitAt(uint64_t page) const {
  auto it = ranges_.upper_bound(page);
  if (it == ranges_.begin()) return kPageSize;
  const LazyRange& r = std::prev(it)->second;
  return page < r.end && r.unit > kPageSize ? r.unit : kPageSize;
}

void LazyMap::Insert(LazyRange&& r) {
  if (r.shared) {
    shared_ranges_++;
  } else if (r.lazy == 0 && r.unit <= kPageSize) {
    return;
  }
  lazy_ += r.lazy;
  uint64_t key = r.start;
  ranges_.emplace(key, std::move(r));
}

bool LazyMap::IsLazy(uint64_t page, uint64_t* origin, const SharedObject** shared) const {
  auto it = ranges_.upper_bound(page);
  if (it == ranges_.begin()) return false;
  const LazyRange& r = std::prev(it)->second;
  if (page >= r.end) return false;
  if (r.shared) {
    uint64_t k = (r.origin + (page - r.start)) / kPageSize;
    if (k >= r.shared->pages.Pages() || !r.shared->pages.Test(k)) return false;
  } else if (!r.Test((page - r.start) / kPageSize)) {
    return false;
  }
  *origin = r.origin + (page - r.start);
  if (shared != nullptr) *shared = r.shared.get();
  return true;
}

uint64_t LazyMap::Done(uint64_t page, uint64_t n) {
  auto it = ranges_.upper_bound(page);
  if (it == ranges_.begin()) return 0;
  --it;
  LazyRange& r = it->second;
  if (page >= r.end) return 0;
  if (r.shared) {
    ObjectSpan s = SpanOf(r, page, std::min(r.end, page + n * kPageSize));
    return r.shared->pages.ClearBits(s.i, s.j);
  }
  uint64_t i = (page - r.start) / kPageSize;
  uint64_t cleared = r.ClearBits(i, std::min(r.Pages(), i + n));
  lazy_ -= cleared;
  if (r.lazy == 0 && r.unit <= kPageSize) ranges_.erase(it);
  return cleared;
}

uint64_t LazyMap::RunLength(uint64_t page, uint64_t max) const {
  auto it = ranges_.upper_bound(page);
  if (it == ranges_.begin()) return 0;
  const LazyRange& r = std::prev(it)->second;
  if (page >= r.end) return 0;
  uint64_t i = (page - r.start) / kPageSize;
  uint64_t limit = std::min(r.Pages(), i + max);
  const std::vector<uint64_t>* bits = &r.bits;
  if (r.shared) {
    // The same scan over the object's bits, from the object page of `page`.
    ObjectSpan s = SpanOf(r, page, r.start + limit * kPageSize);
    bits = &r.shared->pages.bits;
    limit = s.j;
    i = s.i;
  }
  uint64_t k = i;
  while (k < limit) {
    uint64_t word = ~(*bits)[k >> 6] & (~uint64_t{0} << (k & 63));  // clear bits at or after k
    if (word != 0) {
      uint64_t first_clear = (k & ~uint64_t{63}) + std::countr_zero(word);
      return std::min(first_clear, limit) - i;
    }
    k = (k | 63) + 1;
  }
  return limit - i;
}

bool LazyMap::NextLazy(uint64_t from, Hit* hit) const {
  auto it = ranges_.upper_bound(from);
  if (it != ranges_.begin() && std::prev(it)->second.end > from) --it;
  for (; it != ranges_.end(); ++it) {
    const LazyRange& r = it->second;
    uint64_t i = from > r.start ? (from - r.start) / kPageSize : 0;
    uint64_t k;
    if (r.shared) {
      ObjectSpan s = SpanOf(r, r.start + std::min(i, r.Pages()) * kPageSize, r.end);
      uint64_t o = s.i < s.j ? r.shared->pages.NextSet(s.i) : s.j;
      k = o < s.j ? i + (o - s.i) : r.Pages();
    } else {
      k = r.NextSet(i);
    }
    if (k < r.Pages()) {
      *hit = Hit{r.start + k * kPageSize, r.origin + k * kPageSize, r.start, r.end, r.origin,
                 r.shared.get()};
      return true;
    }
  }
  return false;
}

uint64_t LazyMap::Remove(uint64_t a, uint64_t b) {
  a = AlignDown(a);
  b = AlignUp(b);
  uint64_t cleared = 0;
  auto it = ranges_.upper_bound(a);
  if (it != ranges_.begin() && std::prev(it)->second.end > a) --it;
  while (it != ranges_.end() && it->first < b) {
    LazyRange& r = it->second;
    if (r.shared) {
      ++it;
      continue;
    }
    uint64_t i = (std::max(a, r.start) - r.start) / kPageSize;
    uint64_t j = (std::min(b, r.end) - r.start) / kPageSize;
    cleared += r.ClearBits(i, j);
    it = r.lazy == 0 && r.unit <= kPageSize ? ranges_.erase(it) : std::next(it);
  }
  lazy_ -= cleared;
  return cleared;
}

uint64_t LazyMap::SharedLazyIn(uint64_t a, uint64_t b) const {
  a = AlignDown(a);
  b = AlignUp(b);
  uint64_t n = 0;
  auto it = ranges_.upper_bound(a);
  if (it != ranges_.begin() && std::prev(it)->second.end > a) --it;
  for (; it != ranges_.end() && it->first < b; ++it) {
    const LazyRange& r = it->second;
    if (!r.shared) continue;
    ObjectSpan s = SpanOf(r, std::max(a, r.start), std::min(b, r.end));
    n += r.shared->pages.CountSet(s.i, s.j);
  }
  return n;
}

bool LazyMap::PartialLazyUnit(uint64_t a, uint64_t b) const {
  a = AlignDown(a);
  b = AlignUp(b);
  auto it = ranges_.upper_bound(a);
  if (it != ranges_.begin() && std::prev(it)->second.end > a) --it;
  for (; it != ranges_.end() && it->first < b; ++it) {
    const LazyRange& r = it->second;
    if (!r.shared || r.unit <= kPageSize) continue;
    // The huge pages holding each end of [a, b) within the range, when the
    // end is not on a huge page boundary.
    for (uint64_t edge : {std::max(a, r.start), std::min(b, r.end)}) {
      const uint64_t off = edge - r.start;
      if (off % r.unit == 0) continue;
      const uint64_t lo = r.start + off / r.unit * r.unit;
      ObjectSpan s = SpanOf(r, lo, std::min(r.end, lo + r.unit));
      if (r.shared->pages.CountSet(s.i, s.j) > 0) return true;
    }
  }
  return false;
}

uint64_t LazyMap::Punch(uint64_t a, uint64_t b) {
  a = AlignDown(a);
  b = AlignUp(b);
  uint64_t cleared = 0;
  auto it = ranges_.upper_bound(a);
  if (it != ranges_.begin() && std::prev(it)->second.end > a) --it;
  for (; it != ranges_.end() && it->first < b; ++it) {
    LazyRange& r = it->second;
    if (!r.shared) continue;
    ObjectSpan s = SpanOf(r, std::max(a, r.start), std::min(b, r.end));
    cleared += r.shared->pages.ClearBits(s.i, s.j);
  }
  return cleared;
}

uint64_t LazyMap::Drop(uint64_t a, uint64_t b) {
  uint64_t dropped = 0;
  for (const LazyRange& r : Extract(AlignDown(a), AlignUp(b))) dropped += r.lazy;
  return dropped;
}

void LazyMap::Move(uint64_t from, uint64_t to, uint64_t len) {
  from = AlignDown(from);
  to = AlignDown(to);
  len = AlignUp(len);
  std::vector<LazyRange> moved = Extract(from, from + len);
  // Whatever was at the destination was unmapped by the kernel first.
  Extract(to, to + len);
  for (LazyRange& r : moved) {
    r.start = r.start - from + to;
    r.end = r.end - from + to;
    Insert(std::move(r));
  }
}

void LazyMap::SplitAt(uint64_t addr) {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return;
  LazyRange& left = std::prev(it)->second;
  if (addr <= left.start || addr >= left.end) return;
  uint64_t i = (addr - left.start) / kPageSize;
  LazyRange right = left.Slice(i, left.Pages());
  left.end = addr;
  if (left.shared) {
    shared_ranges_++;  // one shared range became two
  } else {
    left.bits.resize((i + 63) / 64);
    if (i % 64 != 0) left.bits.back() &= LowMask(i % 64);
    left.lazy -= right.lazy;
  }
  uint64_t key = right.start;
  ranges_.emplace_hint(it, key, std::move(right));
}

std::vector<LazyRange> LazyMap::Extract(uint64_t a, uint64_t b) {
  std::vector<LazyRange> out;
  if (a >= b) return out;
  SplitAt(a);
  SplitAt(b);
  auto it = ranges_.lower_bound(a);
  while (it != ranges_.end() && it->first < b) {
    lazy_ -= it->second.lazy;
    if (it->second.shared) shared_ranges_--;
    out.push_back(std::move(it->second));
    it = ranges_.erase(it);
  }
  return out;
}

}  // namespace lazyrestore
