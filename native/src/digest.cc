// Content hashes of image-store chunks, computed on libuv's thread pool so the
// JS thread can go on reading or feeding while a batch is hashed
// (daemon/store/hashing.ts). Uses the OpenSSL that Node itself links and
// exports (EVP_DigestInit_ex(3), EVP_sha256(3)); no syscalls.
#include <openssl/evp.h>

#include <memory>
#include <string>
#include <vector>

#include "errors.h"
#include "facilities.h"

namespace lazyrestore {
namespace {

constexpr size_t kDigestBytes = 32;

// sha256(u16 LE prefix || data) of each item; the buffers stay referenced (so
// alive and unmoved) until the work is done.
class ChunkHashWorker : public Napi::AsyncWorker {
 public:
  ChunkHashWorker(Napi::Env env, Napi::Array buffers, std::vector<uint16_t> prefixes)
      : Napi::AsyncWorker(env, "chunkHashes"),
        deferred_(Napi::Promise::Deferred::New(env)),
        buffers_(Napi::Persistent(buffers)),
        prefixes_(std::move(prefixes)),
        out_(prefixes_.size() * kDigestBytes) {
    for (uint32_t i = 0; i < buffers.Length(); i++) {
      Napi::Value v = buffers.Get(i);
      if (!v.IsBuffer())
        throw Napi::TypeError::New(env, "chunkHashes: expected an array of Buffers");
      auto b = v.As<Napi::Buffer<uint8_t>>();
      items_.push_back({b.Data(), b.Length()});
    }
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!ctx) return SetError("EVP_MD_CTX_new failed");
    for (size_t i = 0; i < items_.size(); i++) {
      const uint8_t head[2] = {static_cast<uint8_t>(prefixes_[i] & 0xff),
                               static_cast<uint8_t>(prefixes_[i] >> 8)};
      unsigned int len = 0;
      if (EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
          EVP_DigestUpdate(ctx.get(), head, sizeof head) != 1 ||
          EVP_DigestUpdate(ctx.get(), items_[i].data, items_[i].len) != 1 ||
          EVP_DigestFinal_ex(ctx.get(), out_.data() + i * kDigestBytes, &len) != 1 ||
          len != kDigestBytes) {
        return SetError("sha256 failed");
      }
    }
  }

  void OnOK() override {
    deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(Env(), out_.data(), out_.size()));
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  struct Item {
    const uint8_t* data;
    size_t len;
  };
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Array> buffers_;
  std::vector<uint16_t> prefixes_;
  std::vector<Item> items_;
  std::vector<uint8_t> out_;
};

Napi::Value ChunkHashes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "chunkHashes: buffers must be an array");
  if (!info[1].IsArray()) throw Napi::TypeError::New(env, "chunkHashes: prefixes must be an array");
  auto buffers = info[0].As<Napi::Array>();
  auto list = info[1].As<Napi::Array>();
  if (list.Length() != buffers.Length()) {
    throw Napi::RangeError::New(env, "chunkHashes: one prefix per buffer");
  }
  std::vector<uint16_t> prefixes(list.Length());
  for (uint32_t i = 0; i < list.Length(); i++) {
    uint64_t p = ToU64(list.Get(i), "prefix");
    if (p > 0xffff) throw Napi::RangeError::New(env, "chunkHashes: a prefix is a u16");
    prefixes[i] = static_cast<uint16_t>(p);
  }
  auto* w = new ChunkHashWorker(env, buffers, std::move(prefixes));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitDigest(Napi::Env env, Napi::Object exports) {
  exports.Set("chunkHashes", Napi::Function::New(env, ChunkHashes, "chunkHashes"));
}

}  // namespace lazyrestore
