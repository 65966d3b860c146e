// PageSource (see page_service_source.h). No syscalls: memory only.
#include "page_service_source.h"

#include <algorithm>
#include <cstring>

namespace lazyrestore {

namespace {
std::atomic<uint32_t> next_source_id{1};
}  // namespace

PageSource::PageSource() : id_(next_source_id.fetch_add(1)) {}

void PageSource::Provide(uint64_t origin, const uint8_t* data, uint64_t len) {
  if (len == 0) return;
  // The copy is made before taking the lock so fault threads never wait for
  // a large memcpy.
  std::unique_ptr<uint8_t[]> block(new uint8_t[len]);
  memcpy(block.get(), data, len);
  {
    std::unique_lock lock(mu_);
    uint64_t added = InsertGaps(origin, len, block.get());
    if (added > 0) blocks_.push_back(std::move(block));
    bytes_ += added;
  }
  Notify(origin, len);
}

// Inserts extents for the parts of [origin, origin+len) no extent covers yet,
// pointing into `block`. Returns the bytes inserted. Caller holds mu_.
uint64_t PageSource::InsertGaps(uint64_t origin, uint64_t len, const uint8_t* block) {
  const uint64_t end = origin + len;
  uint64_t cur = origin;
  uint64_t added = 0;
  auto it = extents_.upper_bound(cur);
  if (it != extents_.begin()) cur = std::max(cur, std::prev(it)->second.end);
  while (cur < end) {
    it = extents_.lower_bound(cur);
    uint64_t gap_end = it == extents_.end() ? end : std::min(end, it->first);
    if (gap_end > cur) {
      extents_.emplace_hint(it, cur, Extent{gap_end, block + (cur - origin)});
      added += gap_end - cur;
    }
    if (it == extents_.end() || it->first >= end) break;
    cur = it->second.end;
  }
  return added;
}

void PageSource::MarkZero(uint64_t origin, uint64_t len) {
  if (len == 0) return;
  uint64_t start = origin;
  uint64_t end = origin + len;
  {
    std::unique_lock lock(mu_);
    // Merge with every interval that overlaps or touches [start, end).
    auto it = zeros_.upper_bound(start);
    if (it != zeros_.begin() && std::prev(it)->second >= start) --it;
    while (it != zeros_.end() && it->first <= end) {
      start = std::min(start, it->first);
      end = std::max(end, it->second);
      it = zeros_.erase(it);
    }
    zeros_.emplace(start, end);
  }
  Notify(origin, len);
}

uint64_t PageSource::Bytes() const {
  std::shared_lock lock(mu_);
  return bytes_;
}

PageSource::Lookup PageSource::Find(uint64_t origin) const {
  std::shared_lock lock(mu_);
  Lookup out;
  auto it = extents_.upper_bound(origin);
  if (it != extents_.begin()) {
    auto prev = std::prev(it);
    if (origin < prev->second.end) {
      out.kind = Kind::kData;
      out.data = prev->second.data + (origin - prev->first);
      out.end = prev->second.end;
      return out;
    }
  }
  uint64_t next = it == extents_.end() ? UINT64_MAX : it->first;
  auto zit = zeros_.upper_bound(origin);
  if (zit != zeros_.begin()) {
    auto prev = std::prev(zit);
    if (origin < prev->second) {
      out.kind = Kind::kZero;
      out.end = prev->second;
      // Data wins over zero where both were declared: stop the zero piece
      // at the next extent.
      out.end = std::min(out.end, next);
      return out;
    }
  }
  out.next = std::min(next, zit == zeros_.end() ? UINT64_MAX : zit->first);
  return out;
}

void PageSource::AddListener(const std::weak_ptr<SourceListener>& listener) {
  std::lock_guard lock(listeners_mu_);
  // Drop listeners that are gone while we are here, so the list stays short.
  std::erase_if(listeners_, [](const auto& w) { return w.expired(); });
  for (const auto& w : listeners_) {
    if (!w.owner_before(listener) && !listener.owner_before(w)) return;
  }
  listeners_.push_back(listener);
}

void PageSource::Notify(uint64_t origin, uint64_t len) {
  std::vector<std::shared_ptr<SourceListener>> live;
  {
    std::lock_guard lock(listeners_mu_);
    for (const auto& w : listeners_) {
      if (auto l = w.lock()) live.push_back(std::move(l));
    }
  }
  // Called without our locks so a listener may take its own.
  for (const auto& l : live) l->OnSourceChanged(this, origin, len);
}

}  // namespace lazyrestore
