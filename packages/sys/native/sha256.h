// SHA-256 for the layer import pass (applier.h): the diff id of a layer is hashed on the
// pool thread as the applier reads its bytes, instead of in JS on the event loop.
//
// The addon is Node-API only (one prebuilt per platform for every Node major), so it
// does not link OpenSSL: Node's own libcrypto symbols are looked up at run time
// (dlsym(RTLD_DEFAULT)), which gives the CPU's SHA extensions where Node has them. A Node
// built without exported OpenSSL symbols gets the portable implementation below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace cairn {

class Sha256 {
 public:
  // portable: use the built-in implementation even when Node's libcrypto is there (tests).
  explicit Sha256(bool portable = false);
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const uint8_t* p, size_t n);
  // The digest as 64 lowercase hex digits; the object is spent afterwards.
  std::string HexDigest();
  // True when this object hashes through Node's libcrypto.
  bool native() const { return ctx_ != nullptr; }
  // True when libcrypto's EVP calls were found (and CAIRN_SHA256_PORTABLE is not 1).
  static bool LibcryptoAvailable();

 private:
  void Block(const uint8_t* p);
  void* ctx_ = nullptr;  // EVP_MD_CTX*, or null for the portable code
  uint32_t h_[8];
  uint64_t length_ = 0;
  uint8_t buf_[64];
  size_t fill_ = 0;
};

}  // namespace cairn
