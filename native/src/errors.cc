// See errno(3), strerror(3), strerrorname_np(3).
#include "errors.h"

#include <cmath>
#include <cstring>

namespace lazyrestore {

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name ? name : "E" + std::to_string(err);
}

Napi::Error SystemError(Napi::Env env, int err, const char* syscall, const std::string& detail) {
  std::string code = ErrnoName(err);
  std::string message = code + ": " + strerror(err) + ", " + syscall;
  if (!detail.empty()) message += " " + detail;
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

void ThrowSystemError(Napi::Env env, int err, const char* syscall, const std::string& detail) {
  throw SystemError(env, err, syscall, detail);
}

uint64_t ToU64(const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) {
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a number");
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d) {
    throw Napi::RangeError::New(v.Env(),
                                std::string(what) + " must be a non-negative safe integer");
  }
  return static_cast<uint64_t>(d);
}

int ToInt(const Napi::Value& v, const char* what) {
  uint64_t n = ToU64(v, what);
  if (n > INT32_MAX) throw Napi::RangeError::New(v.Env(), std::string(what) + " is out of range");
  return static_cast<int>(n);
}

}  // namespace lazyrestore
